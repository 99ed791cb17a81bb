"""The leg: offer/answer, hold, re-INVITEs and our o= line, on two SIP endpoints on a fake
wire with real RTP sockets on loopback."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator

import pytest

from callstream.media.hub import MediaHub
from callstream.media.transport import Pacer, PortAllocator
from callstream.sip import endpoint as sip
from callstream.sip.exceptions import NegotiationFailed
from callstream.sip.offer_answer import G722, PCMA, PCMU, build_offer
from callstream.sip.sdp import Direction, SdpSession
from callstream.telephony.leg import Leg, MediaOptions, SdpOrigin
from tests.sip.helpers import UAS_ADDR, UacUasPair
from tests.telephony.helpers import WireSide

HOST = "127.0.0.1"


@pytest.fixture
def pacer() -> Iterator[Pacer]:
    pacer = Pacer()
    yield pacer
    pacer.stop()


@pytest.fixture
async def legs(pacer: Pacer) -> AsyncIterator[tuple[Leg, Leg]]:
    """An offering leg (ours) and an answering one (the peer's), not yet negotiated."""
    ports = PortAllocator(42000, 42999)
    ours = await Leg.open("ours", MediaHub("ours"), MediaOptions(HOST), ports=ports,
                          pacer=pacer)
    theirs = await Leg.open("theirs", MediaHub("theirs"), MediaOptions(HOST), ports=ports,
                            pacer=pacer)
    yield ours, theirs
    ours.close()
    theirs.close()


def _version(sdp: SdpSession) -> tuple[str, int]:
    return sdp.origin.session_id, sdp.origin.session_version


def test_origin_keeps_the_session_and_bumps_the_version_only_on_change() -> None:
    """RFC 3264 §8: one sess-id for the dialog; sess-version +1 on each change, only then."""
    origin = SdpOrigin(1234)
    plain = build_offer(local_addr=HOST, local_port=4000, session_id=99, session_version=7)
    held = build_offer(local_addr=HOST, local_port=4000, session_id=5, session_version=1,
                       direction=Direction.SENDONLY)
    assert [_version(origin.stamp(sdp)) for sdp in (plain, plain, held, held, plain)] == [
        ("1234", 1), ("1234", 1), ("1234", 2), ("1234", 2), ("1234", 3)]


async def test_offer_answer_and_a_hold_both_ways(legs: tuple[Leg, Leg]) -> None:
    """We offer, the peer answers; the peer holds us (sendonly): we answer recvonly and
    stop sending; it resumes: we send again. Our o= version follows our SDP's changes."""
    ours, theirs = legs
    answer = theirs.answer(ours.offer())
    params = ours.accept(answer)
    assert (params.codec, params.remote_port) == ("PCMU", theirs.rtp.local_port)
    assert ours.sending and theirs.sending
    assert ours.session.remote_address == (HOST, theirs.rtp.local_port)

    hold = dataclasses.replace(theirs.offer(), media=tuple(
        dataclasses.replace(m, attributes=tuple(
            ("sendonly", None) if name == "sendrecv" else (name, value)
            for name, value in m.attributes)) for m in theirs.offer().media))
    first = ours.answer(hold)
    assert first.media[0].attributes[-1] == ("recvonly", None)
    assert not ours.sending
    again = ours.answer(hold)
    resumed = ours.answer(theirs.offer())
    assert resumed.media[0].attributes[-1] == ("sendrecv", None)
    assert ours.sending
    # Our offer was version 1; the hold answer 2; the same answer again 2; the resume 3.
    assert [_version(s)[1] for s in (first, again, resumed)] == [2, 2, 3]
    assert len({_version(s)[0] for s in (first, again, resumed)}) == 1


async def test_the_answer_takes_our_preference_and_the_hub_follows(
    legs: tuple[Leg, Leg]
) -> None:
    """preferred_codecs: G722 from an offer of PCMU, PCMA, G722: the RTP session and the
    hub's leg switch to it (16 kHz audio)."""
    ours, theirs = legs
    offer = theirs.offer([PCMU, PCMA, G722])
    answer = ours.answer(offer, prefer=[G722])
    assert answer.media[0].formats[0] == "9"
    assert ours.session.codec.name == "G722"
    assert ours.hub.sample_rate("ours") == 16000
    assert ours.media().sample_rate == 16000
    assert ours.media().payload_type == 9


async def test_a_reoffer_keeps_the_running_codec_or_is_refused(legs: tuple[Leg, Leg]) -> None:
    ours, theirs = legs
    ours.answer(theirs.offer([PCMA, PCMU]))
    assert ours.session.codec.name == "PCMA"
    again = ours.answer(theirs.offer([PCMU, PCMA]))  # the offerer's order changed
    assert again.media[0].formats[0] == "8"
    with pytest.raises(NegotiationFailed):
        ours.answer(theirs.offer([PCMU]))  # would change the format under the taps
    assert ours.session.codec.name == "PCMA"


async def test_an_unusable_answer_is_refused(legs: tuple[Leg, Leg]) -> None:
    ours, _ = legs
    with pytest.raises(NegotiationFailed, match="no offer of ours"):
        ours.accept(None)
    ours.offer()
    with pytest.raises(NegotiationFailed, match="no SDP answer"):
        ours.accept(None)


async def test_renegotiate_answers_or_refuses_the_reinvite(legs: tuple[Leg, Leg]) -> None:
    """Over SIP: the UAS re-INVITEs with a hold offer, our UAC leg answers it recvonly;
    a re-INVITE with no codec we run gets 488 and the media goes on as it was."""
    ours, theirs = legs
    pair = UacUasPair()
    uac = WireSide(pair, pair.uac)
    with uac.command() as now:
        ours.handle = pair.uac.invite(f"sip:bob@{UAS_ADDR[0]}:{UAS_ADDR[1]}",
                                      from_uri="sip:alice@127.0.0.1:5070", sdp=ours.offer(),
                                      now=now)
    incoming = next(e for e in pair.take_uas() if isinstance(e, sip.IncomingCall))
    assert incoming.offer is not None
    pair.uas.answer(incoming.handle, theirs.answer(incoming.offer).serialize(), pair.now)
    pair.pump()
    answered = next(e for e in pair.take_uac() if isinstance(e, sip.CallAnswered))
    ours.accept(answered.sdp)

    held = build_offer(local_addr=HOST, local_port=theirs.rtp.local_port, session_id=1,
                       session_version=2, direction=Direction.SENDONLY)
    pair.uas.reinvite(incoming.handle, held, pair.now)
    pair.pump()
    reinvite = next(e for e in pair.take_uac() if isinstance(e, sip.ReinviteReceived))
    ours.renegotiate(uac, reinvite)
    reply = next(e for e in pair.take_uas() if isinstance(e, sip.ReinviteAnswered))
    assert reply.sdp is not None and reply.sdp.media_direction(reply.sdp.media[0]) is (
        Direction.RECVONLY)
    assert not ours.sending

    pair.advance(1.0)
    pcma_only = build_offer(local_addr=HOST, local_port=theirs.rtp.local_port, session_id=1,
                            session_version=3, codecs=[PCMA])
    pair.uas.reinvite(incoming.handle, pcma_only, pair.now)
    pair.pump()
    reinvite = next(e for e in pair.take_uac() if isinstance(e, sip.ReinviteReceived))
    ours.renegotiate(uac, reinvite)
    rejected = next(e for e in pair.take_uas() if isinstance(e, sip.ReinviteRejected))
    assert rejected.status == 488
    assert ours.session.codec.name == "PCMU" and not ours.sending
