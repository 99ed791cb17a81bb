"""The SIP user agent core: the plumbing under both roles of the SIP endpoint.

:class:`~callstream.sip.endpoint.SipEndpoint` is the class to use; this is its base.

One endpoint is caller (UAC) and callee (UAS) at once, over the same
transactions, dialogs and timers, so its parts are not separate objects but
layers of one class (websockets splits ``ClientProtocol`` and
``ServerProtocol`` over one ``Protocol`` the same way)::

    UserAgentCore         useragent.py   this module
      InDialogAgent       in_dialog.py   the established call, either role
        UserAgentServer   uas.py         incoming calls
        UserAgentClient   uac.py         outgoing calls
          SipEndpoint     endpoint.py    both roles joined

Composition would need references both ways (a role's handlers drive the
shared transactions, and the shared intake hands requests to the roles);
layers share the state instead, and each module reads on its own.

This module holds:

* the drained outputs (:meth:`~UserAgentCore.datagrams_to_send`,
  :meth:`~UserAgentCore.events_received`) and the timer heap
  (:meth:`~UserAgentCore.next_deadline`, :meth:`~UserAgentCore.handle_timeout`);
* transaction glue: starting server and client transactions
  (:mod:`~callstream.sip.transaction`) and carrying out what they output;
* message building: Via, Contact, responses per RFC 3261 §8.2.6;
* intake of every message: parse errors (400 with a Warning), the
  allow-list, OPTIONS, 405/420/481/501, routing to a transaction, a dialog
  or a role;
* each call's timers and bookkeeping (the dialog index, ending and
  forgetting a call).

Where a step belongs to a layer above, the core calls a hook that layer
implements: the abstract methods at the end of :class:`UserAgentCore`.
"""

from __future__ import annotations

import abc
import functools
import heapq
import ipaddress
import logging
import secrets
from collections.abc import Callable, Iterable

from .admission import AdmissionLimits, ForbiddenAction, SourceCounter, SourceRateLimiter
from .dialog import Dialog, DialogState
from .digest import DigestServer
from .events import Addr, RequestForbidden, SipEvent
from .exceptions import InvalidCallState, InvalidHeader, InvalidHeaderField, SipError, SipParseError
from .headers import BRANCH_MAGIC_COOKIE, NameAddr, Via, parse_cseq, parse_name_addr, parse_via
from .message import Headers, SipMessage, SipRequest, SipResponse, parse_message, split_comma_list
from .records import (
    TCP,
    UDP,
    CallRecord,
    Datagram,
    DialogPhase,
    EndpointStats,
    Purpose,
    Role,
    TxRecord,
)
from .sdp import SdpSession, parse_sdp
from .transaction import (
    DEFAULT_TIMERS,
    ClientKey,
    Kind,
    Output,
    PassUp,
    Send,
    ServerKey,
    TimedOut,
    TimerConfig,
    Transaction,
    TransportFailed,
    client_key,
    server_key,
)
from .uri import format_host

__all__ = [
    "ALLOWED_METHODS",
    "ALLOW_ALL",
    "ANSWER_TIMEOUT",
    "DEFAULT_ALLOWED_NETWORKS",
    "DRAIN_RETRY_AFTER",
    "MAX_CALLS",
    "MAX_TRANSACTIONS",
    "SETUP_TIMEOUT",
    "UserAgentCore",
    "reason_phrase",
]

