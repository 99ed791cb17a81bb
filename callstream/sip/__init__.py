"""SIP for callstream: a sans-I/O user agent core plus a thin asyncio transport.

Layers, bottom up (each its own module, each usable alone):

* :mod:`~callstream.sip.message`, :mod:`~callstream.sip.headers`,
  :mod:`~callstream.sip.uri`, :mod:`~callstream.sip.sdp` - wire formats;
* :mod:`~callstream.sip.framing` - TCP stream framing;
* :mod:`~callstream.sip.transaction` - RFC 3261 §17 state machines and timers;
* :mod:`~callstream.sip.admission` - who may start new work, and how much;
* :mod:`~callstream.sip.dialog`, :mod:`~callstream.sip.digest`,
  :mod:`~callstream.sip.offer_answer` - dialogs, authentication, SDP negotiation;
* :mod:`~callstream.sip.endpoint` - :class:`SipEndpoint`, the user agent the
  call layer drives, reporting :mod:`~callstream.sip.events`;
* :mod:`~callstream.sip.transport` - :class:`SipTransport`, sockets and a timer.
"""

from __future__ import annotations

from .admission import AdmissionLimits, ForbiddenAction, RefusalReason
from .digest import Credentials, DigestServer
from .endpoint import (
    ALLOW_ALL,
    DEFAULT_ALLOWED_NETWORKS,
    Datagram,
    DialogPhase,
    EndpointStats,
    SipEndpoint,
)
from .events import (
    CallAnswered,
    CallCancelled,
    CallFailed,
    CallProgress,
    CancelReason,
    DialogEnded,
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
from .exceptions import InvalidCallState, NegotiationFailed, SipError, SipParseError
from .offer_answer import MediaParams, accept_answer, answer_offer, build_offer, is_hold
from .sdp import Direction, SdpSession, parse_sdp
from .transaction import TimerConfig
from .transport import SipTransport

__all__ = [
    "ALLOW_ALL",
    "DEFAULT_ALLOWED_NETWORKS",
    "AdmissionLimits",
    "CallAnswered",
    "CallCancelled",
    "CallFailed",
    "CallProgress",
    "CancelReason",
    "Credentials",
    "Datagram",
    "DialogEnded",
    "DialogPhase",
    "DigestServer",
    "Direction",
    "DtmfReceived",
    "EndReason",
    "EndpointStats",
    "ForbiddenAction",
    "IncomingCall",
    "InvalidCallState",
    "MediaParams",
    "NegotiationFailed",
    "RefusalReason",
    "ReinviteAnswered",
    "ReinviteReceived",
    "ReinviteRejected",
    "RequestForbidden",
    "RequestRefused",
    "SdpSession",
    "SipEndpoint",
    "SipError",
    "SipEvent",
    "SipParseError",
    "SipTransport",
    "TimerConfig",
    "accept_answer",
    "answer_offer",
    "build_offer",
    "is_hold",
    "parse_sdp",
]
