"""The SIP user agent core: the one object the call layer talks to (sans-I/O).

:class:`SipEndpoint` answers and places calls. It owns the transactions
(:mod:`~callstream.sip.transaction`) and dialogs (:mod:`~callstream.sip.dialog`)
of every call, but never touches a socket or a clock: the I/O layer
(:mod:`~callstream.sip.transport`, or a test) feeds it and drains it.

Driving it
----------

Inputs::

    endpoint.receive_datagram(data, (host, port), now, transport="udp")
    endpoint.handle_timeout(now)          # at or after endpoint.next_deadline()
    endpoint.transport_failed((host, port), "tcp", now)

Commands (``handle`` is the opaque string an event or :meth:`invite` gave you)::

    # incoming calls (UAS)
    endpoint.ring(handle, now)                       # 180 Ringing
    endpoint.progress(handle, sdp, now)              # 183 Session Progress + early media
    endpoint.answer(handle, sdp, now)                # 200 OK + SDP, resent until ACK
    endpoint.reject(handle, 486, "Busy Here", now)   # any 300-699
    # outgoing calls (UAC)
    handle = endpoint.invite("sip:bob@10.0.0.2:5060", from_uri="sip:alice@10.0.0.1",
                             sdp=offer, now=now, credentials=Credentials("alice", "pw"))
    endpoint.cancel(handle, now)
    # established calls
    endpoint.bye(handle, now)
    endpoint.reinvite(handle, sdp, now)              # hold / resume / new media
    endpoint.answer_reinvite(handle, sdp, now)       # after ReinviteReceived
    endpoint.reject_reinvite(handle, 488, "Not Acceptable Here", now)
    endpoint.send_info(handle, "application/dtmf-relay", b"Signal=5\\r\\nDuration=160\\r\\n", now)
    endpoint.hangup(handle, now)                     # whichever of cancel/reject/bye fits

Outputs, drained (each call returns what accumulated and clears it)::

    endpoint.datagrams_to_send() -> list[Datagram]   # (data, addr, transport)
    endpoint.events_received()   -> list[SipEvent]
    endpoint.next_deadline()     -> float | None

Events (:mod:`callstream.sip.events`): :class:`IncomingCall`,
:class:`CallProgress`, :class:`CallAnswered`, :class:`CallFailed`,
:class:`CallCancelled`, :class:`CallEnded`, :class:`ReinviteReceived`,
:class:`ReinviteAnswered`, :class:`ReinviteRejected`, :class:`DtmfReceived`,
:class:`RequestForbidden`. Every call ends with exactly one of
:class:`CallFailed` (an outgoing call never answered, our own :meth:`cancel`
included), :class:`CallCancelled` (an incoming call the caller gave up on, or
nobody answered) or :class:`CallEnded` (an answered call); the one exception
is :meth:`reject`, which ends an incoming call silently.

What it does on its own
-----------------------

* 100 Trying for every INVITE; retransmitted requests are absorbed by their
  server transaction (RFC 3261 §17.2.3), so a retransmitted INVITE never
  makes a second call; a merged INVITE (same Call-ID/From tag/CSeq, other
  branch) gets 482 (§8.2.2.2).
* Retransmits its 2xx until the ACK arrives and gives up after 64*T1 with a
  BYE (§13.3.1.4); ACKs 2xx responses (again for each retransmission).
* CANCEL: 200 to the CANCEL, 487 to the INVITE, :class:`CallCancelled`.
* Gives up on calls left unanswered: 480 for an incoming one after
  ``answer_timeout``, CANCEL for an outgoing one after ``setup_timeout``
  (RFC 3261 has no timer there).
* Digest authentication: a 401/407 to our INVITE is retried with
  credentials once per challenge (RFC 3261 §22.2); with ``auth``, new
  INVITEs to us are challenged (§22.4).
* OPTIONS → 200 with Allow; in-dialog INFO → 200, with
  :class:`DtmfReceived` for ``application/dtmf-relay`` / ``application/dtmf``.
* Requests that match neither a transaction nor a dialog pass admission
  (:mod:`~callstream.sip.admission`) before any state is made for them: they
  must come from ``allowed_networks`` (default: loopback only), else one
  stateless 403 (or nothing, ``forbidden_action=DROP``) and a
  :class:`RequestForbidden` event. A new INVITE from a source over its rate
  limit gets a stateless 503 with Retry-After, from one holding too many
  unanswered calls a stateless 486 (:class:`RequestRefused`); with ``auth``
  set, one without valid digest credentials gets a stateless 401 challenge.
* Malformed input: a request whose start line, Via, From, To, Call-ID and
  CSeq could be read gets 400 (505, 513 where they fit) with a Warning that
  names the fault; anything else is dropped. :attr:`SipEndpoint.stats`
  counts both. Unknown dialog → 481; out-of-order CSeq → 500;
  unknown method → 501; a known method we do not serve → 405 with Allow;
  ``Require`` of an extension → 420.
"""

