"""What the SIP user agent keeps: per call, per transaction, and what it sends.

Plain records shared by :mod:`~callstream.sip.useragent`, :mod:`~callstream.sip.uas`
and :mod:`~callstream.sip.uac`; they hold state and decide nothing.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .dialog import Dialog
from .digest import Challenge, Credentials
from .events import Addr
from .headers import NameAddr, Via
from .message import SipRequest
from .transaction import ClientKey, ServerKey, TimerConfig, Transaction

__all__ = [
    "TCP",
    "TRANSPORTS",
    "UDP",
    "CallRecord",
    "Datagram",
    "DialogPhase",
    "EndpointStats",
    "Purpose",
    "Retransmit",
    "Role",
    "TxRecord",
]

UDP = "udp"
TCP = "tcp"
TRANSPORTS = (UDP, TCP)


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


class DialogPhase(enum.Enum):
    """Where a call's INVITE dialog stands, from the first INVITE to its end.

    Finer than :class:`~callstream.sip.dialog.DialogState` (RFC 3261 §12's
    early/confirmed/terminated): it also covers the time before any dialog
    exists, a 2xx waiting for its ACK and our BYE in flight. Not the call
    layer's ``CallState`` (parked, answered, bridged...), which sits above it.
    """

    INCOMING = "incoming"  # UAS: INVITE received, 100 sent
    CALLING = "calling"  # UAC: INVITE sent
    EARLY = "early"  # 18x sent (UAS) or received (UAC)
    ANSWERED = "answered"  # UAS: 2xx sent, waiting for the ACK
    CONFIRMED = "confirmed"  # the call is up
    ENDING = "ending"  # our BYE is out
    ENDED = "ended"


class Role(enum.Enum):
    """Which side of the call we are: we sent the INVITE (UAC) or received it."""

    UAC = "uac"
    UAS = "uas"


class Purpose(enum.Enum):
    """What a transaction is for, so its outcome reaches the right handler."""

    INVITE = "invite"
    REINVITE = "reinvite"
    CANCEL = "cancel"
    BYE = "bye"
    INFO = "info"
    OTHER = "other"


class Retransmit:
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


class CallRecord:
    """Everything the user agent keeps for one call, either role."""

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
        "phase",
        "provisional_received",
        "reinvite_in",
        "reinvite_out",
        "remote",
        "role",
        "route_override",
        "scheduled",
        "setup_deadline",
        "setup_timed_out",
        "transport",
        "uac_from",
        "uac_to",
    )

    def __init__(
        self,
        handle: str,
        role: Role,
        invite: SipRequest,
        call_id: str,
        local_tag: str,
        remote: Addr,
        transport: str,
    ) -> None:
        self.handle = handle
        self.call_id = call_id
        self.role = role
        self.phase = DialogPhase.INCOMING if role is Role.UAS else DialogPhase.CALLING
        self.invite = invite
        self.invite_key: ServerKey | None = None
        self.local_tag = local_tag
        self.remote = remote
        self.transport = transport
        self.dialog: Dialog | None = None
        self.ok_retransmit: Retransmit | None = None
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


class TxRecord:
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
        purpose: Purpose,
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
