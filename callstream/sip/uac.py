"""The caller's half of the SIP user agent (UAC, RFC 3261 §8.1 and §13.2).

:class:`UserAgentClient` adds outgoing calls to
:class:`~callstream.sip.in_dialog.InDialogAgent`: the INVITE, its responses
(early dialogs, forked answers, the ACK), a retry with digest credentials
after 401/407 (§22.2), CANCEL (§9.1) and the setup timeout. What follows the
answer (BYE, re-INVITE, INFO) is :mod:`~callstream.sip.in_dialog`'s.
"""

from __future__ import annotations

from collections.abc import Iterable

from .dialog import Dialog
from .digest import Challenge, Credentials, build_authorization, parse_challenge
from .events import Addr, CallAnswered, CallFailed, CallProgress
from .exceptions import DigestError, InvalidCallState, SipParseError
from .headers import NameAddr, parse_cseq, parse_name_addr
from .in_dialog import InDialogAgent
from .message import Headers, SipRequest, SipResponse
from .records import TRANSPORTS, CallRecord, DialogPhase, Purpose, Role, TxRecord
from .sdp import SdpSession
from .uri import SipUri, format_host, parse_uri
from .useragent import ALLOWED_METHODS, has_tag, logger, reason_phrase, sdp_bytes

__all__ = ["MAX_AUTH_ATTEMPTS", "UserAgentClient"]

#: Most times we answer digest challenges for one call (RFC 3261 §22.2 loops).
MAX_AUTH_ATTEMPTS = 2


