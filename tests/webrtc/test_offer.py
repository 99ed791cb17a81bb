"""Offer checks: what aiortc is never asked to run."""

from __future__ import annotations

import asyncio

import pytest
from aiortc import RTCPeerConnection

from callstream.webrtc.offer import OFFER_MAX_BYTES, OfferError, check_offer


async def browser_like_offer(kind: str = "audio") -> str:
    pc = RTCPeerConnection()
    pc.addTransceiver(kind, direction="sendrecv")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = str(pc.localDescription.sdp)
    await pc.close()
    return sdp


def test_an_audio_offer_passes_with_its_telephone_event() -> None:
    sdp = asyncio.run(browser_like_offer())
    sdp = sdp.replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 "
                      "telephone-event/48000").replace("RTP/SAVPF 96", "RTP/SAVPF 96 101")
    offer = check_offer(sdp)
    assert offer.sdp == sdp
    assert offer.dtmf_payload_types == frozenset({101})


@pytest.mark.parametrize(("sdp", "why"), [
    ("hello", "not SDP"),
    ("v=0\r\nm=audio x RTP/AVP 0\r\n", "cannot be parsed"),
    ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n", "exactly one audio"),
    ("v=0" + "x" * OFFER_MAX_BYTES, "over"),
])
def test_garbage_is_refused_with_a_reason(sdp: str, why: str) -> None:
    with pytest.raises(OfferError, match=why):
        check_offer(sdp)


def test_an_offer_without_opus_ice_or_fingerprint_is_refused() -> None:
    sdp = asyncio.run(browser_like_offer())
    no_opus = sdp.replace("opus", "speex")
    with pytest.raises(OfferError, match="no Opus"):
        check_offer(no_opus)
    no_ice = "\r\n".join(line for line in sdp.split("\r\n") if not line.startswith("a=ice-"))
    with pytest.raises(OfferError, match="ICE"):
        check_offer(no_ice)
    no_dtls = "\r\n".join(line for line in sdp.split("\r\n")
                          if not line.startswith("a=fingerprint"))
    with pytest.raises(OfferError, match="fingerprint"):
        check_offer(no_dtls)


def test_a_video_only_offer_is_refused() -> None:
    with pytest.raises(OfferError, match="exactly one audio"):
        check_offer(asyncio.run(browser_like_offer("video")))
