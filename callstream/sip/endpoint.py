"""The SIP user agent: the one object the call layer talks to (sans-I/O).

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
:class:`CallCancelled`, :class:`DialogEnded`, :class:`ReinviteReceived`,
:class:`ReinviteAnswered`, :class:`ReinviteRejected`, :class:`DtmfReceived`,
:class:`RequestForbidden`. Every call ends with exactly one of
:class:`CallFailed` (an outgoing call never answered, our own :meth:`cancel`
included), :class:`CallCancelled` (an incoming call the caller gave up on, or
nobody answered) or :class:`DialogEnded` (an answered call); the one exception
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
* :meth:`drain` (for ``callstream drain``): from then on a new INVITE gets a
  stateless 503 (:class:`RequestRefused`) and an OPTIONS outside a dialog 503,
  which takes the node out of a probing SIP front; calls already up go on.
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

Layout
------

The endpoint is one object playing both roles; its code is split by role, in
layers of one class (:mod:`~callstream.sip.useragent` says why):

* :mod:`~callstream.sip.useragent` - the plumbing: outputs, timers,
  transactions, message building, intake of every message;
* :mod:`~callstream.sip.in_dialog` - the established call, whoever placed
  it: BYE, re-INVITE, INFO, the ACK and 2xx retransmission;
* :mod:`~callstream.sip.uas` - incoming calls: admission, ring, answer,
  reject, CANCEL received, answer timeout;
* :mod:`~callstream.sip.uac` - outgoing calls: INVITE, digest retry, forks,
  CANCEL, setup timeout;
* :mod:`~callstream.sip.records` - what it keeps per call and per transaction;
* this module - :class:`SipEndpoint`, the two roles joined, and
  :meth:`SipEndpoint.hangup`, the one command that needs both.
"""

from __future__ import annotations

from .events import (
    Addr,
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
from .records import Datagram, DialogPhase, EndpointStats, Role
from .uac import UserAgentClient
from .uas import UserAgentServer
from .useragent import ALLOW_ALL, ALLOWED_METHODS, DEFAULT_ALLOWED_NETWORKS

__all__ = [
    "ALLOWED_METHODS",
    "ALLOW_ALL",
    "DEFAULT_ALLOWED_NETWORKS",
    "Addr",
    "CallAnswered",
    "CallCancelled",
    "CallFailed",
    "CallProgress",
    "CancelReason",
    "Datagram",
    "DialogEnded",
    "DialogPhase",
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


class SipEndpoint(UserAgentServer, UserAgentClient):
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

    def hangup(self, handle: str, now: float, *, status: int = 603) -> None:
        """End a call whatever its state: CANCEL, reject with ``status``, or BYE.

        Calls already ending or ended are left alone.
        """
        call = self._call(handle)
        if call.phase in (DialogPhase.ENDING, DialogPhase.ENDED) or call.pending_bye:
            return
        if call.role is Role.UAC and call.phase in (DialogPhase.CALLING, DialogPhase.EARLY):
            self.cancel(handle, now)
        elif call.role is Role.UAS and call.phase in (DialogPhase.INCOMING, DialogPhase.EARLY):
            self.reject(handle, status, None, now)
        else:
            self.bye(handle, now)