# One logger for the whole user agent, whichever role module logs, under the
# name operators already filter on.
logger = logging.getLogger("callstream.sip.endpoint")
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Methods we serve; the Allow header we send.
ALLOWED_METHODS = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "INFO")
#: Methods we know but do not serve: 405 rather than 501 (RFC 3261 §8.2.1).
KNOWN_METHODS = frozenset(
    {"REGISTER", "PRACK", "SUBSCRIBE", "NOTIFY", "PUBLISH", "REFER", "MESSAGE", "UPDATE"}
)
#: Requests that need a dialog; out of one they get 481.
DIALOG_METHODS = frozenset({"BYE", "INFO", "PRACK", "UPDATE"})
#: Where requests may come from unless they belong to a transaction or dialog:
#: this host only, until the operator names the networks its callers are on.
DEFAULT_ALLOWED_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(net) for net in ("127.0.0.0/8", "::1/128")
)
#: Every address: for ``allowed_networks`` when the endpoint faces the Internet.
ALLOW_ALL: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("0.0.0.0/0"),
    ipaddress.ip_network("::/0"),
)
#: Most calls at once; more INVITEs get 503.
MAX_CALLS = 10_000
#: Seconds a call may stay unanswered before the endpoint gives up on it. RFC
#: 3261 has no timer for a Proceeding INVITE; this keeps a silent peer or a
#: forgetful caller from holding a call (and its memory) forever.
SETUP_TIMEOUT = 300.0
#: Seconds an incoming call may wait for our answer (480 after): a parked call
#: holds media ports and a place in the per-source cap while it waits.
ANSWER_TIMEOUT = 60.0
#: Most live transactions; requests beyond it get a stateless 503.
MAX_TRANSACTIONS = 100_000
#: Retry-After (seconds) of the 503 a draining node answers: it will not take calls
#: again, so a caller or front should try elsewhere, not soon here.
DRAIN_RETRY_AFTER = 300

_REASONS = {
    100: "Trying",
    180: "Ringing",
    183: "Session Progress",
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    405: "Method Not Allowed",
    408: "Request Timeout",
    415: "Unsupported Media Type",
    420: "Bad Extension",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "Version Not Supported",
    513: "Message Too Large",
    603: "Decline",
}


def reason_phrase(status: int) -> str:
    """The usual reason phrase for ``status``."""
    return _REASONS.get(status, "Unknown")


@functools.lru_cache(maxsize=4096)
def is_allowed(host: str, networks: tuple[IPNetwork, ...]) -> bool:
    """Whether ``host`` (an IPv4-mapped IPv6 address as its IPv4) is in ``networks``."""
    # Cached: peers are few, and parsing the address is the slow part.
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


def _warning_text(text: str) -> str:
    cleaned = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "?" for c in text)
    return f'"{cleaned[:200]}"'


