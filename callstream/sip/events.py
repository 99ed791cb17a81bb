"""Events the SIP endpoint reports to the call layer.

Each is a frozen, slotted dataclass; ``handle`` names the call (the string
:class:`~callstream.sip.endpoint.SipEndpoint` returned or reported first).
Every call ends with exactly one terminal event:

* :class:`CallFailed` - an outgoing call that was never answered;
* :class:`CallCancelled` - an incoming call that ended before it was answered
  by the caller's doing (or the setup timeout), not ours;
* :class:`DialogEnded` - an answered call.

Calls we end ourselves before an answer (``reject``) produce no event;
``cancel`` still produces ``CallFailed(487)``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .admission import RefusalReason
from .message import Headers
from .sdp import SdpSession

__all__ = [
    "Addr",
    "CallAnswered",
    "CallCancelled",
    "CallFailed",
    "CallProgress",
    "CancelReason",
    "DialogEnded",
    "DtmfReceived",
    "EndReason",
    "IncomingCall",
    "ReinviteAnswered",
    "ReinviteReceived",
    "ReinviteRejected",
    "RequestForbidden",
    "RequestRefused",
    "SipEvent",
]

Addr = tuple[str, int]


class SipEvent:
    """Base class of the events ``SipEndpoint.events_received()`` returns."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class IncomingCall(SipEvent):
    """A new INVITE arrived (100 Trying already sent).

    Answer it with :meth:`SipEndpoint.ring` / :meth:`~SipEndpoint.answer` /
    :meth:`~SipEndpoint.reject`.
    """

    handle: str
    call_id: str
    request_uri: str
    from_uri: str
    from_display: str | None
    to_uri: str
    offer: SdpSession | None
    source: Addr
    transport: str
    headers: Headers


@dataclass(frozen=True, slots=True)
class CallProgress(SipEvent):
    """Our INVITE got a provisional response above 100 (180, 183...)."""

    handle: str
    status: int
    reason: str
    sdp: SdpSession | None


@dataclass(frozen=True, slots=True)
class CallAnswered(SipEvent):
    """Our INVITE got a 2xx; the ACK has been sent."""

    handle: str
    sdp: SdpSession | None


@dataclass(frozen=True, slots=True)
class CallFailed(SipEvent):
    """Our INVITE ended without an answer: a 3xx-6xx, a timeout (408) or a
    transport error (503), or our own CANCEL (487)."""

    handle: str
    status: int
    reason: str


class CancelReason(enum.Enum):
    """Why an incoming call ended before it was answered."""

    CANCEL = "caller sent CANCEL"
    BYE = "caller sent BYE on the early dialog"
    SETUP_TIMEOUT = "not answered in time"


@dataclass(frozen=True, slots=True)
class CallCancelled(SipEvent):
    """An incoming call ended before it was answered: the caller gave up
    (487 sent to its INVITE) or nobody answered within the setup timeout
    (480 sent)."""

    handle: str
    reason: CancelReason = CancelReason.CANCEL


class EndReason(enum.Enum):
    """Why an answered call ended."""

    REMOTE_BYE = "remote BYE"
    LOCAL_BYE = "local BYE"
    ACK_TIMEOUT = "no ACK for our 2xx"
    REQUEST_TIMEOUT = "in-dialog request timed out"
    DIALOG_GONE = "peer no longer knows the dialog"
    TRANSPORT_ERROR = "transport error"


@dataclass(frozen=True, slots=True)
class DialogEnded(SipEvent):
    """An answered call is over.

    Attributes:
        reason: Why.
        status: The final status of our BYE (LOCAL_BYE), else ``None``.
    """

    handle: str
    reason: EndReason
    status: int | None = None


@dataclass(frozen=True, slots=True)
class ReinviteReceived(SipEvent):
    """The peer sent a re-INVITE; answer with :meth:`SipEndpoint.answer_reinvite`
    or :meth:`~SipEndpoint.reject_reinvite`. ``offer`` is ``None`` when the
    peer wants our offer in the 200."""

    handle: str
    offer: SdpSession | None


@dataclass(frozen=True, slots=True)
class ReinviteAnswered(SipEvent):
    """Our re-INVITE got a 2xx (ACK sent)."""

    handle: str
    sdp: SdpSession | None


@dataclass(frozen=True, slots=True)
class ReinviteRejected(SipEvent):
    """Our re-INVITE got a 300-699 or timed out; the old session stands."""

    handle: str
    status: int
    reason: str


@dataclass(frozen=True, slots=True)
class DtmfReceived(SipEvent):
    """An INFO carried a DTMF digit (``0-9 * # A-D``)."""

    handle: str
    digit: str
    duration_ms: int | None


@dataclass(frozen=True, slots=True)
class RequestForbidden(SipEvent):
    """A request from outside ``allowed_networks`` got one stateless 403, or
    nothing (``ForbiddenAction.DROP``)."""

    method: str
    source: Addr


@dataclass(frozen=True, slots=True)
class RequestRefused(SipEvent):
    """Admission refused a new request from an allowed source, statelessly
    (:mod:`~callstream.sip.admission`): 503 over the rate limit, 486 over the
    parked-call cap, 401 again for wrong credentials."""

    method: str
    source: Addr
    reason: RefusalReason