from __future__ import annotations

import enum
import functools
import heapq
import ipaddress
import logging
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .admission import (
    AdmissionLimits,
    ForbiddenAction,
    RefusalReason,
    SourceCounter,
    SourceRateLimiter,
    source_key,
)
from .dialog import Dialog, DialogState
from .digest import (
    AuthOutcome,
    Challenge,
    Credentials,
    DigestServer,
    build_authorization,
    parse_challenge,
)
from .events import (
    Addr,
    CallAnswered,
    CallCancelled,
    CallEnded,
    CallFailed,
    CallProgress,
    CancelReason,
    DtmfReceived,
    EndReason,
    IncomingCall,
    ReinviteAnswered,
    ReinviteReceived,
    ReinviteRejected,
    RequestForbidden,
    RequestRefused,
    SipEvent,
)
from .exceptions import (
    DigestError,
    InvalidCallState,
    InvalidHeader,
    InvalidHeaderField,
    SipError,
    SipParseError,
)
from .headers import (
    BRANCH_MAGIC_COOKIE,
    NameAddr,
    Via,
    parse_cseq,
    parse_name_addr,
    parse_via,
)
from .message import Headers, SipMessage, SipRequest, SipResponse, parse_message, split_comma_list
from .sdp import SdpSession, parse_sdp
from .transaction import (
    DEFAULT_TIMERS,
    ClientKey,
    Kind,
    Output,
    PassUp,
    Send,
    ServerKey,
    State,
    TimedOut,
    TimerConfig,
    Transaction,
    TransportFailed,
    client_key,
    server_key,
)
from .uri import SipUri, format_host, parse_uri

__all__ = [
    "ALLOWED_METHODS",
    "ALLOW_ALL",
    "DEFAULT_ALLOWED_NETWORKS",
    "Addr",
    "CallAnswered",
    "CallCancelled",
    "CallEnded",
    "CallFailed",
    "CallProgress",
    "CallState",
    "CancelReason",
    "Datagram",
    "DtmfReceived",
    "EndReason",
    "EndpointStats",
    "IncomingCall",
    "ReinviteAnswered",
    "ReinviteReceived",
    "ReinviteRejected",
    "RequestForbidden",
    "RequestRefused",
    "SipEndpoint",
    "SipEvent",
]

logger = logging.getLogger(__name__)
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

UDP = "udp"
TCP = "tcp"
TRANSPORTS = (UDP, TCP)

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
#: Most times we answer digest challenges for one call (RFC 3261 §22.2 loops).
MAX_AUTH_ATTEMPTS = 2
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
#: Content types we accept for DTMF in INFO.
DTMF_CONTENT_TYPES = ("application/dtmf-relay", "application/dtmf")
_DTMF_DIGITS = "0123456789*#ABCD"
_DTMF_CODES = {"10": "*", "11": "#", "12": "A", "13": "B", "14": "C", "15": "D"}

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


# -------------------------------------------------------------- plain records


@dataclass(frozen=True, slots=True)
class Datagram:
    """One message to send: ``data`` to ``addr`` over ``transport`` (udp/tcp)."""

    data: bytes
    addr: Addr
    transport: str = UDP


@dataclass(slots=True)
class EndpointStats:
    """Counters, for metrics. Plain integers, only ever incremented."""

    received: int = 0
    sent: int = 0
    keepalives: int = 0
    parse_errors: int = 0
    bad_requests_answered: int = 0
    dropped: int = 0
    forbidden: int = 0
    rate_limited: int = 0
    parked_limited: int = 0
    auth_challenges: int = 0
    auth_failures: int = 0
    retransmissions_absorbed: int = 0
    stray_responses: int = 0
    calls_in: int = 0
    calls_out: int = 0


class CallState(enum.Enum):
    """Where a call stands, as far as SIP goes."""

    INCOMING = "incoming"  # UAS: INVITE received, 100 sent
    CALLING = "calling"  # UAC: INVITE sent
    EARLY = "early"  # 18x sent (UAS) or received (UAC)
    ANSWERED = "answered"  # UAS: 2xx sent, waiting for the ACK
    CONFIRMED = "confirmed"  # the call is up
    ENDING = "ending"  # our BYE is out
    ENDED = "ended"


class _Role(enum.Enum):
    UAC = "uac"
    UAS = "uas"


class _Purpose(enum.Enum):
    INVITE = "invite"
    REINVITE = "reinvite"
    CANCEL = "cancel"
    BYE = "bye"
    INFO = "info"
    OTHER = "other"


class _Retransmit:
    """A 2xx we resend until its ACK (RFC 3261 §13.3.1.4)."""

    __slots__ = ("cseq", "data", "dest", "give_up_at", "interval", "next_at", "transport")

    def __init__(
        self, data: bytes, dest: Addr, transport: str, cseq: int, now: float, config: TimerConfig
    ) -> None:
        self.data = data
        self.dest = dest
        self.transport = transport
        self.cseq = cseq
        self.interval = config.t1
        self.next_at = now + config.t1
        self.give_up_at = now + 64 * config.t1