def content_type_of(headers: Headers) -> str:
    """The media type of a message's body, lower case, without parameters."""
    return (headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()


def _top_via(message: SipMessage) -> Via:
    vias = message.headers.get_all("Via")
    if not vias:
        raise InvalidHeader("Via", message.headers.get("Via") or "", "empty value")
    return parse_via(vias[0])


def sdp_bytes(sdp: SdpSession | bytes) -> bytes:
    """A command's SDP argument as the body to send."""
    return sdp.serialize() if isinstance(sdp, SdpSession) else sdp


def has_tag(value: str) -> bool:
    """Whether a To (or From) value carries a tag, even one that does not parse."""
    try:
        return parse_name_addr(value, "To").tag is not None
    except SipError:
        return ";tag=" in value.lower()


def _first_line(message: SipMessage) -> str:
    if isinstance(message, SipRequest):
        return f"{message.method} {message.uri} ({message.headers.get('Call-ID')})"
    return f"{message.status} {message.reason} ({message.headers.get('CSeq')})"


class UserAgentCore(abc.ABC):
    """State and behaviour both roles share; see the module docstring.

    Not used alone: :class:`~callstream.sip.endpoint.SipEndpoint` documents
    the arguments.
    """

    def __init__(
        self,
        local_addr: Addr,
        *,
        advertised_addr: Addr | None = None,
        user_agent: str = "callstream",
        contact_user: str = "callstream",
        allowed_networks: Iterable[IPNetwork] | None = None,
        forbidden_action: ForbiddenAction = ForbiddenAction.REJECT,
        limits: AdmissionLimits = AdmissionLimits(),
        auth: DigestServer | None = None,
        timers: TimerConfig = DEFAULT_TIMERS,
        max_calls: int = MAX_CALLS,
        setup_timeout: float = SETUP_TIMEOUT,
        answer_timeout: float = ANSWER_TIMEOUT,
        token: Callable[[int], str] = secrets.token_hex,
    ) -> None:
        self.local_addr = local_addr
        self.advertised_addr = advertised_addr or local_addr
        self.user_agent = user_agent
        self.contact_user = contact_user
        self.allowed_networks: tuple[IPNetwork, ...] = (
            DEFAULT_ALLOWED_NETWORKS if allowed_networks is None else tuple(allowed_networks)
        )
        self.forbidden_action = forbidden_action
        self.limits = limits
        self.auth = auth
        self.timers = timers
        self.max_calls = max_calls
        self.setup_timeout = setup_timeout
        self.answer_timeout = answer_timeout
        self._rate = SourceRateLimiter(limits.rate_per_sec, limits.burst)
        self._parked = SourceCounter()
        self.stats = EndpointStats()
        self._active = 0
        self._token = token
        self._datagrams: list[Datagram] = []
        self._events: list[SipEvent] = []
        self._calls: dict[str, CallRecord] = {}
        self._dialogs: dict[tuple[str, str, str], str] = {}
        self._server_tx: dict[ServerKey, TxRecord] = {}
        # Keyed by ClientKey; typed wider so a record's key looks it up.
        self._client_tx: dict[tuple[str, ...], TxRecord] = {}
        # (Call-ID, From tag, CSeq) of INVITEs in progress, for §8.2.2.2 merges.
        self._invites_in: dict[tuple[str, str, int], ServerKey] = {}
        # (deadline, tie-breaker, owner); an entry is live while owner.scheduled == deadline.
        self._heap: list[tuple[float, int, TxRecord | CallRecord]] = []
        self._sequence = 0
        self._call_counter = 0
        # Set by drain(): new INVITEs and out-of-dialog OPTIONS get 503.
        self.draining = False

    # ------------------------------------------------------------ commands

    def drain(self) -> None:
        """Take no new calls: a new INVITE gets a stateless 503, an OPTIONS outside a
        dialog 503, so a SIP front that probes with OPTIONS (Kamailio's dispatcher)
        takes this node out and fails new calls over to another. Calls already up, and
        every request inside their dialogs, go on as before; there is no way back (a
        draining node is about to exit)."""
        self.draining = True

    # ------------------------------------------------------------ outputs

    def datagrams_to_send(self) -> list[Datagram]:
        """Return the messages to send, in order, and forget them."""
        datagrams, self._datagrams = self._datagrams, []
        return datagrams

    def events_received(self) -> list[SipEvent]:
        """Return the events since the last call, in order, and forget them."""
        events, self._events = self._events, []
        return events

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timeout` must next be called, or ``None``."""
        heap = self._heap
        while heap:
            deadline, _, owner = heap[0]
            if owner.scheduled == deadline:
                return deadline
            heapq.heappop(heap)
        return None

    def call_state(self, handle: str) -> DialogPhase:
        """The SIP state of a call.

        Raises:
            InvalidCallState: Unknown handle (or a call long gone).
        """
        return self._call(handle).phase

    def dialog(self, handle: str) -> Dialog | None:
        """The call's dialog (``None`` before one exists)."""
        return self._call(handle).dialog

    @property
    def active_calls(self) -> int:
        """Calls not yet ended."""
        return self._active

    # ------------------------------------------------------------- inputs

    def receive_datagram(
        self, data: bytes, addr: Addr, now: float, *, transport: str = UDP
    ) -> None:
        """Process one datagram (or one message framed off a TCP stream).

        Never raises for anything the peer sent: bad input is answered or
        counted (:attr:`stats`).
        """
        self.stats.received += 1
        if not data.strip(b"\r\n \t"):
            self.stats.keepalives += 1  # RFC 5626 CRLF keep-alive
            return
        try:
            message = parse_message(data, stream=transport != UDP)
        except SipParseError as exc:
            self._on_parse_error(exc, addr, transport, now)
            return
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("< %s %s", addr, _first_line(message))
        try:
            if isinstance(message, SipResponse):
                self._on_response(message, addr, transport, now)
            else:
                self._on_request(message, addr, transport, now)
        except SipParseError as exc:
            # A header the UA needed deeper down did not parse.
            self.stats.parse_errors += 1
            self.stats.dropped += 1
            logger.debug("dropped message from %s: %s", addr, exc)

    def handle_timeout(self, now: float) -> None:
        """Fire every timer due at ``now``."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, owner = heapq.heappop(heap)
            if owner.scheduled != deadline:
                continue  # superseded or forgotten
            owner.scheduled = None
            if isinstance(owner, TxRecord):
                self._run_tx(owner, owner.tx.handle_timeout(now), now)
            else:
                self._call_timeout(owner, now)

    def transport_failed(self, addr: Addr, transport: str, now: float) -> None:
        """Tell the endpoint that sending to ``addr`` failed (RFC 3261 §17.1.4).

        Transactions sending there report a transport error: an INVITE fails
        with 503, an in-dialog request ends the call.
        """
        records = [*self._client_tx.values(), *self._server_tx.values()]
        for record in records:
            if record.dest == addr and record.transport == transport:
                self._run_tx(record, record.tx.transport_error(now), now)

    # ================================================================ inside

    def _call(self, handle: str) -> CallRecord:
        call = self._calls.get(handle)
        if call is None:
            raise InvalidCallState(f"unknown call {handle!r}")
        return call

    def _invite_record(self, call: CallRecord) -> TxRecord | None:
        """The server transaction of an incoming call's INVITE, while it lives."""
        return self._server_tx.get(call.invite_key) if call.invite_key is not None else None

    def _new_handle(self) -> str:
        self._call_counter += 1
        return f"call-{self._call_counter}-{self._token(4)}"

    # ---- output helpers

    def _send(self, message: SipMessage, dest: Addr, transport: str) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("> %s %s", dest, _first_line(message))
        self._datagrams.append(Datagram(message.serialize(), dest, transport))
        self.stats.sent += 1

    def _emit(self, event: SipEvent) -> None:
        self._events.append(event)

    def _schedule(self, owner: TxRecord | CallRecord, deadline: float | None) -> None:
        if deadline == owner.scheduled:
            return
        owner.scheduled = deadline
        if deadline is not None:
            self._sequence += 1
            heapq.heappush(self._heap, (deadline, self._sequence, owner))

    def _schedule_call(self, call: CallRecord) -> None:
        self._schedule(call, call.next_deadline())

    # ---- building messages

    def _via(self, transport: str) -> str:
        host, port = self.advertised_addr
        # RFC 3581 §3: ask for rport over UDP so that responses find us behind NAT.
        rport = ";rport" if transport == UDP else ""
        branch = f"{BRANCH_MAGIC_COOKIE}{self._token(8)}"
        return f"SIP/2.0/{transport.upper()} {format_host(host)}:{port}{rport};branch={branch}"

    def _contact(self, transport: str) -> str:
        host, port = self.advertised_addr
        suffix = ";transport=tcp" if transport == TCP else ""
        return f"<sip:{self.contact_user}@{format_host(host)}:{port}{suffix}>"

    def _ua_headers(self, headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        out = [("User-Agent", self.user_agent)]
        out.extend(headers)
        return out

    def _response(
        self,
        record: TxRecord,
        status: int,
        reason: str | None,
        *,
        to_tag: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        contact: bool = False,
        content_type: str = "application/sdp",
    ) -> SipResponse:
        request = record.tx.request
        return self._build_response(
            request.method,
            request.headers.items(),
            record.top_via,
            status,
            reason,
            to_tag=to_tag,
            headers=headers,
            body=body,
            contact=self._contact(record.transport) if contact else None,
            content_type=content_type,
        )

    def _build_response(
        self,
        method: str,
        request_headers: Iterable[tuple[str, str]],
        top_via: Via | None,
        status: int,
        reason: str | None,
        *,
        to_tag: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        contact: str | None = None,
        content_type: str = "application/sdp",
    ) -> SipResponse:
        """A response per RFC 3261 §8.2.6: Via, From, Call-ID, CSeq copied,
        a To tag added (except on 100), Record-Route copied on dialog-making
        responses (§12.1.1)."""
        out: list[tuple[str, str]] = []
        first_via = True
        copy_record_route = method == "INVITE" and 100 < status < 300
        for name, value in request_headers:
            if name == "Via":
                for index, via in enumerate(split_comma_list(value)):
                    if first_via and index == 0 and top_via is not None:
                        out.append(("Via", top_via.serialize()))
                    else:
                        out.append(("Via", via))
                first_via = False
            elif name in ("From", "Call-ID", "CSeq"):
                out.append((name, value))
            elif name == "To":
                if status > 100 and to_tag is not None and not has_tag(value):
                    # §8.2.6.2: "the UAS MUST add a tag to the To header field"
                    value = f"{value};tag={to_tag}"
                out.append(("To", value))
            elif name == "Record-Route" and copy_record_route:
                out.append((name, value))
        if contact is not None:
            out.append(("Contact", contact))
        if status == 405 or (method in ("INVITE", "OPTIONS") and 200 <= status < 300):
            out.append(("Allow", ", ".join(ALLOWED_METHODS)))
        out.append(("Server", self.user_agent))
        out.extend(headers)
        if body:
            out.append(("Content-Type", content_type))
        out.append(("Content-Length", str(len(body))))
        return SipResponse(status, reason or reason_phrase(status), Headers(out), body)

    # ---- transactions

    def _new_server(
        self,
        request: SipRequest,
        key: ServerKey,
        top_via: Via,
        source: Addr,
        transport: str,
        handle: str | None,
    ) -> TxRecord:
        """A server transaction for a new request (it starts with no timers)."""
        kind = Kind.INVITE_SERVER if request.method == "INVITE" else Kind.NON_INVITE_SERVER
        tx = Transaction(kind, request, reliable=transport != UDP, config=self.timers)
        dest = top_via.response_address(source) if transport == UDP else source
        record = TxRecord(tx, key, dest, transport, handle, Purpose.OTHER, top_via)
        self._server_tx[key] = record
        return record

    def _reply(
        self,
        record: TxRecord,
        status: int,
        now: float,
        *,
        reason: str | None = None,
        to_tag: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        response = self._response(
            record, status, reason, to_tag=to_tag or self._token(6), headers=headers
        )
        self._run_tx(record, record.tx.send_response(response, now), now)

    def _start_client(
        self,
        request: SipRequest,
        dest: Addr,
        transport: str,
        handle: str | None,
        purpose: Purpose,
        now: float,
    ) -> ClientKey:
        kind = Kind.INVITE_CLIENT if request.method == "INVITE" else Kind.NON_INVITE_CLIENT
        tx = Transaction(kind, request, reliable=transport != UDP, config=self.timers)
        branch = parse_via(request.headers.get_all("Via")[0]).branch or ""
        key = client_key(branch, request.method)
        record = TxRecord(tx, key, dest, transport, handle, purpose)
        self._client_tx[key] = record
        self._run_tx(record, tx.start(now), now)
        return key

    def _run_tx(self, record: TxRecord, outputs: list[Output], now: float) -> None:
        """Carry out a transaction's outputs, then reschedule or forget it."""
        for output in outputs:
            if isinstance(output, Send):
                self._send(output.message, record.dest, record.transport)
            elif isinstance(output, PassUp):
                if isinstance(output.message, SipResponse):
                    self._on_client_response(record, output.message, now)
                else:
                    self._on_ack(output.message, record.dest, now)
            elif isinstance(output, TimedOut):
                self._on_tx_failed(record, 408, now)
            elif isinstance(output, TransportFailed):
                self._on_tx_failed(record, 503, now)
        if not record.tx.terminated:
            self._schedule(record, record.tx.next_deadline())
            return
        self._schedule(record, None)
        if record.server:
            if self._server_tx.get(record.key) is record:
                del self._server_tx[record.key]
            if record.merge_key is not None:
                self._invites_in.pop(record.merge_key, None)
        elif self._client_tx.get(record.key) is record:
            del self._client_tx[record.key]

    # ---- parse errors

    def _on_parse_error(self, exc: SipParseError, addr: Addr, transport: str, now: float) -> None:
        self.stats.parse_errors += 1
        logger.debug("bad message from %s: %s", addr, exc)
        if (
            exc.method is None
            or exc.method == "ACK"  # never answer an ACK
            or exc.headers is None
            or not is_allowed(addr[0], self.allowed_networks)
        ):
            self.stats.dropped += 1
            return
        pairs = exc.headers
        names = {name for name, _ in pairs}
        vias = [v for name, value in pairs if name == "Via" for v in split_comma_list(value)]
        if not vias or not {"From", "To", "Call-ID", "CSeq"} <= names:
            self.stats.dropped += 1
            return
        try:
            top = parse_via(vias[0]).with_received(addr[0], addr[1])
        except SipParseError:
            self.stats.dropped += 1
            return
        status = exc.status_hint if 400 <= exc.status_hint <= 699 else 400
        host = format_host(self.advertised_addr[0])
        response = self._build_response(
            exc.method,
            pairs,
            top,
            status,
            None,
            to_tag=self._token(6),
            headers=[("Warning", f"399 {host} {_warning_text(str(exc))}")],
        )
        dest = top.response_address(addr) if transport == UDP else addr
        try:
            # Stateless: the request did not parse, so no transaction can hold it.
            self._send(response, dest, transport)
        except InvalidHeaderField:
            # The echoed From/To/Call-ID/CSeq carry a byte no header may (CR, LF, NUL):
            # such a request gets no answer rather than a broken one.
            self.stats.dropped += 1
            return
        self.stats.bad_requests_answered += 1

    # ---- requests

    def _on_request(self, request: SipRequest, addr: Addr, transport: str, now: float) -> None:
        top = _top_via(request).with_received(addr[0], addr[1])
        key = server_key(request, top)
        record = self._server_tx.get(key)
        if record is not None:
            if request.method != "ACK":
                self.stats.retransmissions_absorbed += 1
            self._run_tx(record, record.tx.receive_request(request, now), now)
            return
        if request.method == "ACK":
            self._on_ack(request, addr, now)
            return
        if request.method == "CANCEL":
            self._on_cancel(request, key, top, addr, transport, now)
            return
        if len(self._server_tx) >= MAX_TRANSACTIONS:
            self._reject_stateless(request, top, addr, transport, 503)
            return
        try:
            from_ = parse_name_addr(request.headers.get("From") or "", "From")
            to = parse_name_addr(request.headers.get("To") or "", "To")
            cseq = parse_cseq(request.headers.get("CSeq") or "")
        except SipParseError as exc:
            self._on_bad_request(request, key, top, addr, transport, exc, now)
            return
        call_id = request.headers.get("Call-ID") or ""
        handle = self._dialogs.get((call_id, to.tag or "", from_.tag or "")) if to.tag else None
        if handle is None and not self._admit(request, top, addr, transport, to, now):
            return
        record = self._new_server(request, key, top, addr, transport, handle)
        try:
            self._dispatch(request, record, key, from_, to, cseq.seq, handle, addr, now)
        except SipParseError as exc:
            # A header needed on the way did not parse: the transaction must
            # still end with a final response, or it would wait forever.
            self.stats.parse_errors += 1
            if record.tx.last_response is None or record.tx.last_response.status < 200:
                self._reply_bad(record, exc, now)

    def _admit(
        self, request: SipRequest, top: Via, addr: Addr, transport: str, to: NameAddr, now: float
    ) -> bool:
        """Admission for a request outside any dialog (see :mod:`.admission`).

        A refusal is answered statelessly, once, with no transaction behind it:
        nothing is retransmitted and nothing is remembered.
        """
        if not is_allowed(addr[0], self.allowed_networks):
            self._refuse_forbidden(request, top, addr, transport)
            return False
        if to.tag or request.method != "INVITE":
            return True  # makes no dialog: answered at once (or 481), nothing parked
        return self._admit_invite(request, top, addr, transport, now)

    def _refuse_forbidden(self, request: SipRequest, top: Via, addr: Addr, transport: str) -> None:
        self.stats.forbidden += 1
        self._emit(RequestForbidden(request.method, addr))
        if self.forbidden_action is ForbiddenAction.DROP:
            self.stats.dropped += 1
            return
        self._reject_stateless(request, top, addr, transport, 403)

    def _dispatch(
        self,
        request: SipRequest,
        record: TxRecord,
        key: ServerKey,
        from_: NameAddr,
        to: NameAddr,
        cseq: int,
        handle: str | None,
        addr: Addr,
        now: float,
    ) -> None:
        """Route a new request that passed the allow-list to its handler."""
        unsupported = [
            option
            for value in request.headers.get_all("Require")
            for option in split_comma_list(value)
        ]
        if unsupported:
            # RFC 3261 §8.2.2.3: "...MUST respond by generating a response with
            # status code 420 (Bad Extension)" listing them in Unsupported.
            self._reply(record, 420, now, headers=[("Unsupported", ", ".join(unsupported))])
            return
        if to.tag:
            if handle is None:
                # RFC 3261 §12.2.2: unknown dialog "...MUST respond to the request with a 481".
                self._reply(record, 481, now)
                return
            self._on_in_dialog(self._calls[handle], request, record, cseq, now)
            return
        method = request.method
        if method == "INVITE":
            self._on_new_invite(request, record, key, from_, to, cseq, addr, record.transport, now)
        elif method == "OPTIONS" and self.draining:
            # RFC 3261 §11.2: a UAS answering OPTIONS "SHOULD" give the status it would
            # give an INVITE; a draining node refuses INVITEs with 503.
            self._reply(record, 503, now, headers=[("Retry-After", str(DRAIN_RETRY_AFTER))])
        elif method == "OPTIONS":
            self._reply(record, 200, now, headers=[("Accept", "application/sdp")])
        elif method in DIALOG_METHODS:
            self._reply(record, 481, now)
        elif method in KNOWN_METHODS:
            self._reply(record, 405, now)
        else:
            self._reply(record, 501, now)

    def _on_bad_request(
        self,
        request: SipRequest,
        key: ServerKey,
        top: Via,
        addr: Addr,
        transport: str,
        exc: SipParseError,
        now: float,
    ) -> None:
        self.stats.parse_errors += 1
        if not is_allowed(addr[0], self.allowed_networks):
            self.stats.dropped += 1
            return
        record = self._new_server(request, key, top, addr, transport, None)
        self._reply_bad(record, exc, now)

    def _reject_stateless(
        self,
        request: SipRequest,
        top: Via,
        addr: Addr,
        transport: str,
        status: int,
        *,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        response = self._build_response(
            request.method,
            request.headers.items(),
            top,
            status,
            None,
            to_tag=self._token(6),
            headers=headers,
        )
        self._send(response, top.response_address(addr) if transport == UDP else addr, transport)

    def _offer_of(
        self, request: SipRequest, record: TxRecord, now: float
    ) -> tuple[bool, SdpSession | None]:
        """``(ok, offer)`` for an INVITE; not ok after answering 415/400 for a bad body."""
        if not request.body:
            return True, None
        content_type = content_type_of(request.headers)
        if content_type != "application/sdp":
            # RFC 3261 §8.2.3: "...MUST reject the request with a 415" with Accept.
            self._reply(record, 415, now, headers=[("Accept", "application/sdp")])
            return False, None
        try:
            return True, parse_sdp(request.body)
        except SipParseError as exc:
            self.stats.parse_errors += 1
            self._reply_bad(record, exc, now, reason="Bad Request (malformed SDP)")
            return False, None

    def _reply_bad(
        self, record: TxRecord, exc: SipParseError, now: float, *, reason: str | None = None
    ) -> None:
        """400 with a Warning that says what was wrong (RFC 3261 §20.43, code 399)."""
        host = format_host(self.advertised_addr[0])
        warning = ("Warning", f"399 {host} {_warning_text(str(exc))}")
        self._reply(record, 400, now, reason=reason, headers=[warning])
        self.stats.bad_requests_answered += 1

    # ---- responses

    def _on_response(self, response: SipResponse, addr: Addr, transport: str, now: float) -> None:
        top = _top_via(response)
        cseq = parse_cseq(response.headers.get("CSeq") or "")
        key = client_key(top.branch or "", cseq.method)
        record = self._client_tx.get(key)
        if record is None:
            if cseq.method == "INVITE" and 200 <= response.status < 300:
                self._resend_ack(response)
            else:
                self.stats.stray_responses += 1
            return
        self._run_tx(record, record.tx.receive_response(response, now), now)

    # ---- call timers

    def _call_timeout(self, call: CallRecord, now: float) -> None:
        retransmit = call.ok_retransmit
        if retransmit is not None and retransmit.next_at <= now:
            if now >= retransmit.give_up_at:
                call.ok_retransmit = None
                self._on_ack_timeout(call, now)
            else:
                self._datagrams.append(
                    Datagram(retransmit.data, retransmit.dest, retransmit.transport)
                )
                self.stats.sent += 1
                # §13.3.1.4: "...doubling until it reaches T2".
                retransmit.interval = min(2 * retransmit.interval, self.timers.t2)
                retransmit.next_at = now + retransmit.interval
        if call.setup_deadline is not None and call.setup_deadline <= now:
            call.setup_deadline = None
            if call.role is Role.UAC:
                self._on_setup_timeout(call, now)
            else:
                self._on_answer_timeout(call, now)
        if call.cancel_deadline is not None and call.cancel_deadline <= now:
            call.cancel_deadline = None
            self._on_cancel_timeout(call, now)
        if call.linger_until is not None and call.linger_until <= now:
            self._forget(call)
            return
        self._schedule_call(call)

    # ---- call bookkeeping

    def _set_dialog(self, call: CallRecord, dialog: Dialog) -> None:
        call.dialog = dialog
        key = (dialog.call_id, dialog.local.tag or "", dialog.remote.tag or "")
        self._dialogs[key] = call.handle

    def _add_call(self, call: CallRecord, now: float) -> None:
        self._calls[call.handle] = call
        self._active += 1
        timeout = self.answer_timeout if call.role is Role.UAS else self.setup_timeout
        call.setup_deadline = now + timeout
        self._schedule_call(call)

    def _unpark(self, call: CallRecord) -> None:
        if call.parked_source is not None:
            self._parked.remove(call.parked_source)
            call.parked_source = None

    def _end(self, call: CallRecord, now: float) -> None:
        """Mark the call ended; keep it for 64*T1 for late retransmissions."""
        if call.phase is not DialogPhase.ENDED:
            self._active -= 1
        call.phase = DialogPhase.ENDED
        call.setup_deadline = None
        self._unpark(call)
        call.ok_retransmit = None
        call.cancel_deadline = None
        call.pending_bye = False
        if call.dialog is not None:
            call.dialog.state = DialogState.TERMINATED
        call.linger_until = now + 64 * self.timers.t1
        self._schedule_call(call)

    def _forget(self, call: CallRecord) -> None:
        self._calls.pop(call.handle, None)
        call.scheduled = None
        if call.dialog is not None:
            dialog = call.dialog
            self._dialogs.pop(
                (dialog.call_id, dialog.local.tag or "", dialog.remote.tag or ""), None
            )

    def _sdp_of(self, message: SipMessage) -> SdpSession | None:
        if not message.body or content_type_of(message.headers) != "application/sdp":
            return None
        try:
            return parse_sdp(message.body)
        except SipParseError as exc:
            self.stats.parse_errors += 1
            logger.debug("unparseable SDP: %s", exc)
            return None

    # ---- hooks: in_dialog.py, uas.py and uac.py implement these

    @abc.abstractmethod
    def _on_in_dialog(
        self, call: CallRecord, request: SipRequest, record: TxRecord, cseq: int, now: float
    ) -> None:
        """A new request in a known dialog (its server transaction is ``record``)."""

    @abc.abstractmethod
    def _on_ack(self, request: SipRequest, addr: Addr, now: float) -> None:
        """An ACK for a 2xx (its own transaction, RFC 3261 §13.3.1.4/§17.2.3)."""

    @abc.abstractmethod
    def _on_client_response(self, record: TxRecord, response: SipResponse, now: float) -> None:
        """A response our client transaction ``record`` passed up."""

    @abc.abstractmethod
    def _on_tx_failed(self, record: TxRecord, status: int, now: float) -> None:
        """A transaction timed out (408) or hit a transport error (503)."""

    @abc.abstractmethod
    def _resend_ack(self, response: SipResponse) -> None:
        """A 2xx to an INVITE whose transaction is gone."""

    @abc.abstractmethod
    def _on_ack_timeout(self, call: CallRecord, now: float) -> None:
        """Our 2xx got no ACK within 64*T1."""

    @abc.abstractmethod
    def _admit_invite(
        self, request: SipRequest, top: Via, addr: Addr, transport: str, now: float
    ) -> bool:
        """UAS: admission for a new INVITE from an allowed source (refusals answered)."""

    @abc.abstractmethod
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
        """UAS: an admitted INVITE outside any dialog: a new incoming call."""

    @abc.abstractmethod
    def _on_cancel(
        self, request: SipRequest, key: ServerKey, top: Via, addr: Addr, transport: str, now: float
    ) -> None:
        """UAS: a CANCEL that matches no transaction of its own."""

    @abc.abstractmethod
    def _on_answer_timeout(self, call: CallRecord, now: float) -> None:
        """UAS: an incoming call's ``answer_timeout`` ran out."""

    @abc.abstractmethod
    def _on_setup_timeout(self, call: CallRecord, now: float) -> None:
        """UAC: an outgoing call's ``setup_timeout`` ran out."""

    @abc.abstractmethod
    def _on_cancel_timeout(self, call: CallRecord, now: float) -> None:
        """UAC: no final response to the INVITE 64*T1 after our CANCEL."""