class UserAgentClient(InDialogAgent):
    """Outgoing calls: place, cancel and complete them (see the module docstring)."""

    # ---------------------------------------------------------- commands

    def invite(
        self,
        target: str | SipUri,
        *,
        from_uri: str | SipUri,
        sdp: SdpSession | bytes | None,
        now: float,
        to_uri: str | SipUri | None = None,
        from_display: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        credentials: Credentials | None = None,
        transport_addr: Addr | None = None,
    ) -> str:
        """Place a call.

        Args:
            target: Request-URI; its host:port is where the INVITE goes, and
                ``;transport=tcp`` selects TCP.
            from_uri: Our address of record.
            sdp: Our offer (``None`` to ask for the peer's offer in its 2xx).
            now: The current time.
            to_uri: The To address; the target by default.
            from_display: Display name for From.
            headers: Extra headers (e.g. ``X-`` headers, ``P-Asserted-Identity``).
            credentials: Answer 401/407 challenges with these.
            transport_addr: Send every request of this call here instead
                (an outbound proxy).

        Returns:
            The call handle.

        Raises:
            InvalidUri: ``target``, ``from_uri`` or ``to_uri`` does not parse.
            ValueError: The target asks for a transport other than UDP or TCP.
        """
        target_uri = parse_uri(target) if isinstance(target, str) else target
        transport = target_uri.transport
        if transport not in TRANSPORTS:
            raise ValueError(f"unsupported transport {transport!r}")
        dest = transport_addr or (
            target_uri.param("maddr") or target_uri.host,
            target_uri.port_or_default,
        )
        handle = self._new_handle()
        local_tag = self._token(6)
        from_parsed = parse_uri(from_uri) if isinstance(from_uri, str) else from_uri
        to_parsed = target_uri
        if to_uri is not None:
            to_parsed = parse_uri(to_uri) if isinstance(to_uri, str) else to_uri
        call_id = f"{self._token(12)}@{format_host(self.advertised_addr[0])}"
        placeholder = SipRequest("INVITE", target_uri.serialize())
        call = CallRecord(handle, Role.UAC, placeholder, call_id, local_tag, dest, transport)
        call.uac_from = NameAddr(from_parsed, from_display, (("tag", local_tag),))
        call.uac_to = NameAddr(to_parsed)
        call.credentials = credentials
        call.route_override = transport_addr
        call.extra_headers = tuple(headers)
        self._add_call(call, now)
        self.stats.calls_out += 1
        self._send_invite(call, 1, sdp_bytes(sdp) if sdp is not None else b"", None, now)
        return handle

    def cancel(self, handle: str, now: float) -> None:
        """Cancel an outgoing call that has no final response yet (RFC 3261 §9.1).

        The CANCEL goes out once a provisional response has arrived ("If no
        provisional response has been received, the CANCEL request MUST NOT be
        sent"). The call ends with ``CallFailed(487)``.

        Raises:
            InvalidCallState: Not an outgoing call waiting for an answer.
        """
        call = self._call(handle)
        if call.role is not Role.UAC or call.phase not in (DialogPhase.CALLING, DialogPhase.EARLY):
            raise InvalidCallState(f"can't cancel call {handle} in state {call.phase.value}")
        if call.cancel_requested:
            return
        call.cancel_requested = True
        if call.provisional_received:
            self._send_cancel(call, now)

    # ---------------------------------------------------------- inside

    def _on_invite_response(
        self, call: CallRecord, record: TxRecord, response: SipResponse, now: float
    ) -> None:
        status = response.status
        if 200 <= status < 300 and (call.acks or call.phase is DialogPhase.ENDED):
            self._on_late_2xx(call, record, response, now)
            return
        if call.phase is DialogPhase.ENDED:
            return
        if status < 200:
            call.provisional_received = True
            if call.cancel_requested and not call.cancel_sent:
                self._send_cancel(call, now)
            if status > 100:
                if call.dialog is None and has_tag(response.headers.get("To") or ""):
                    try:
                        self._set_dialog(call, Dialog.as_uac(record.tx.request, response))
                    except SipParseError as exc:
                        logger.debug("call %s: no early dialog: %s", call.handle, exc)
                call.phase = DialogPhase.EARLY
                sdp = self._sdp_of(response)
                self._emit(CallProgress(call.handle, status, response.reason, sdp))
            return
        if status < 300:
            self._on_invite_2xx(call, record, response, now)
            return
        if status in (401, 407) and self._retry_with_auth(call, record, response, now):
            return
        self._end(call, now)
        if call.cancel_requested:
            self._emit(self._cancelled(call))
        else:
            self._emit(CallFailed(call.handle, status, response.reason))

    def _on_invite_2xx(
        self, call: CallRecord, record: TxRecord, response: SipResponse, now: float
    ) -> None:
        to_tag = parse_name_addr(response.headers.get("To") or "", "To").tag or ""
        dialog = call.dialog
        try:
            if dialog is None or (dialog.remote.tag or "") != to_tag:
                if dialog is not None:  # an early dialog with another fork
                    key = (dialog.call_id, dialog.local.tag or "", dialog.remote.tag or "")
                    self._dialogs.pop(key, None)
                dialog = Dialog.as_uac(record.tx.request, response)
            else:
                dialog.confirm(response)
        except SipParseError as exc:
            # Without a usable Contact we cannot ACK: give up on the call.
            self.stats.parse_errors += 1
            self._end(call, now)
            self._emit(CallFailed(call.handle, 502, f"Bad Gateway ({exc.reason[:60]})"))
            return
        self._set_dialog(call, dialog)
        dest, transport = self._dialog_dest(call)
        cseq = parse_cseq(record.tx.request.headers.get("CSeq") or "").seq
        ack = dialog.create_ack(cseq, via=self._via(transport))
        call.acks[cseq] = (ack, dest, transport)
        self._send(ack, dest, transport)
        call.cancel_deadline = None
        call.setup_deadline = None
        call.phase = DialogPhase.CONFIRMED
        self._schedule_call(call)
        if call.cancel_requested:
            # Our CANCEL lost the race with the answer: hang up at once.
            self._send_bye(call, now, ())
            self._end(call, now)
            self._emit(self._cancelled(call))
            return
        self._emit(CallAnswered(call.handle, self._sdp_of(response)))

    def _retry_with_auth(
        self, call: CallRecord, record: TxRecord, response: SipResponse, now: float
    ) -> bool:
        """Resend the INVITE with credentials (RFC 3261 §22.2); False if we can't."""
        if call.credentials is None or call.auth_attempts >= MAX_AUTH_ATTEMPTS:
            return False
        if call.cancel_requested:
            return False
        header = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
        answer_header = "Authorization" if response.status == 401 else "Proxy-Authorization"
        challenge: Challenge | None = None
        for value in response.headers.get_all(header):
            try:
                challenge = parse_challenge(value)
                break
            except DigestError as exc:
                logger.debug("call %s: unusable challenge: %s", call.handle, exc)
        if challenge is None:
            return False
        if call.credentials.realm is not None and call.credentials.realm != challenge.realm:
            return False
        last = call.last_challenge
        if last is not None and last.nonce == challenge.nonce and not challenge.stale:
            return False  # the same nonce again: our credentials were refused
        request = record.tx.request
        try:
            authorization = build_authorization(
                challenge,
                call.credentials,
                method="INVITE",
                uri=request.uri,
                cnonce=self._token(8),
                body=request.body,
            )
        except DigestError:
            return False
        call.auth_attempts += 1
        call.last_challenge = challenge
        cseq = parse_cseq(request.headers.get("CSeq") or "").seq + 1
        self._send_invite(call, cseq, request.body, (answer_header, authorization), now)
        return True

    def _send_invite(
        self, call: CallRecord, cseq: int, body: bytes, auth: tuple[str, str] | None, now: float
    ) -> None:
        if call.uac_from is None or call.uac_to is None:
            raise InvalidCallState(f"call {call.handle} is not an outgoing call")
        transport = call.transport
        headers: list[tuple[str, str]] = [
            ("Via", self._via(transport)),
            ("Max-Forwards", "70"),
            ("From", call.uac_from.serialize()),
            ("To", call.uac_to.serialize()),
            ("Call-ID", call.call_id),
            ("CSeq", f"{cseq} INVITE"),
            ("Contact", self._contact(transport)),
            ("Allow", ", ".join(ALLOWED_METHODS)),
            ("User-Agent", self.user_agent),
        ]
        if auth is not None:
            headers.append(auth)
        headers.extend(call.extra_headers)
        if body:
            headers.append(("Content-Type", "application/sdp"))
        headers.append(("Content-Length", str(len(body))))
        request = SipRequest("INVITE", call.invite.uri, Headers(headers), body)
        call.invite = request
        call.provisional_received = False
        call.invite_key = self._start_client(
            request, call.remote, transport, call.handle, Purpose.INVITE, now
        )

    def _send_cancel(self, call: CallRecord, now: float) -> None:
        """CANCEL per RFC 3261 §9.1: same Request-URI, Call-ID, To, From, CSeq
        number and top Via (branch) as the INVITE, method CANCEL."""
        invite = call.invite
        headers: list[tuple[str, str]] = [("Via", invite.headers.get_all("Via")[0])]
        headers.extend(("Route", route) for route in invite.headers.get_all("Route"))
        headers.append(("Max-Forwards", "70"))
        for name in ("From", "To", "Call-ID"):
            headers.append((name, invite.headers.get(name) or ""))
        seq = (invite.headers.get("CSeq") or "").split(" ", 1)[0]
        headers.append(("CSeq", f"{seq} CANCEL"))
        headers.append(("User-Agent", self.user_agent))
        headers.append(("Content-Length", "0"))
        cancel = SipRequest("CANCEL", invite.uri, Headers(headers))
        call.cancel_sent = True
        self._start_client(cancel, call.remote, call.transport, call.handle, Purpose.CANCEL, now)
        # §9.1: without a final response 64*T1 after the CANCEL, give up on the INVITE.
        call.cancel_deadline = now + 64 * self.timers.t1
        self._schedule_call(call)

    def _cancelled(self, call: CallRecord) -> CallFailed:
        status = 408 if call.setup_timed_out else 487
        return CallFailed(call.handle, status, reason_phrase(status))

    def _on_setup_timeout(self, call: CallRecord, now: float) -> None:
        if call.phase not in (DialogPhase.CALLING, DialogPhase.EARLY):
            return
        call.setup_timed_out = True
        if not call.cancel_requested:
            self.cancel(call.handle, now)
        if not call.provisional_received:
            # Nothing to CANCEL yet (§9.1); stop waiting for the INVITE.
            self._end(call, now)
            self._emit(CallFailed(call.handle, 408, reason_phrase(408)))

    def _on_invite_failed(self, call: CallRecord, status: int, now: float) -> None:
        if call.phase in (DialogPhase.CALLING, DialogPhase.EARLY):
            self._end(call, now)
            failed = CallFailed(call.handle, status, reason_phrase(status))
            self._emit(self._cancelled(call) if call.cancel_requested else failed)

    def _on_cancel_timeout(self, call: CallRecord, now: float) -> None:
        if call.phase in (DialogPhase.CALLING, DialogPhase.EARLY):
            self._end(call, now)
            self._emit(self._cancelled(call))