class _Call:
    __slots__ = (
        "acks",
        "auth_attempts",
        "call_id",
        "cancel_deadline",
        "cancel_requested",
        "cancel_sent",
        "credentials",
        "dialog",
        "extra_headers",
        "handle",
        "invite",
        "invite_key",
        "last_challenge",
        "linger_until",
        "local_tag",
        "ok_retransmit",
        "parked_source",
        "pending_bye",
        "provisional_received",
        "reinvite_in",
        "reinvite_out",
        "remote",
        "role",
        "route_override",
        "scheduled",
        "setup_deadline",
        "setup_timed_out",
        "state",
        "transport",
        "uac_from",
        "uac_to",
    )

    def __init__(
        self,
        handle: str,
        role: _Role,
        invite: SipRequest,
        call_id: str,
        local_tag: str,
        remote: Addr,
        transport: str,
    ) -> None:
        self.handle = handle
        self.call_id = call_id
        self.role = role
        self.state = CallState.INCOMING if role is _Role.UAS else CallState.CALLING
        self.invite = invite
        self.invite_key: ServerKey | None = None
        self.local_tag = local_tag
        self.remote = remote
        self.transport = transport
        self.dialog: Dialog | None = None
        self.ok_retransmit: _Retransmit | None = None
        # Set while an incoming call waits for our answer, for the per-source cap.
        self.parked_source: str | None = None
        self.pending_bye = False
        # CSeq number -> the ACK we sent for that INVITE's 2xx, to resend.
        self.acks: dict[int, tuple[SipRequest, Addr, str]] = {}
        self.setup_deadline: float | None = None
        self.setup_timed_out = False
        self.credentials: Credentials | None = None
        self.auth_attempts = 0
        self.last_challenge: Challenge | None = None
        self.cancel_requested = False
        self.cancel_sent = False
        self.cancel_deadline: float | None = None
        self.provisional_received = False
        self.reinvite_in: ServerKey | None = None
        self.reinvite_out: ClientKey | None = None
        self.linger_until: float | None = None
        self.route_override: Addr | None = None
        self.scheduled: float | None = None
        self.uac_from: NameAddr | None = None
        self.uac_to: NameAddr | None = None
        self.extra_headers: tuple[tuple[str, str], ...] = ()

    def next_deadline(self) -> float | None:
        deadlines = [
            d
            for d in (
                self.ok_retransmit.next_at if self.ok_retransmit is not None else None,
                self.cancel_deadline,
                self.setup_deadline,
                self.linger_until,
            )
            if d is not None
        ]
        return min(deadlines) if deadlines else None


class _TxRecord:
    """A transaction plus its key, where its messages go and whose it is."""

    __slots__ = (
        "dest",
        "handle",
        "key",
        "merge_key",
        "purpose",
        "scheduled",
        "server",
        "top_via",
        "transport",
        "tx",
    )

    def __init__(
        self,
        tx: Transaction,
        key: ServerKey | ClientKey,
        dest: Addr,
        transport: str,
        handle: str | None,
        purpose: _Purpose,
        top_via: Via | None = None,
    ) -> None:
        self.tx = tx
        self.key = key
        self.server = not tx.kind.is_client
        self.dest = dest
        self.transport = transport
        self.handle = handle
        self.purpose = purpose
        self.top_via = top_via
        self.merge_key: tuple[str, str, int] | None = None
        self.scheduled: float | None = None


@functools.lru_cache(maxsize=4096)
def _is_allowed(host: str, networks: tuple[IPNetwork, ...]) -> bool:
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


