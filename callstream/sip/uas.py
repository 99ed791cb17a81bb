"""The callee's half of the SIP user agent (UAS, RFC 3261 §8.2 and §13.3).

:class:`UserAgentServer` adds incoming calls to
:class:`~callstream.sip.in_dialog.InDialogAgent`: admission of a new INVITE
(rate limit, cap on unanswered calls per source, digest challenge, §22.4),
the 100/18x/2xx/3xx-6xx answers, a CANCEL from the caller (§9.2) and the
answer timeout. What follows the answer (ACK, BYE, re-INVITE) is
:mod:`~callstream.sip.in_dialog`'s.
"""

from __future__ import annotations

from collections.abc import Iterable

from .admission import RefusalReason, source_key
from .dialog import Dialog, DialogState
from .digest import AuthOutcome
from .events import Addr, CallCancelled, CancelReason, IncomingCall, RequestRefused
from .exceptions import InvalidCallState, SipParseError
from .headers import NameAddr, Via, parse_cseq
from .in_dialog import InDialogAgent
from .message import SipRequest
from .records import CallRecord, DialogPhase, Purpose, Retransmit, Role, TxRecord
from .sdp import SdpSession
from .transaction import ServerKey, State
from .useragent import DRAIN_RETRY_AFTER, is_allowed, sdp_bytes

__all__ = ["UserAgentServer"]


