"""The browser's SDP offer, checked before any peer connection is made for it.

A browser's audio-only offer is 2-5 KB; :data:`OFFER_MAX_BYTES` leaves room for
many candidates and still bounds what the parser sees. aiortc's SDP parser does
the parsing (it is the one that will run the offer); anything it cannot read, or
an offer without an audio stream we can run (Opus, ICE credentials, a DTLS
fingerprint), is an :class:`OfferError` naming what is wrong (the route answers 400).
"""

from __future__ import annotations

from dataclasses import dataclass

#: Bytes an offer may have (the route answers 413 beyond).
OFFER_MAX_BYTES = 16 * 1024
#: Media sections an offer may have (an audio call needs one; a data channel may follow).
OFFER_MAX_MEDIA = 4


class OfferError(ValueError):
    """The offer cannot be answered; the message says why."""


@dataclass(frozen=True, slots=True)
class Offer:
    """An offer we can answer.

    Attributes:
        sdp: The offer's text.
        dtmf_payload_types: Payload types the offer maps to telephone-event.
    """

    sdp: str
    dtmf_payload_types: frozenset[int]


def check_offer(sdp: str) -> Offer:
    """Parse and check a browser's offer.

    Raises:
        OfferError: Too large, unparsable, or no audio stream we can run.
    """
    if len(sdp.encode()) > OFFER_MAX_BYTES:
        raise OfferError(f"the offer is over {OFFER_MAX_BYTES} bytes")
    if not sdp.startswith("v=0"):
        raise OfferError("the body is not SDP: it must start with v=0")
    # Here, not at the top: importing aiortc takes 0.2 s of CPU, which a server pays on its
    # first browser call instead of at every start.
    from aiortc.sdp import SessionDescription

    try:
        session = SessionDescription.parse(sdp)
    except Exception as exc:  # the parser asserts and indexes its way through bad input
        raise OfferError(f"the SDP cannot be parsed ({type(exc).__name__})") from None
    if len(session.media) > OFFER_MAX_MEDIA:
        raise OfferError(f"the offer has more than {OFFER_MAX_MEDIA} media sections")
    audio = [m for m in session.media if m.kind == "audio"]
    if len(audio) != 1:
        raise OfferError("the offer must have exactly one audio media section")
    media = audio[0]
    names = {codec.mimeType.lower() for codec in media.rtp.codecs}
    if "audio/opus" not in names:
        raise OfferError("the offer's audio has no Opus")
    ice = media.ice  # the parser copies session-level lines into each section
    if ice is None or not ice.usernameFragment or not ice.password:
        raise OfferError("the offer has no ICE credentials (a=ice-ufrag, a=ice-pwd)")
    dtls = media.dtls
    if dtls is None or not dtls.fingerprints:
        raise OfferError("the offer has no DTLS fingerprint (a=fingerprint)")
    dtmf = frozenset(codec.payloadType for codec in media.rtp.codecs
                     if codec.mimeType.lower() == "audio/telephone-event"
                     and codec.payloadType is not None)
    return Offer(sdp, dtmf)