def _content_type(headers: Headers) -> str:
    return (headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()


def _parse_dtmf(content_type: str, body: bytes) -> tuple[str, int | None] | None:
    try:
        text = body.decode("ascii").strip()
    except UnicodeDecodeError:
        return None
    signal: str | None = None
    duration: int | None = None
    if content_type == "application/dtmf":
        signal = text
    else:
        for line in text.splitlines():
            name, _, value = line.partition("=")
            name, value = name.strip().lower(), value.strip()
            if name == "signal":
                signal = value
            elif name == "duration" and value.isascii() and value.isdigit() and len(value) < 7:
                duration = int(value)
    if signal is None:
        return None
    signal = _DTMF_CODES.get(signal, signal).upper()
    if len(signal) != 1 or signal not in _DTMF_DIGITS:
        return None
    return signal, duration


# ------------------------------------------------------------------ endpoint


class SipEndpoint:
    """A sans-I/O SIP user agent (UAC and UAS) for voice calls.

    Args:
        local_addr: The address our sockets are bound to, for Via and Contact.
        advertised_addr: The address to put in Via and Contact instead, when
            ``local_addr`` is a wildcard or behind NAT.
        user_agent: ``User-Agent`` / ``Server`` header value.
        contact_user: User part of our Contact URI.
        allowed_networks: Where new requests may come from.
        forbidden_action: What a request from elsewhere gets: one stateless
            403, or nothing.
        limits: Per-source rate limit and cap on unanswered incoming calls.
        auth: Challenge new INVITEs and admit only those with valid digest
            credentials; ``None`` admits them without.
        timers: T1, T2, T4.
        max_calls: Calls at once; further INVITEs get 503.
        setup_timeout: Seconds an outgoing call may stay unanswered before it
            is cancelled (``CallFailed(408)``).
        answer_timeout: Seconds an incoming call may stay unanswered before it
            gets 480 (``CallCancelled(reason=SETUP_TIMEOUT)``).
        token: Random hex of ``n`` bytes, for tags, branches and Call-IDs
            (inject a deterministic one in tests).
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
        self._calls: dict[str, _Call] = {}
        self._dialogs: dict[tuple[str, str, str], str] = {}
        self._server_tx: dict[ServerKey, _TxRecord] = {}
        # Keyed by ClientKey; typed wider so a record's key looks it up.
        self._client_tx: dict[tuple[str, ...], _TxRecord] = {}
        # (Call-ID, From tag, CSeq) of INVITEs in progress, for §8.2.2.2 merges.
        self._invites_in: dict[tuple[str, str, int], ServerKey] = {}
        # (deadline, tie-breaker, owner); an entry is live while owner.scheduled == deadline.
        self._heap: list[tuple[float, int, _TxRecord | _Call]] = []
        self._sequence = 0
        self._call_counter = 0

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

    def call_state(self, handle: str) -> CallState:
        """The SIP state of a call.

        Raises:
            InvalidCallState: Unknown handle (or a call long gone).
        """
        return self._call(handle).state

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
            if isinstance(owner, _TxRecord):
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

    # ---------------------------------------------------------- UAS commands

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
        self._provisional(handle, 183, _sdp_bytes(sdp), now, headers)

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
        ``CallEnded(reason=ACK_TIMEOUT)`` and a BYE.

        Raises:
            InvalidCallState: Not an incoming call waiting for an answer.
        """
        call = self._uas_call(handle, "answer")
        record = self._invite_record(call)
        if record is None:
            raise InvalidCallState(f"can't answer call {handle}: its INVITE transaction is gone")
        body = _sdp_bytes(sdp)
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
        call.ok_retransmit = _Retransmit(
            response.serialize(), record.dest, record.transport, cseq, now, self.timers
        )
        call.state = CallState.ANSWERED
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

    # ---------------------------------------------------------- UAC commands

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
        call = _Call(handle, _Role.UAC, placeholder, call_id, local_tag, dest, transport)
        call.uac_from = NameAddr(from_parsed, from_display, (("tag", local_tag),))
        call.uac_to = NameAddr(to_parsed)
        call.credentials = credentials
        call.route_override = transport_addr
        call.extra_headers = tuple(headers)
        self._add_call(call, now)
        self.stats.calls_out += 1
        self._send_invite(call, 1, _sdp_bytes(sdp) if sdp is not None else b"", None, now)
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
        if call.role is not _Role.UAC or call.state not in (CallState.CALLING, CallState.EARLY):
            raise InvalidCallState(f"can't cancel call {handle} in state {call.state.value}")
        if call.cancel_requested:
            return
        call.cancel_requested = True
        if call.provisional_received:
            self._send_cancel(call, now)

    # ------------------------------------------------------- dialog commands

    def bye(self, handle: str, now: float, *, headers: Iterable[tuple[str, str]] = ()) -> None:
        """Hang up an answered call.

        For an incoming call whose 2xx is not yet ACKed, the BYE waits for the
        ACK (RFC 3261 §15: the callee "MUST NOT send a BYE on a confirmed
        dialog until it has received an ACK for its 2xx response"). The call
        ends with ``CallEnded(reason=LOCAL_BYE, status=...)``.

        Raises:
            InvalidCallState: The call is not answered (use :meth:`hangup`).
        """
        call = self._call(handle)
        if call.state is CallState.ANSWERED:
            call.pending_bye = True
            return
        if call.state is not CallState.CONFIRMED:
            raise InvalidCallState(f"can't send BYE for call {handle} in state {call.state.value}")
        self._send_bye(call, now, tuple(headers))

    def hangup(self, handle: str, now: float, *, status: int = 603) -> None:
        """End a call whatever its state: CANCEL, reject with ``status``, or BYE.

        Calls already ending or ended are left alone.
        """
        call = self._call(handle)
        if call.state in (CallState.ENDING, CallState.ENDED) or call.pending_bye:
            return
        if call.role is _Role.UAC and call.state in (CallState.CALLING, CallState.EARLY):
            self.cancel(handle, now)
        elif call.role is _Role.UAS and call.state in (CallState.INCOMING, CallState.EARLY):
            self.reject(handle, status, None, now)
        else:
            self.bye(handle, now)

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
        if call.state is not CallState.CONFIRMED or call.dialog is None:
            raise InvalidCallState(f"can't re-INVITE call {handle} in state {call.state.value}")
        if call.reinvite_out is not None or call.reinvite_in is not None:
            raise InvalidCallState(f"can't re-INVITE call {handle}: an INVITE is pending")
        dest, transport = self._dialog_dest(call)
        request = call.dialog.create_request(
            "INVITE",
            via=self._via(transport),
            contact=self._contact(transport),
            body=_sdp_bytes(sdp),
            extra_headers=self._ua_headers(headers),
        )
        call.reinvite_out = self._start_client(
            request, dest, transport, call.handle, _Purpose.REINVITE, now
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
        body = _sdp_bytes(sdp)
        response = self._response(
            record, 200, None, to_tag=call.local_tag, headers=headers, body=body, contact=True
        )
        self._run_tx(record, record.tx.send_response(response, now), now)
        cseq = parse_cseq(record.tx.request.headers.get("CSeq") or "").seq
        call.ok_retransmit = _Retransmit(
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
        if call.state is not CallState.CONFIRMED or call.dialog is None:
            raise InvalidCallState(f"can't send INFO for call {handle} in state {call.state.value}")
        dest, transport = self._dialog_dest(call)
        request = call.dialog.create_request(
            "INFO",
            via=self._via(transport),
            body=body,
            content_type=content_type,
            extra_headers=self._ua_headers(()),
        )
        self._start_client(request, dest, transport, handle, _Purpose.INFO, now)

    # ================================================================ inside

    def _call(self, handle: str) -> _Call:
        call = self._calls.get(handle)
        if call is None:
            raise InvalidCallState(f"unknown call {handle!r}")
        return call

    def _uas_call(self, handle: str, verb: str) -> _Call:
        call = self._call(handle)
        if call.role is not _Role.UAS or call.state not in (CallState.INCOMING, CallState.EARLY):
            raise InvalidCallState(f"can't {verb} call {handle} in state {call.state.value}")
        return call

    def _pending_reinvite(self, handle: str) -> tuple[_Call, _TxRecord]:
        call = self._call(handle)
        record = self._server_tx.get(call.reinvite_in) if call.reinvite_in is not None else None
        if record is None or record.tx.state is not State.PROCEEDING:
            raise InvalidCallState(f"call {handle} has no re-INVITE waiting for an answer")
        return call, record

    def _invite_record(self, call: _Call) -> _TxRecord | None:
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

    def _schedule(self, owner: _TxRecord | _Call, deadline: float | None) -> None:
        if deadline == owner.scheduled:
            return
        owner.scheduled = deadline
        if deadline is not None:
            self._sequence += 1
            heapq.heappush(self._heap, (deadline, self._sequence, owner))

    def _schedule_call(self, call: _Call) -> None:
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
        record: _TxRecord,
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
                if status > 100 and to_tag is not None and not _has_tag(value):
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
    ) -> _TxRecord:
        """A server transaction for a new request (it starts with no timers)."""
        kind = Kind.INVITE_SERVER if request.method == "INVITE" else Kind.NON_INVITE_SERVER
        tx = Transaction(kind, request, reliable=transport != UDP, config=self.timers)
        dest = top_via.response_address(source) if transport == UDP else source
        record = _TxRecord(tx, key, dest, transport, handle, _Purpose.OTHER, top_via)
        self._server_tx[key] = record
        return record

    def _reply(
        self,
        record: _TxRecord,
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
        purpose: _Purpose,
        now: float,
    ) -> ClientKey:
        kind = Kind.INVITE_CLIENT if request.method == "INVITE" else Kind.NON_INVITE_CLIENT
        tx = Transaction(kind, request, reliable=transport != UDP, config=self.timers)
        branch = parse_via(request.headers.get_all("Via")[0]).branch or ""
        key = client_key(branch, request.method)
        record = _TxRecord(tx, key, dest, transport, handle, purpose)
        self._client_tx[key] = record
        self._run_tx(record, tx.start(now), now)
        return key

    def _run_tx(self, record: _TxRecord, outputs: list[Output], now: float) -> None:
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
            or not _is_allowed(addr[0], self.allowed_networks)
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
        if not _is_allowed(addr[0], self.allowed_networks):
            self._refuse_forbidden(request, top, addr, transport)
            return False
        if to.tag or request.method != "INVITE":
            return True  # makes no dialog: answered at once (or 481), nothing parked
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
        record: _TxRecord,
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
        if not _is_allowed(addr[0], self.allowed_networks):
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

    def _on_new_invite(
        self,
        request: SipRequest,
        record: _TxRecord,
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
        call = _Call(handle, _Role.UAS, request, call_id, local_tag, addr, transport)
        call.dialog = dialog
        call.invite_key = key
        call.parked_source = source_key(addr[0])
        self._parked.add(call.parked_source)
        record.handle = handle
        record.purpose = _Purpose.INVITE
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

    def _offer_of(
        self, request: SipRequest, record: _TxRecord, now: float
    ) -> tuple[bool, SdpSession | None]:
        """``(ok, offer)`` for an INVITE; not ok after answering 415/400 for a bad body."""
        if not request.body:
            return True, None
        content_type = _content_type(request.headers)
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
        self, record: _TxRecord, exc: SipParseError, now: float, *, reason: str | None = None
    ) -> None:
        """400 with a Warning that says what was wrong (RFC 3261 §20.43, code 399)."""
        host = format_host(self.advertised_addr[0])
        warning = ("Warning", f"399 {host} {_warning_text(str(exc))}")
        self._reply(record, 400, now, reason=reason, headers=[warning])
        self.stats.bad_requests_answered += 1

    def _on_cancel(
        self, request: SipRequest, key: ServerKey, top: Via, addr: Addr, transport: str, now: float
    ) -> None:
        invite_key: ServerKey = (*key[:-1], "INVITE")
        invite_record = self._server_tx.get(invite_key)
        if invite_record is None and not _is_allowed(addr[0], self.allowed_networks):
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
        if call.role is _Role.UAS and call.state in (CallState.INCOMING, CallState.EARLY):
            self._end(call, now)
            self._emit(CallCancelled(call.handle, CancelReason.CANCEL))

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
        if call.state is CallState.ANSWERED:
            call.state = CallState.CONFIRMED
        self._schedule_call(call)
        if call.pending_bye:
            call.pending_bye = False
            self._send_bye(call, now, ())

    def _on_in_dialog(
        self, call: _Call, request: SipRequest, record: _TxRecord, cseq: int, now: float
    ) -> None:
        dialog = call.dialog
        method = request.method
        if dialog is None or call.state is CallState.ENDED:
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

    def _on_bye(self, call: _Call, record: _TxRecord, now: float) -> None:
        if call.reinvite_in is not None:
            # RFC 3261 §15.1.2: "SHOULD generate a 487 ... for any pending requests".
            pending = self._server_tx.get(call.reinvite_in)
            if pending is not None and pending.tx.state is State.PROCEEDING:
                self._reply(pending, 487, now, to_tag=call.local_tag)
            call.reinvite_in = None
        self._reply(record, 200, now)
        if call.role is _Role.UAS and call.state in (CallState.INCOMING, CallState.EARLY):
            # A caller may BYE an early dialog (§15): treat it as a CANCEL.
            invite = self._invite_record(call)
            if invite is not None and invite.tx.state is State.PROCEEDING:
                self._reply(invite, 487, now, to_tag=call.local_tag)
            self._end(call, now)
            self._emit(CallCancelled(call.handle, CancelReason.BYE))
            return
        if call.state is CallState.ENDING:
            return  # both sides hung up at once; our BYE's outcome reports the end
        self._end(call, now)
        self._emit(CallEnded(call.handle, EndReason.REMOTE_BYE))

    def _on_reinvite(self, call: _Call, request: SipRequest, record: _TxRecord, now: float) -> None:
        if call.reinvite_out is not None:
            # RFC 3261 §14.2: our INVITE is in progress: "MUST return a 491".
            self._reply(record, 491, now, to_tag=call.local_tag)
            return
        if call.reinvite_in is not None or call.state is not CallState.CONFIRMED:
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
        record.purpose = _Purpose.REINVITE
        trying = self._response(record, 100, None)
        self._run_tx(record, record.tx.send_response(trying, now), now)
        call.reinvite_in = record.key
        self._emit(ReinviteReceived(call.handle, offer))

    def _on_info(self, call: _Call, request: SipRequest, record: _TxRecord, now: float) -> None:
        content_type = _content_type(request.headers)
        if content_type in DTMF_CONTENT_TYPES:
            dtmf = _parse_dtmf(content_type, request.body)
            if dtmf is None:
                self._reply(record, 400, now, reason="Bad Request (malformed DTMF)")
                return
            self._reply(record, 200, now, to_tag=call.local_tag)
            self._emit(DtmfReceived(call.handle, dtmf[0], dtmf[1]))
            return
        self._reply(record, 200, now, to_tag=call.local_tag)

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

    def _on_client_response(self, record: _TxRecord, response: SipResponse, now: float) -> None:
        call = self._calls.get(record.handle or "")
        if call is None:
            return
        if record.purpose is _Purpose.INVITE:
            self._on_invite_response(call, record, response, now)
        elif record.purpose is _Purpose.REINVITE:
            self._on_reinvite_response(call, record, response, now)
        elif record.purpose is _Purpose.BYE and response.status >= 200:
            if call.state is CallState.ENDING:
                self._end(call, now)
                self._emit(CallEnded(call.handle, EndReason.LOCAL_BYE, response.status))
        elif record.purpose is _Purpose.INFO and response.status in (408, 481):
            self._dialog_lost(call, response.status, now)

    def _on_invite_response(
        self, call: _Call, record: _TxRecord, response: SipResponse, now: float
    ) -> None:
        status = response.status
        if 200 <= status < 300 and (call.acks or call.state is CallState.ENDED):
            self._on_late_2xx(call, record, response, now)
            return
        if call.state is CallState.ENDED:
            return
        if status < 200:
            call.provisional_received = True
            if call.cancel_requested and not call.cancel_sent:
                self._send_cancel(call, now)
            if status > 100:
                if call.dialog is None and _has_tag(response.headers.get("To") or ""):
                    try:
                        self._set_dialog(call, Dialog.as_uac(record.tx.request, response))
                    except SipParseError as exc:
                        logger.debug("call %s: no early dialog: %s", call.handle, exc)
                call.state = CallState.EARLY
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

    def _on_late_2xx(
        self, call: _Call, record: _TxRecord, response: SipResponse, now: float
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

    def _on_invite_2xx(
        self, call: _Call, record: _TxRecord, response: SipResponse, now: float
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
        call.state = CallState.CONFIRMED
        self._schedule_call(call)
        if call.cancel_requested:
            # Our CANCEL lost the race with the answer: hang up at once.
            self._send_bye(call, now, ())
            self._end(call, now)
            self._emit(self._cancelled(call))
            return
        self._emit(CallAnswered(call.handle, self._sdp_of(response)))

    def _ack_and_bye_stray(
        self, call: _Call, record: _TxRecord, response: SipResponse, now: float
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
        self._start_client(bye, dest, transport, None, _Purpose.OTHER, now)

    def _retry_with_auth(
        self, call: _Call, record: _TxRecord, response: SipResponse, now: float
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
        self, call: _Call, cseq: int, body: bytes, auth: tuple[str, str] | None, now: float
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
            request, call.remote, transport, call.handle, _Purpose.INVITE, now
        )

    def _send_cancel(self, call: _Call, now: float) -> None:
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
        self._start_client(cancel, call.remote, call.transport, call.handle, _Purpose.CANCEL, now)
        # §9.1: without a final response 64*T1 after the CANCEL, give up on the INVITE.
        call.cancel_deadline = now + 64 * self.timers.t1
        self._schedule_call(call)

    def _send_bye(self, call: _Call, now: float, headers: tuple[tuple[str, str], ...]) -> None:
        dialog = call.dialog
        if dialog is None:
            raise InvalidCallState(f"call {call.handle} has no dialog to send BYE in")
        call.ok_retransmit = None
        dest, transport = self._dialog_dest(call)
        request = dialog.create_request(
            "BYE", via=self._via(transport), extra_headers=self._ua_headers(headers)
        )
        call.state = CallState.ENDING
        self._schedule_call(call)
        self._start_client(request, dest, transport, call.handle, _Purpose.BYE, now)

    def _on_reinvite_response(
        self, call: _Call, record: _TxRecord, response: SipResponse, now: float
    ) -> None:
        status = response.status
        if status < 200:
            return
        dialog = call.dialog
        if call.state is CallState.ENDED:
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

    def _on_tx_failed(self, record: _TxRecord, status: int, now: float) -> None:
        """A transaction timed out (408) or hit a transport error (503)."""
        call = self._calls.get(record.handle or "")
        if call is None or record.server:
            return  # a server transaction giving up (Timer H) needs no action
        reason = reason_phrase(status)
        if record.purpose is _Purpose.INVITE:
            if call.state in (CallState.CALLING, CallState.EARLY):
                self._end(call, now)
                failed = CallFailed(call.handle, status, reason)
                self._emit(self._cancelled(call) if call.cancel_requested else failed)
        elif record.purpose is _Purpose.REINVITE:
            call.reinvite_out = None
            self._emit(ReinviteRejected(call.handle, status, reason))
            self._dialog_lost(call, status, now)
        elif record.purpose is _Purpose.BYE:
            if call.state is CallState.ENDING:
                self._end(call, now)
                self._emit(CallEnded(call.handle, EndReason.LOCAL_BYE, status))
        elif record.purpose is _Purpose.INFO:
            self._dialog_lost(call, status, now)

    def _cancelled(self, call: _Call) -> CallFailed:
        status = 408 if call.setup_timed_out else 487
        return CallFailed(call.handle, status, reason_phrase(status))

    def _dialog_lost(self, call: _Call, status: int, now: float) -> None:
        if call.state in (CallState.ENDED, CallState.ENDING):
            return
        reason = {
            408: EndReason.REQUEST_TIMEOUT,
            481: EndReason.DIALOG_GONE,
        }.get(status, EndReason.TRANSPORT_ERROR)
        self._end(call, now)
        self._emit(CallEnded(call.handle, reason))

    # ---- call timers

    def _call_timeout(self, call: _Call, now: float) -> None:
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
            self._on_setup_timeout(call, now)
        if call.cancel_deadline is not None and call.cancel_deadline <= now:
            call.cancel_deadline = None
            if call.state in (CallState.CALLING, CallState.EARLY):
                self._end(call, now)
                self._emit(self._cancelled(call))
        if call.linger_until is not None and call.linger_until <= now:
            self._forget(call)
            return
        self._schedule_call(call)

    def _on_setup_timeout(self, call: _Call, now: float) -> None:
        if call.role is _Role.UAC and call.state in (CallState.CALLING, CallState.EARLY):
            call.setup_timed_out = True
            if not call.cancel_requested:
                self.cancel(call.handle, now)
            if not call.provisional_received:
                # Nothing to CANCEL yet (§9.1); stop waiting for the INVITE.
                self._end(call, now)
                self._emit(CallFailed(call.handle, 408, reason_phrase(408)))
        elif call.role is _Role.UAS and call.state in (CallState.INCOMING, CallState.EARLY):
            record = self._invite_record(call)
            if record is not None and record.tx.state is State.PROCEEDING:
                # 480 Temporarily Unavailable: "callee ... currently unavailable".
                self._reply(record, 480, now, to_tag=call.local_tag)
            self._end(call, now)
            self._emit(CallCancelled(call.handle, CancelReason.SETUP_TIMEOUT))

    def _on_ack_timeout(self, call: _Call, now: float) -> None:
        """RFC 3261 §13.3.1.4: no ACK after 64*T1: "the session SHOULD be
        terminated. This is accomplished with a BYE."."""
        if call.state not in (CallState.ANSWERED, CallState.CONFIRMED):
            return
        call.state = CallState.CONFIRMED
        self._send_bye(call, now, ())
        self._end(call, now)
        self._emit(CallEnded(call.handle, EndReason.ACK_TIMEOUT))

    # ---- call bookkeeping

    def _set_dialog(self, call: _Call, dialog: Dialog) -> None:
        call.dialog = dialog
        key = (dialog.call_id, dialog.local.tag or "", dialog.remote.tag or "")
        self._dialogs[key] = call.handle

    def _dialog_dest(self, call: _Call) -> tuple[Addr, str]:
        if call.dialog is None:
            raise InvalidCallState(f"call {call.handle} has no dialog")
        hop = call.dialog.next_hop()
        transport = hop.transport if hop.transport in TRANSPORTS else UDP
        if call.route_override is not None:
            return call.route_override, call.transport
        return (hop.param("maddr") or hop.host, hop.port_or_default), transport

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
        call.state = CallState.EARLY

    def _add_call(self, call: _Call, now: float) -> None:
        self._calls[call.handle] = call
        self._active += 1
        timeout = self.answer_timeout if call.role is _Role.UAS else self.setup_timeout
        call.setup_deadline = now + timeout
        self._schedule_call(call)

    def _unpark(self, call: _Call) -> None:
        if call.parked_source is not None:
            self._parked.remove(call.parked_source)
            call.parked_source = None

    def _end(self, call: _Call, now: float) -> None:
        """Mark the call ended; keep it for 64*T1 for late retransmissions."""
        if call.state is not CallState.ENDED:
            self._active -= 1
        call.state = CallState.ENDED
        call.setup_deadline = None
        self._unpark(call)
        call.ok_retransmit = None
        call.cancel_deadline = None
        call.pending_bye = False
        if call.dialog is not None:
            call.dialog.state = DialogState.TERMINATED
        call.linger_until = now + 64 * self.timers.t1
        self._schedule_call(call)

    def _forget(self, call: _Call) -> None:
        self._calls.pop(call.handle, None)
        call.scheduled = None
        if call.dialog is not None:
            dialog = call.dialog
            self._dialogs.pop(
                (dialog.call_id, dialog.local.tag or "", dialog.remote.tag or ""), None
            )

    def _sdp_of(self, message: SipMessage) -> SdpSession | None:
        if not message.body or _content_type(message.headers) != "application/sdp":
            return None
        try:
            return parse_sdp(message.body)
        except SipParseError as exc:
            self.stats.parse_errors += 1
            logger.debug("unparseable SDP: %s", exc)
            return None


def _top_via(message: SipMessage) -> Via:
    vias = message.headers.get_all("Via")
    if not vias:
        raise InvalidHeader("Via", message.headers.get("Via") or "", "empty value")
    return parse_via(vias[0])


def _sdp_bytes(sdp: SdpSession | bytes) -> bytes:
    return sdp.serialize() if isinstance(sdp, SdpSession) else sdp


def _has_tag(value: str) -> bool:
    try:
        return parse_name_addr(value, "To").tag is not None
    except SipError:
        return ";tag=" in value.lower()


def _first_line(message: SipMessage) -> str:
    if isinstance(message, SipRequest):
        return f"{message.method} {message.uri} ({message.headers.get('Call-ID')})"
    return f"{message.status} {message.reason} ({message.headers.get('CSeq')})"
