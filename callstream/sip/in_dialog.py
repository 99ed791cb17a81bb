"""The established call, whoever placed it: requests in a dialog (RFC 3261 §12-15).

:class:`InDialogAgent` adds to :class:`~callstream.sip.useragent.UserAgentCore`
what both roles do once a dialog exists: BYE both ways (§15), re-INVITE both
ways with glare handling (§14), INFO (with DTMF), the ACK for a 2xx and its
retransmissions (§13.2.2.4, §13.3.1.4), and the outcomes of every client
transaction we start, routed by what it was for. The caller's INVITE outcome
goes on to :mod:`~callstream.sip.uac`.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable

from .dialog import Dialog
from .dtmf import DTMF_CONTENT_TYPES, parse_dtmf
from .events import (
    Addr,
    CallCancelled,
    CancelReason,
    DialogEnded,
    DtmfReceived,
    EndReason,
    ReinviteAnswered,
    ReinviteReceived,
    ReinviteRejected,
)
from .exceptions import InvalidCallState, SipParseError
from .headers import parse_cseq, parse_name_addr
from .message import SipRequest, SipResponse
from .records import TRANSPORTS, UDP, CallRecord, DialogPhase, Purpose, Retransmit, Role, TxRecord
from .sdp import SdpSession
from .transaction import State
from .useragent import (
    KNOWN_METHODS,
    UserAgentCore,
    content_type_of,
    logger,
    reason_phrase,
    sdp_bytes,
)

__all__ = ["InDialogAgent"]


class InDialogAgent(UserAgentCore):
    """Dialog commands and in-dialog requests and responses (see the module docstring)."""

    # ---------------------------------------------------------- commands

    def bye(self, handle: str, now: float, *, headers: Iterable[tuple[str, str]] = ()) -> None:
        """Hang up an answered call.

        For an incoming call whose 2xx is not yet ACKed, the BYE waits for the
        ACK (RFC 3261 §15: the callee "MUST NOT send a BYE on a confirmed
        dialog until it has received an ACK for its 2xx response"). The call
        ends with ``DialogEnded(reason=LOCAL_BYE, status=...)``.

        Raises:
            InvalidCallState: The call is not answered (use :meth:`hangup`).
        """
        call = self._call(handle)
        if call.phase is DialogPhase.ANSWERED:
            call.pending_bye = True
            return
        if call.phase is not DialogPhase.CONFIRMED:
            raise InvalidCallState(f"can't send BYE for call {handle} in state {call.phase.value}")
        self._send_bye(call, now, tuple(headers))

    def reinvite(
        self,
        handle: str,
        sdp: SdpSession | bytes,
        now: float,
        *,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Send a re-INVITE with a new offer (hold, resume, new media).

        The outcome is ``ReinviteAnswered`` or ``ReinviteRejected`` (491 on
        glare: retry later, RFC 3261 §14.1).

        Raises:
            InvalidCallState: The call is not up, or an INVITE is already pending.
        """
        call = self._call(handle)
        if call.phase is not DialogPhase.CONFIRMED or call.dialog is None:
            raise InvalidCallState(f"can't re-INVITE call {handle} in state {call.phase.value}")
        if call.reinvite_out is not None or call.reinvite_in is not None:
            raise InvalidCallState(f"can't re-INVITE call {handle}: an INVITE is pending")
        dest, transport = self._dialog_dest(call)
        request = call.dialog.create_request(
            "INVITE",
            via=self._via(transport),
            contact=self._contact(transport),
            body=sdp_bytes(sdp),
            extra_headers=self._ua_headers(headers),
        )
        call.reinvite_out = self._start_client(
            request, dest, transport, call.handle, Purpose.REINVITE, now
        )

    def answer_reinvite(
        self,
        handle: str,
        sdp: SdpSession | bytes,
        now: float,
        *,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Accept the pending re-INVITE with 200 OK and our SDP (resent until ACK).

        Raises:
            InvalidCallState: No re-INVITE is pending.
        """
        call, record = self._pending_reinvite(handle)
        body = sdp_bytes(sdp)
        response = self._response(
            record, 200, None, to_tag=call.local_tag, headers=headers, body=body, contact=True
        )
        self._run_tx(record, record.tx.send_response(response, now), now)
        cseq = parse_cseq(record.tx.request.headers.get("CSeq") or "").seq
        call.ok_retransmit = Retransmit(
            response.serialize(), record.dest, record.transport, cseq, now, self.timers
        )
        call.reinvite_in = None
        self._schedule_call(call)

    def reject_reinvite(
        self,
        handle: str,
        status: int,
        reason: str | None,
        now: float,
        *,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Refuse the pending re-INVITE (e.g. 488); the call goes on as before."""
        if not 300 <= status <= 699:
            raise ValueError(f"reject_reinvite needs a 300-699 status, not {status}")
        call, record = self._pending_reinvite(handle)
        response = self._response(record, status, reason, to_tag=call.local_tag, headers=headers)
        self._run_tx(record, record.tx.send_response(response, now), now)
        call.reinvite_in = None

    def send_info(self, handle: str, content_type: str, body: bytes, now: float) -> None:
        """Send an INFO in the call's dialog (e.g. ``application/dtmf-relay``).

        Raises:
            InvalidCallState: The call is not up.
        """
        call = self._call(handle)
        if call.phase is not DialogPhase.CONFIRMED or call.dialog is None:
            raise InvalidCallState(f"can't send INFO for call {handle} in state {call.phase.value}")
        dest, transport = self._dialog_dest(call)
        request = call.dialog.create_request(
            "INFO",
            via=self._via(transport),
            body=body,
            content_type=content_type,
            extra_headers=self._ua_headers(()),
        )
        self._start_client(request, dest, transport, handle, Purpose.INFO, now)

    # ---------------------------------------------------------- inside

    def _pending_reinvite(self, handle: str) -> tuple[CallRecord, TxRecord]:
        call = self._call(handle)
        record = self._server_tx.get(call.reinvite_in) if call.reinvite_in is not None else None
        if record is None or record.tx.state is not State.PROCEEDING:
            raise InvalidCallState(f"call {handle} has no re-INVITE waiting for an answer")
        return call, record

    def _dialog_dest(self, call: CallRecord) -> tuple[Addr, str]:
        if call.dialog is None:
            raise InvalidCallState(f"call {call.handle} has no dialog")
        hop = call.dialog.next_hop()
        transport = hop.transport if hop.transport in TRANSPORTS else UDP
        if call.route_override is not None:
            return call.route_override, call.transport
        return (hop.param("maddr") or hop.host, hop.port_or_default), transport

    # ---- requests in a dialog

    def _on_in_dialog(
        self, call: CallRecord, request: SipRequest, record: TxRecord, cseq: int, now: float
    ) -> None:
        dialog = call.dialog
        method = request.method
        if dialog is None or call.phase is DialogPhase.ENDED:
            self._reply(record, 481, now)
            return
        if not dialog.accept_remote_seq(cseq, method):
            # RFC 3261 §12.2.2: out of order "MUST be rejected with a 500".
            self._reply(record, 500, now, to_tag=call.local_tag)
            return
        record.handle = call.handle
        if method == "BYE":
            self._on_bye(call, record, now)
        elif method == "INVITE":
            self._on_reinvite(call, request, record, now)
        elif method == "INFO":
            self._on_info(call, request, record, now)
        elif method == "OPTIONS":
            self._reply(record, 200, now, headers=[("Accept", "application/sdp")])
        elif method in KNOWN_METHODS:
            self._reply(record, 405, now)
        else:
            self._reply(record, 501, now)

    def _on_ack(self, request: SipRequest, addr: Addr, now: float) -> None:
        """An ACK for a 2xx (its own transaction, RFC 3261 §13.3.1.4/§17.2.3)."""
        try:
            from_tag = parse_name_addr(request.headers.get("From") or "", "From").tag or ""
            to_tag = parse_name_addr(request.headers.get("To") or "", "To").tag or ""
            cseq = parse_cseq(request.headers.get("CSeq") or "").seq
        except SipParseError:
            self.stats.dropped += 1
            return
        handle = self._dialogs.get((request.headers.get("Call-ID") or "", to_tag, from_tag))
        call = self._calls.get(handle) if handle is not None else None
        if call is None or call.ok_retransmit is None or call.ok_retransmit.cseq != cseq:
            return  # a late or stray ACK: nothing to do (§17.2.3 passes it to the core)
        call.ok_retransmit = None
        if call.phase is DialogPhase.ANSWERED:
            call.phase = DialogPhase.CONFIRMED
        self._schedule_call(call)
        if call.pending_bye:
            call.pending_bye = False
            self._send_bye(call, now, ())

    def _on_bye(self, call: CallRecord, record: TxRecord, now: float) -> None:
        if call.reinvite_in is not None:
            # RFC 3261 §15.1.2: "SHOULD generate a 487 ... for any pending requests".
            pending = self._server_tx.get(call.reinvite_in)
            if pending is not None and pending.tx.state is State.PROCEEDING:
                self._reply(pending, 487, now, to_tag=call.local_tag)
            call.reinvite_in = None
        self._reply(record, 200, now)
        if call.role is Role.UAS and call.phase in (DialogPhase.INCOMING, DialogPhase.EARLY):
            # A caller may BYE an early dialog (§15): treat it as a CANCEL.
            invite = self._invite_record(call)
            if invite is not None and invite.tx.state is State.PROCEEDING:
                self._reply(invite, 487, now, to_tag=call.local_tag)
            self._end(call, now)
            self._emit(CallCancelled(call.handle, CancelReason.BYE))
            return
        if call.phase is DialogPhase.ENDING:
            return  # both sides hung up at once; our BYE's outcome reports the end
        self._end(call, now)
        self._emit(DialogEnded(call.handle, EndReason.REMOTE_BYE))

    def _on_reinvite(
        self, call: CallRecord, request: SipRequest, record: TxRecord, now: float
    ) -> None:
        if call.reinvite_out is not None:
            # RFC 3261 §14.2: our INVITE is in progress: "MUST return a 491".
            self._reply(record, 491, now, to_tag=call.local_tag)
            return
        if call.reinvite_in is not None or call.phase is not DialogPhase.CONFIRMED:
            # §14.2: a second INVITE before our final answer to the first "MUST
            # return a 500 ... and MUST include a Retry-After".
            retry = str(int(self._token(1), 16) % 10)
            self._reply(record, 500, now, to_tag=call.local_tag, headers=[("Retry-After", retry)])
            return
        ok, offer = self._offer_of(request, record, now)
        if not ok:
            return
        if call.dialog is not None:
            try:
                # §12.2: a re-INVITE is a target refresh.
                call.dialog.refresh_target(request.headers)
            except SipParseError as exc:
                self.stats.parse_errors += 1
                self._reply_bad(record, exc, now)
                return
        record.purpose = Purpose.REINVITE
        trying = self._response(record, 100, None)
        self._run_tx(record, record.tx.send_response(trying, now), now)
        call.reinvite_in = record.key
        self._emit(ReinviteReceived(call.handle, offer))

    def _on_info(self, call: CallRecord, request: SipRequest, record: TxRecord, now: float) -> None:
        content_type = content_type_of(request.headers)
        if content_type in DTMF_CONTENT_TYPES:
            dtmf = parse_dtmf(content_type, request.body)
            if dtmf is None:
                self._reply(record, 400, now, reason="Bad Request (malformed DTMF)")
                return
            self._reply(record, 200, now, to_tag=call.local_tag)
            self._emit(DtmfReceived(call.handle, dtmf[0], dtmf[1]))
            return
        self._reply(record, 200, now, to_tag=call.local_tag)

    # ---- outcomes of our client transactions

    def _on_client_response(self, record: TxRecord, response: SipResponse, now: float) -> None:
        call = self._calls.get(record.handle or "")
        if call is None:
            return
        if record.purpose is Purpose.INVITE:
            self._on_invite_response(call, record, response, now)
        elif record.purpose is Purpose.REINVITE:
            self._on_reinvite_response(call, record, response, now)
        elif record.purpose is Purpose.BYE and response.status >= 200:
            if call.phase is DialogPhase.ENDING:
                self._end(call, now)
                self._emit(DialogEnded(call.handle, EndReason.LOCAL_BYE, response.status))
        elif record.purpose is Purpose.INFO and response.status in (408, 481):
            self._dialog_lost(call, response.status, now)

    def _on_tx_failed(self, record: TxRecord, status: int, now: float) -> None:
        """A transaction timed out (408) or hit a transport error (503)."""
        call = self._calls.get(record.handle or "")
        if call is None or record.server:
            return  # a server transaction giving up (Timer H) needs no action
        reason = reason_phrase(status)
        if record.purpose is Purpose.INVITE:
            self._on_invite_failed(call, status, now)
        elif record.purpose is Purpose.REINVITE:
            call.reinvite_out = None
            self._emit(ReinviteRejected(call.handle, status, reason))
            self._dialog_lost(call, status, now)
        elif record.purpose is Purpose.BYE:
            if call.phase is DialogPhase.ENDING:
                self._end(call, now)
                self._emit(DialogEnded(call.handle, EndReason.LOCAL_BYE, status))
        elif record.purpose is Purpose.INFO:
            self._dialog_lost(call, status, now)

    def _on_reinvite_response(
        self, call: CallRecord, record: TxRecord, response: SipResponse, now: float
    ) -> None:
        status = response.status
        if status < 200:
            return
        dialog = call.dialog
        if call.phase is DialogPhase.ENDED:
            call.reinvite_out = None
            if 200 <= status < 300:
                self._on_late_2xx(call, record, response, now)
            return  # the call is over: its outcome was reported
        if 200 <= status < 300 and dialog is not None:
            cseq = parse_cseq(record.tx.request.headers.get("CSeq") or "").seq
            if cseq in call.acks:
                self._send(*call.acks[cseq])  # a 2xx retransmission
                return
            try:
                dialog.refresh_target(response.headers)  # §12.2.1.2 target refresh
            except SipParseError as exc:
                logger.debug("call %s: keeping the old target: %s", call.handle, exc)
            dest, transport = self._dialog_dest(call)
            ack = dialog.create_ack(cseq, via=self._via(transport))
            call.acks[cseq] = (ack, dest, transport)
            self._send(ack, dest, transport)
            call.reinvite_out = None
            self._emit(ReinviteAnswered(call.handle, self._sdp_of(response)))
            return
        call.reinvite_out = None
        self._emit(ReinviteRejected(call.handle, status, response.reason))
        if status in (408, 481):
            # RFC 3261 §12.2.1.2: "...the UAC SHOULD terminate the dialog".
            self._dialog_lost(call, status, now)

    def _resend_ack(self, response: SipResponse) -> None:
        """A 2xx retransmission after the transaction is gone: ACK it again (§13.2.2.4)."""
        try:
            to_tag = parse_name_addr(response.headers.get("To") or "", "To").tag or ""
            from_tag = parse_name_addr(response.headers.get("From") or "", "From").tag or ""
        except SipParseError:
            self.stats.stray_responses += 1
            return
        handle = self._dialogs.get((response.headers.get("Call-ID") or "", from_tag, to_tag))
        call = self._calls.get(handle) if handle is not None else None
        cseq = parse_cseq(response.headers.get("CSeq") or "").seq
        sent = call.acks.get(cseq) if call is not None else None
        if sent is None:
            self.stats.stray_responses += 1
            return
        self._send(*sent)

    def _on_late_2xx(
        self, call: CallRecord, record: TxRecord, response: SipResponse, now: float
    ) -> None:
        """A 2xx after we ACKed one (retransmission or fork) or gave up the call."""
        to_tag = parse_name_addr(response.headers.get("To") or "", "To").tag or ""
        dialog = call.dialog
        sent = call.acks.get(parse_cseq(response.headers.get("CSeq") or "").seq)
        if sent is not None and dialog is not None and to_tag == (dialog.remote.tag or ""):
            self._send(*sent)  # §13.2.2.4: ACK each 2xx retransmission
            return
        # A second answer from a fork, or an answer after we gave up: "...the
        # UAC core MUST ... ACK ... and then ... send a BYE" (§13.2.2.4).
        self._ack_and_bye_stray(call, record, response, now)

    def _ack_and_bye_stray(
        self, call: CallRecord, record: TxRecord, response: SipResponse, now: float
    ) -> None:
        try:
            stray = Dialog.as_uac(record.tx.request, response)
        except SipParseError:
            return
        hop = stray.next_hop()
        dest = call.route_override or (hop.param("maddr") or hop.host, hop.port_or_default)
        transport = hop.transport if hop.transport in TRANSPORTS else UDP
        cseq = parse_cseq(record.tx.request.headers.get("CSeq") or "").seq
        self._send(stray.create_ack(cseq, via=self._via(transport)), dest, transport)
        bye = stray.create_request(
            "BYE", via=self._via(transport), extra_headers=self._ua_headers(())
        )
        self._start_client(bye, dest, transport, None, Purpose.OTHER, now)

    def _send_bye(self, call: CallRecord, now: float, headers: tuple[tuple[str, str], ...]) -> None:
        dialog = call.dialog
        if dialog is None:
            raise InvalidCallState(f"call {call.handle} has no dialog to send BYE in")
        call.ok_retransmit = None
        dest, transport = self._dialog_dest(call)
        request = dialog.create_request(
            "BYE", via=self._via(transport), extra_headers=self._ua_headers(headers)
        )
        call.phase = DialogPhase.ENDING
        self._schedule_call(call)
        self._start_client(request, dest, transport, call.handle, Purpose.BYE, now)

    def _dialog_lost(self, call: CallRecord, status: int, now: float) -> None:
        if call.phase in (DialogPhase.ENDED, DialogPhase.ENDING):
            return
        reason = {
            408: EndReason.REQUEST_TIMEOUT,
            481: EndReason.DIALOG_GONE,
        }.get(status, EndReason.TRANSPORT_ERROR)
        self._end(call, now)
        self._emit(DialogEnded(call.handle, reason))

    def _on_ack_timeout(self, call: CallRecord, now: float) -> None:
        """RFC 3261 §13.3.1.4: no ACK after 64*T1: "the session SHOULD be
        terminated. This is accomplished with a BYE."."""
        if call.phase not in (DialogPhase.ANSWERED, DialogPhase.CONFIRMED):
            return
        call.phase = DialogPhase.CONFIRMED
        self._send_bye(call, now, ())
        self._end(call, now)
        self._emit(DialogEnded(call.handle, EndReason.ACK_TIMEOUT))

    # ---- hooks: the caller's part (uac.py) implements these

    @abc.abstractmethod
    def _on_invite_response(
        self, call: CallRecord, record: TxRecord, response: SipResponse, now: float
    ) -> None:
        """A response to the INVITE of an outgoing call."""

    @abc.abstractmethod
    def _on_invite_failed(self, call: CallRecord, status: int, now: float) -> None:
        """The INVITE of an outgoing call timed out (408) or hit a transport error (503)."""
