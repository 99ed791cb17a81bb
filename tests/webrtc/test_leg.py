"""The leg's latency measures on aiortc (pinned to 1.16): the receive jitter buffer it
swaps in, each decoded frame in the hub at once, and a stalled sender that skips the hub's
overdue audio."""

from __future__ import annotations

import asyncio
import fractions
from collections.abc import AsyncIterator

import av
import numpy as np
import pytest
from aiortc import MediaStreamTrack, RTCPeerConnection
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket

from callstream.media.hub import AudioFrame, MediaHub, QueueSource, Track
from callstream.webrtc.audio import HUB_RATE, OPUS_RATE
from callstream.webrtc.leg import (
    FRAME_SECS,
    MAX_CATCH_UP_SECS,
    OPUS_FRAME_SAMPLES,
    RECEIVE_PREFETCH,
    WebRtcLeg,
    shorten_jitter_buffer,
)
from callstream.webrtc.offer import check_offer


async def browser_offer() -> str:
    pc = RTCPeerConnection()
    pc.addTransceiver("audio", direction="sendrecv")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = str(pc.localDescription.sdp)
    await pc.close()
    return sdp


@pytest.fixture
async def leg() -> AsyncIterator[WebRtcLeg]:
    leg = WebRtcLeg("leg", MediaHub("call"), [], on_dtmf=lambda _d: None,
                    on_gone=lambda _w: None)
    await leg.answer(check_offer(await browser_offer()))
    try:
        yield leg
    finally:
        leg.close()
        if leg._closing is not None:
            await leg._closing


def receiver_buffer(leg: WebRtcLeg) -> JitterBuffer:
    (transceiver,) = leg.pc.getTransceivers()
    buffer = transceiver.receiver._RTCRtpReceiver__jitter_buffer
    assert isinstance(buffer, JitterBuffer)
    return buffer


async def test_the_answered_leg_receives_through_a_one_packet_jitter_buffer(
        leg: WebRtcLeg) -> None:
    buffer = receiver_buffer(leg)
    handed: list[int] = []
    for sequence in range(100, 106):
        packet = RtpPacket(payload_type=111, sequence_number=sequence,
                           timestamp=960 * sequence, payload=b"\xfc" * 40)
        packet._data = packet.payload  # type: ignore[attr-defined]  # as the receiver sets it
        _pli, frame = buffer.add(packet)
        if frame is not None:
            handed.append(frame.timestamp // 960)
    # Each packet comes out as soon as the next one is in (aiortc's default waits for 4).
    assert RECEIVE_PREFETCH == 1
    assert handed == [100, 101, 102, 103, 104]


def test_a_receiver_without_aiortc_1_16s_jitter_buffer_is_refused() -> None:
    class Elsewhere:
        pass

    with pytest.raises(RuntimeError, match=r"1\.16"):
        shorten_jitter_buffer(Elsewhere())


class DecodedTrack(MediaStreamTrack):
    """What aiortc's receiver track hands the leg: decoded Opus, s16 stereo, 48 kHz."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.frames: asyncio.Queue[av.AudioFrame] = asyncio.Queue()
        self._pts = 0

    def put(self, mono: np.ndarray) -> None:
        stereo = np.repeat(mono.astype("<i2"), 2).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
        frame.sample_rate = OPUS_RATE
        frame.time_base = fractions.Fraction(1, OPUS_RATE)
        frame.pts = self._pts
        self._pts += len(mono)
        self.frames.put_nowait(frame)

    async def recv(self) -> av.AudioFrame:
        return await self.frames.get()


async def test_each_decoded_frame_reaches_the_hub_before_the_next_one_is_decoded(
        leg: WebRtcLeg) -> None:
    """No part of a frame waits for the next one (it did: 19 ms of each, the converter's
    held-back filter tail left the frame short of 20 ms until the next arrived)."""
    heard: list[AudioFrame] = []
    leg.hub.add_frame_callback(leg.name, Track.INBOUND, heard.append)
    browser = DecodedTrack()
    reader = asyncio.get_running_loop().create_task(leg._read(browser))
    for n in range(10):
        mono = np.zeros(OPUS_FRAME_SAMPLES)
        mono[OPUS_FRAME_SAMPLES // 2] = 20000 if n == 3 else 0  # mid-frame, in frame 3
        browser.put(mono)
        for _ in range(1000):  # bounded: the reader runs in a turn or two of the loop
            if len(heard) == n + 1 or leg.closed:
                break
            await asyncio.sleep(0)
        assert len(heard) == n + 1, f"frame {n} is not in the hub"
    reader.cancel()
    peaks = [int(np.max(np.abs(np.frombuffer(f.pcm, dtype="<i2")))) for f in heard]
    assert [i for i, peak in enumerate(peaks) if peak > 1000] == [3]  # its own frame


async def test_a_stalled_sender_skips_the_overdue_audio_instead_of_playing_it_late(
        leg: WebRtcLeg) -> None:
    source = QueueSource(HUB_RATE)
    source.feed(bytes(2 * HUB_RATE * 5))  # 5 s to play
    leg.hub.add_source(leg.name, source)
    leg.answered = True
    first = await leg.track.recv()
    assert leg.track._deadline is not None
    leg.track._deadline -= 0.5  # the sender's last pull was half a second ago
    after = await leg.track.recv()
    missed = leg.track.dropped_frames
    assert missed >= int((0.5 - FRAME_SECS) / FRAME_SECS)
    assert source.skipped_frames == missed
    # The browser sees a gap in the timestamps, not a frame late for its own.
    assert after.pts - first.pts == (1 + missed) * OPUS_FRAME_SAMPLES


async def test_a_pull_less_than_the_catch_up_late_is_served_at_once_and_drops_nothing(
        leg: WebRtcLeg) -> None:
    source = QueueSource(HUB_RATE)
    source.feed(bytes(2 * HUB_RATE))
    leg.hub.add_source(leg.name, source)
    leg.answered = True
    first = await leg.track.recv()
    assert leg.track._deadline is not None
    leg.track._deadline -= MAX_CATCH_UP_SECS / 2
    after = await leg.track.recv()
    assert leg.track.dropped_frames == 0 and source.skipped_frames == 0
    assert after.pts - first.pts == OPUS_FRAME_SAMPLES