class UserAgentServer(InDialogAgent):
    """Incoming calls: admit, ring, answer or refuse them (see the module docstring)."""

    # ---------------------------------------------------------- commands

    def ring(self, handle: str, now: float, *, headers: Iterable[tuple[str, str]] = ()) -> None:
        """Send 180 Ringing for an incoming call."""
        self._provisional(handle, 180, None, now, headers)

    def progress(
        self,
        handle: str,
        sdp: SdpSession | bytes,
        now: float,
        *,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Send 183 Session Progress with an SDP answer (early media)."""
        self._provisional(handle, 183, sdp_bytes(sdp), now, headers)

    def answer(
        self,
        handle: str,
        sdp: SdpSession | bytes,
        now: float,
        *,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Answer an incoming call with 200 OK and our SDP.

        The 200 is retransmitted until the ACK arrives (RFC 3261 §13.3.1.4);
        without an ACK after 64*T1 the call ends with
        ``DialogEnded(reason=ACK_TIMEOUT)`` and a BYE.

        Raises:
            InvalidCallState: Not an incoming call waiting for an answer.
        """
        call = self._uas_call(handle, "answer")
        record = self._invite_record(call)
        if record is None:
            raise InvalidCallState(f"can't answer call {handle}: its INVITE transaction is gone")
        body = sdp_bytes(sdp)
        response = self._response(
            record, 200, None, to_tag=call.local_tag, headers=headers, body=body, contact=True
        )
        dialog = call.dialog
        if dialog is None:
            raise InvalidCallState(f"call {handle} has no dialog")
        dialog.state = DialogState.CONFIRMED
        self._set_dialog(call, dialog)
        self._run_tx(record, record.tx.send_response(response, now), now)
        cseq = parse_cseq(record.tx.request.headers.get("CSeq") or "").seq
        call.ok_retransmit = Retransmit(
            response.serialize(), record.dest, record.transport, cseq, now, self.timers
        )
        call.phase = DialogPhase.ANSWERED
        call.setup_deadline = None
        self._unpark(call)
        self._schedule_call(call)

    def reject(
        self,
        handle: str,
        status: int,
        reason: str | None,
        now: float,
        *,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Refuse an incoming call with ``status`` (300-699).

        Raises:
            InvalidCallState: Not an incoming call waiting for an answer.
            ValueError: ``status`` is not a final non-2xx status.
        """
        if not 300 <= status <= 699:
            raise ValueError(f"reject needs a 300-699 status, not {status}")
        call = self._uas_call(handle, "reject")
        record = self._invite_record(call)
        if record is not None:
            response = self._response(
                record, status, reason, to_tag=call.local_tag, headers=headers
            )
            self._run_tx(record, record.tx.send_response(response, now), now)
        self._end(call, now)

    # ---------------------------------------------------------- inside

    def _uas_call(self, handle: str, verb: str) -> CallRecord:
        call = self._call(handle)
        if call.role is not Role.UAS or call.phase not in (DialogPhase.INCOMING, DialogPhase.EARLY):
            raise InvalidCallState(f"can't {verb} call {handle} in state {call.phase.value}")
        return call

    def _provisional(
        self,
        handle: str,
        status: int,
        body: bytes | None,
        now: float,
        headers: Iterable[tuple[str, str]],
    ) -> None:
        call = self._uas_call(handle, "send a provisional response on")
        record = self._invite_record(call)
        if record is None:
            raise InvalidCallState(f"call {handle}: its INVITE transaction is gone")
        response = self._response(
            record,
            status,
            None,
            to_tag=call.local_tag,
            headers=headers,
            body=body or b"",
            contact=True,
        )
        if call.dialog is not None:
            # RFC 3261 §12.1.1: a 101-199 with a To tag makes an early dialog.
            self._set_dialog(call, call.dialog)
        self._run_tx(record, record.tx.send_response(response, now), now)
        call.phase = DialogPhase.EARLY

    def _admit_invite(
        self, request: SipRequest, top: Via, addr: Addr, transport: str, now: float
    ) -> bool:
        """Admission for a new INVITE from an allowed source (see :mod:`.admission`):
        the rate limit, the cap on unanswered calls per source, then digest
        authentication; every one while draining. Refusals are stateless, like the
        allow-list's."""
        if self.draining:
            self._emit(RequestRefused(request.method, addr, RefusalReason.DRAINING))
            retry = [("Retry-After", str(DRAIN_RETRY_AFTER))]
            self._reject_stateless(request, top, addr, transport, 503, headers=retry)
            return False
        source = source_key(addr[0])
        if not self._rate.admit(source, now):
            self.stats.rate_limited += 1
            self._emit(RequestRefused(request.method, addr, RefusalReason.RATE_LIMITED))
            retry = [("Retry-After", str(self.limits.retry_after))]
            self._reject_stateless(request, top, addr, transport, 503, headers=retry)
            return False
        cap = self.limits.max_parked_per_source
        if cap and self._parked.count(source) >= cap:
            self.stats.parked_limited += 1
            self._emit(RequestRefused(request.method, addr, RefusalReason.PARKED_LIMIT))
            self._reject_stateless(request, top, addr, transport, 486)
            return False
        auth = self.auth
        if auth is None:
            return True
        outcome = auth.check(
            request.headers.get_all("Authorization"),
            method=request.method,
            uri=request.uri,
            source=source,
            now=now,
            body=request.body,
        )
        if outcome is AuthOutcome.OK:
            return True
        if outcome is AuthOutcome.FAILED:
            self.stats.auth_failures += 1
            self._emit(RequestRefused(request.method, addr, RefusalReason.AUTH_FAILED))
        # RFC 3261 §22.4: "...the server MUST ... challenge the originator ... using
        # a 401 (Unauthorized) response" with a WWW-Authenticate header.
        self.stats.auth_challenges += 1
        challenge = auth.challenge(source, now, stale=outcome is AuthOutcome.STALE)
        self._reject_stateless(
            request, top, addr, transport, 401, headers=[("WWW-Authenticate", challenge)]
        )
        return False

    def _on_new_invite(
        self,
        request: SipRequest,
        record: TxRecord,
        key: ServerKey,
        from_: NameAddr,
        to: NameAddr,
        cseq: int,
        addr: Addr,
        transport: str,
        now: float,
    ) -> None:
        call_id = request.headers.get("Call-ID") or ""
        merge_key = (call_id, from_.tag or "", cseq)
        if merge_key in self._invites_in:
            # RFC 3261 §8.2.2.2: a merged request "SHOULD" get 482 (Loop Detected).
            self._reply(record, 482, now)
            return
        if self.active_calls >= self.max_calls:
            self._reply(record, 503, now, headers=[("Retry-After", "5")])
            return
        ok, offer = self._offer_of(request, record, now)
        if not ok:
            return
        local_tag = self._token(6)
        try:
            # Parse Contact and Record-Route now, so that a bad one gets 400 here
            # rather than failing a later answer().
            dialog = Dialog.as_uas(request, local_tag, state=DialogState.EARLY)
        except SipParseError as exc:
            self.stats.parse_errors += 1
            self._reply_bad(record, exc, now)
            return
        handle = self._new_handle()
        call = CallRecord(handle, Role.UAS, request, call_id, local_tag, addr, transport)
        call.dialog = dialog
        call.invite_key = key
        call.parked_source = source_key(addr[0])
        self._parked.add(call.parked_source)
        record.handle = handle
        record.purpose = Purpose.INVITE
        record.merge_key = merge_key
        self._add_call(call, now)
        self._invites_in[merge_key] = key
        self.stats.calls_in += 1
        # RFC 3261 §17.2.1: "the server transaction MUST generate a 100 (Trying)".
        trying = self._response(record, 100, None)
        self._run_tx(record, record.tx.send_response(trying, now), now)
        self._emit(
            IncomingCall(
                handle=handle,
                call_id=call_id,
                request_uri=request.uri,
                from_uri=from_.uri.serialize(),
                from_display=from_.display_name,
                to_uri=to.uri.serialize(),
                offer=offer,
                source=addr,
                transport=transport,
                headers=request.headers,
            )
        )

    def _on_cancel(
        self, request: SipRequest, key: ServerKey, top: Via, addr: Addr, transport: str, now: float
    ) -> None:
        invite_key: ServerKey = (*key[:-1], "INVITE")
        invite_record = self._server_tx.get(invite_key)
        if invite_record is None and not is_allowed(addr[0], self.allowed_networks):
            self._refuse_forbidden(request, top, addr, transport)
            return
        record = self._new_server(request, key, top, addr, transport, None)
        if invite_record is None:
            # RFC 3261 §9.2: no matching transaction "SHOULD respond ... 481".
            self._reply(record, 481, now)
            return
        call = self._calls.get(invite_record.handle or "")
        to_tag = call.local_tag if call is not None else None
        # §9.2: the CANCEL gets 200 whether or not the INVITE can still be stopped.
        self._reply(record, 200, now, to_tag=to_tag)
        if invite_record.tx.state is not State.PROCEEDING or call is None:
            return
        # "...the UAS SHOULD then respond to the INVITE with a 487 (Request Terminated)."
        response = self._response(invite_record, 487, None, to_tag=call.local_tag)
        self._run_tx(invite_record, invite_record.tx.send_response(response, now), now)
        if call.role is Role.UAS and call.phase in (DialogPhase.INCOMING, DialogPhase.EARLY):
            self._end(call, now)
            self._emit(CallCancelled(call.handle, CancelReason.CANCEL))

    def _on_answer_timeout(self, call: CallRecord, now: float) -> None:
        if call.phase not in (DialogPhase.INCOMING, DialogPhase.EARLY):
            return
        record = self._invite_record(call)
        if record is not None and record.tx.state is State.PROCEEDING:
            # 480 Temporarily Unavailable: "callee ... currently unavailable".
            self._reply(record, 480, now, to_tag=call.local_tag)
        self._end(call, now)
        self._emit(CallCancelled(call.handle, CancelReason.SETUP_TIMEOUT))
