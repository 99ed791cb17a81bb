"""The leg: one SIP dialog's audio, from the first offer to the last packet.

A :class:`Leg` is what the switch (the server's calls) and the caller
(``callstream call``) both hold for a call: an RTP endpoint in a media hub, the
SDP we have said in the dialog, and the stream we agreed on. Everything that
joins SIP's offer/answer to the media runs here, once:

* **open** binds the RTP/RTCP pair and joins the pacer; an outgoing leg starts
  with no remote address, so it sends nothing before the answer;
* **offer** and **accept** (we offer: INVITE, then the 200 OK's answer) and
  **answer** (the peer offers: INVITE or re-INVITE) negotiate, and **apply** what
  was agreed: a new codec replaces the RTP session, a new address re-points it,
  and the direction decides whether we send (RFC 3264 §6.1: hold). What arrives is
  taken in every direction: a peer that sends while it said it would not is only
  early, and its audio is the call's;
* **renegotiate** answers a re-INVITE, or refuses it with 488 and keeps the media;
* **close** sends RTCP BYE and releases ports and hub.

Our SDP's ``o=`` line keeps one session id for the dialog, and its version goes
up by one each time what we say changes, and only then (RFC 3264 §8): a hold
answer after a plain one is version 2, the same answer again stays 2.

Driving the SIP transport: the leg, the switch and the caller give every
endpoint command inside ``with signaling.command() as now:``. The block reads the
clock the command runs on and sends what the command queued when it closes, so
no path can forget a ``flush()``; inside an event callback (already in a flush)
it sends nothing itself and the outer flush drains it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from callstream.calls.features import LegMedia
from callstream.media.codecs import get_codec
from callstream.media.hub import MediaHub
from callstream.media.jitter import JITTER_PREFETCH_MS
from callstream.media.latch import StrictRtp
from callstream.media.session import RtpSession
from callstream.media.transport import (
    EventHandler,
    Pacer,
    PortAllocator,
    RtpEndpoint,
    open_rtp_endpoint,
)
from callstream.sip import endpoint as sip
from callstream.sip.exceptions import NegotiationFailed, SipError
from callstream.sip.offer_answer import (
    SUPPORTED_CODECS,
    Codec,
    MediaParams,
    accept_answer,
    answer_offer,
    build_offer,
)
from callstream.sip.sdp import Direction, SdpSession

log = logging.getLogger(__name__)

#: Our directions that let us send RTP (RFC 3264 §6.1).
SENDING = frozenset({Direction.SENDRECV, Direction.SENDONLY})
#: ``o=`` sess-id is drawn below this, once per dialog (any number unique to the
#: dialog will do, RFC 4566 §5.2; 31 bits keep strict 32-bit parsers happy).
MAX_SESSION_ID = 2**31


class Signaling(Protocol):
    """What a leg needs of the SIP side: :class:`~callstream.sip.transport.SipTransport`
    (or, in tests, two endpoints on a fake wire)."""

    @property
    def endpoint(self) -> sip.SipEndpoint: ...

    def command(self) -> contextlib.AbstractContextManager[float]:
        """``with signaling.command() as now:`` endpoint commands, sent on exit."""
        ...


@dataclass(frozen=True, slots=True)
class MediaOptions:
    """How a leg runs its media: the server's settings or the caller's options.

    Attributes:
        host: Our RTP address (bound, and named in ``c=`` and ``o=``).
        codecs: What we can run, in our order of preference (offers list them so).
        strict_rtp: Which RTP sources are accepted (:mod:`callstream.media.latch`).
        jitter_prefetch_ms: The jitter buffer's depth.
        send_silence_when_idle: Send comfort silence on ticks with nothing to play.
    """

    host: str
    codecs: tuple[Codec, ...] = SUPPORTED_CODECS
    strict_rtp: StrictRtp = StrictRtp.LEARN
    jitter_prefetch_ms: int = JITTER_PREFETCH_MS
    send_silence_when_idle: bool = False


class SdpOrigin:
    """Our ``o=`` line in one dialog: a fixed session id, a version bumped on change.

    RFC 3264 §8: the new SDP's "o=" line "MUST be identical to that in the previous
    SDP, except that the version in the origin field MUST increment by one"; and "if
    the version in the origin line does not increment, the SDP MUST be identical to
    the SDP with that version number". So an unchanged answer keeps its version.
    """

    def __init__(self, session_id: int) -> None:
        self.session_id = session_id
        self.version = 0
        self._said: SdpSession | None = None

    def stamp(self, sdp: SdpSession) -> SdpSession:
        """``sdp`` with our ``o=`` sess-id and the version it deserves."""
        body = dataclasses.replace(sdp, origin=dataclasses.replace(
            sdp.origin, session_id=str(self.session_id), session_version=0))
        if body != self._said:
            self._said = body
            self.version += 1
        return dataclasses.replace(body, origin=dataclasses.replace(
            body.origin, session_version=self.version))


class Leg:
    """One dialog's RTP media and the SDP state around it.

    Args:
        name: The leg's name in its hub (the call leg id, or the caller's ``"caller"``).
        hub: The hub the leg's audio passes through; the leg closes it.
        rtp: The bound RTP endpoint.
        options: How the media runs.
        origin: Our ``o=`` line in the dialog.
    """

    def __init__(self, name: str, hub: MediaHub, rtp: RtpEndpoint, options: MediaOptions,
                 origin: SdpOrigin) -> None:
        self.name = name
        self.hub = hub
        self.rtp = rtp
        self.options = options
        self.origin = origin
        #: What was agreed last; ``None`` until an answer (outgoing legs).
        self.params: MediaParams | None = None
        #: The SIP endpoint's handle of the dialog ("" until the INVITE is sent).
        self.handle = ""
        self._offer: SdpSession | None = None
        #: Whether an offer/answer has completed (later offers keep the codec).
        self._agreed = False

    @classmethod
    async def open(
        cls,
        name: str,
        hub: MediaHub,
        options: MediaOptions,
        *,
        ports: PortAllocator,
        pacer: Pacer,
        on_event: EventHandler | None = None,
        params: MediaParams | None = None,
        rng: random.Random | None = None,
    ) -> Leg:
        """Bind the leg's RTP pair; with ``params`` (an offer we will answer) it runs them.

        Raises:
            PortsExhaustedError: No RTP port pair could be bound.
        """
        rng = rng or random.SystemRandom()
        session = _session(name, options, params)
        hub.add_leg(name, session.codec.sample_rate,
                    send_silence_when_idle=options.send_silence_when_idle)
        try:
            rtp = await open_rtp_endpoint(session, hub, name, host=options.host, ports=ports,
                                          pacer=pacer, on_event=on_event)
        except BaseException:
            hub.close()
            raise
        leg = cls(name, hub, rtp, options, SdpOrigin(rng.randrange(1, MAX_SESSION_ID)))
        leg.params = params
        return leg

    @property
    def session(self) -> RtpSession:
        """The running RTP session (replaced when the codec changes)."""
        return self.rtp.session

    @property
    def sending(self) -> bool:
        """Whether the agreed direction lets us send (False on hold)."""
        return self.session.sending

    def media(self) -> LegMedia:
        """Where the leg's audio is, for taps."""
        session = self.session
        return LegMedia(hub=self.hub, leg=self.name, codec=session.codec.name,
                        sample_rate=session.codec.sample_rate, payload_type=session.payload_type)

    # -- offer/answer -------------------------------------------------------------

    def offer(self, codecs: Sequence[Codec] | None = None) -> SdpSession:
        """Our offer: ``codecs`` (default: all we run) in that order."""
        self._offer = self.origin.stamp(build_offer(
            local_addr=self.options.host, local_port=self.rtp.local_port, session_id=0,
            codecs=codecs or self.options.codecs,
        ))
        return self._offer

    def accept(self, answer: SdpSession | None) -> MediaParams:
        """Run what the peer answered to our offer.

        Raises:
            NegotiationFailed: No answer, or one we can't use (hang up).
        """
        if self._offer is None:
            raise NegotiationFailed("no offer of ours to answer")
        if answer is None:
            raise NegotiationFailed("the 200 OK carries no SDP answer")
        params = accept_answer(self._offer, answer, supported=self.options.codecs)
        self._apply(params)
        self._agreed = True
        return params

    def answer(self, offer: SdpSession, prefer: Sequence[Codec] | None = None) -> SdpSession:
        """Answer the peer's offer with what we run, and run it.

        A re-offer (the leg already runs a codec) is answered with the running
        codec, so taps and streams keep their format.

        Args:
            offer: The peer's offer.
            prefer: Our choice among the offered codecs; ``None`` takes the
                offerer's order.

        Raises:
            NegotiationFailed: No usable audio or no common codec (answer 488).
        """
        supported: Sequence[Codec] = self.options.codecs
        if self._agreed:
            supported = [c for c in supported if self._runs(c)]
        answer, params = answer_offer(
            offer, local_addr=self.options.host, local_port=self.rtp.local_port,
            session_id=0, supported=supported, prefer=prefer,
        )
        self._apply(params)
        self._agreed = True
        return self.origin.stamp(answer)

    def _runs(self, codec: Codec) -> bool:
        params = self.params
        return params is not None and (codec.name, codec.clock_rate) == (
            params.codec, params.clock_rate)

    def _apply(self, params: MediaParams) -> None:
        """Run ``params``: a new session for a new format, else re-point the running one."""
        session = self.session
        if (params.codec, params.payload_type, params.telephone_event_pt) != (
                session.codec.name, session.payload_type, session.dtmf_payload_type):
            fresh = _session(self.name, self.options, params)
            if fresh.codec.sample_rate != session.codec.sample_rate:
                self.hub.remove_leg(self.name)
                self.hub.add_leg(self.name, fresh.codec.sample_rate,
                                 send_silence_when_idle=self.options.send_silence_when_idle)
            self.rtp.session = fresh
            session = fresh
        else:
            session.set_remote_address((params.remote_addr, params.remote_port))
        session.set_sending(params.direction in SENDING)
        if self.params is not None and (params.direction is not self.params.direction):
            log.info("%s: media %s (the peer's SDP says %s)", self.name, params.direction.value,
                     "hold" if params.remote_hold else "resume")
        self.params = params

    # -- SIP ----------------------------------------------------------------------

    def renegotiate(self, signaling: Signaling, event: sip.ReinviteReceived) -> None:
        """Answer the peer's re-INVITE (hold, resume, a new address), or refuse it with
        488 and keep the media as it is."""
        with signaling.command() as now:
            try:
                if event.offer is None:
                    raise NegotiationFailed("the re-INVITE carries no offer")
                answer = self.answer(event.offer)
            except SipError as exc:
                log.info("%s: re-INVITE refused: %s", self.name, exc)
                signaling.endpoint.reject_reinvite(event.handle, 488, "Not Acceptable Here", now)
            else:
                signaling.endpoint.answer_reinvite(event.handle, answer.serialize(), now)

    def set_send_silence_when_idle(self, enabled: bool) -> None:
        """Comfort silence on ticks with nothing to play (``send_silence_when_idle``)."""
        self.options = dataclasses.replace(self.options, send_silence_when_idle=enabled)
        self.hub.set_send_silence_when_idle(self.name, enabled)

    def close(self) -> None:
        """RTCP BYE, sockets and ports released, hub closed."""
        self.rtp.close()
        self.hub.close()


def _session(name: str, options: MediaOptions, params: MediaParams | None) -> RtpSession:
    if params is None:
        # No answer yet: our first codec, no remote address, so nothing is sent.
        first = options.codecs[0]
        return RtpSession(get_codec(first.name, first.clock_rate), name=name,
                          strict_rtp=options.strict_rtp,
                          jitter_prefetch_ms=options.jitter_prefetch_ms)
    session = RtpSession(
        get_codec(params.codec, params.clock_rate), payload_type=params.payload_type,
        dtmf_payload_type=params.telephone_event_pt,
        remote_address=(params.remote_addr, params.remote_port), name=name,
        strict_rtp=options.strict_rtp, jitter_prefetch_ms=options.jitter_prefetch_ms,
    )
    session.set_sending(params.direction in SENDING)
    return session
