"""OPUS on a stream, both ways, over a real MediaHub: one packet per media message."""

from __future__ import annotations

import pytest

from callstream.calls.features import LegMedia
from callstream.media.codecs import opus_codec
from callstream.media.codecs.opus import packet_samples
from callstream.media.hub import MediaHub, Track
from callstream.streaming.encoder import StreamEncoder
from tests.audio import segment_snr, spectral_snr, speech, tone
from tests.streaming.test_playback import Rig, mark, media


@pytest.mark.parametrize(("leg_rate", "opus_rate"), [(8000, 16000), (16000, 16000),
                                                     (16000, 48000), (8000, 8000)])
def test_inbound_frames_become_one_packet_each(leg_rate: int, opus_rate: int) -> None:
    """Each 20 ms hub frame is one Opus packet; decoded, it is the leg's audio."""
    hub = MediaHub("test")
    hub.add_leg("a", leg_rate)
    leg = LegMedia(hub, "a", "G722" if leg_rate == 16000 else "PCMU", leg_rate, 9)
    enc = StreamEncoder(leg, Track.INBOUND, opus_codec(opus_rate), clock=lambda: 0.0,
                        wake=lambda: None)
    assert not enc.passthrough
    pcm = tone(440, 1.0, leg_rate)
    step = 2 * leg_rate // 50
    for i in range(50):
        hub.push_inbound("a", pcm[i * step:(i + 1) * step], i * 0.02)
    chunks = enc.drain()
    assert len(chunks) == 50
    assert all(packet_samples(c.payload) == 960 for c in chunks)  # 20 ms each
    decoder = opus_codec(opus_rate).new_decoder()
    out = b"".join(decoder.decode(c.payload) for c in chunks)
    assert len(out) == 2 * opus_rate  # one second at the stream's rate
    assert segment_snr(tone(440, 1.0, opus_rate), out, opus_rate) > 15


@pytest.mark.parametrize(("opus_rate", "leg_rate"), [(16000, 8000), (16000, 16000),
                                                     (48000, 16000)])
def test_consumer_packets_play_to_the_leg(opus_rate: int, leg_rate: int) -> None:
    """Packets sent one per message play in order at the leg's rate; a mark waits for them."""
    rig = Rig({"a": leg_rate}, codec="OPUS", rate=opus_rate)
    assert rig.playback.in_rate == opus_rate
    clip = speech("beckett", opus_rate)[: opus_rate * 2 * 2]
    encoder = opus_codec(opus_rate).new_encoder()
    step = 2 * opus_rate // 50
    for i in range(len(clip) // step):
        assert rig.send(media(encoder.encode(clip[i * step:(i + 1) * step]))) == []
    assert rig.send(mark("done")) == []
    played = rig.play_out()
    assert rig.marks() == ["done"]
    assert abs(len(played) - 2 * leg_rate * 2) <= 2 * 2 * leg_rate // 50  # 2 s, +-2 frames
    reference = speech("beckett", leg_rate)[: leg_rate * 2 * 2]
    assert spectral_snr(reference, played, leg_rate, seconds=1.0) > 10  # measured 13-15 dB


def test_bad_packets_are_invalid_media_and_the_stream_plays_on() -> None:
    rig = Rig({"a": 16000}, codec="OPUS", rate=16000)
    encoder = opus_codec(16000).new_encoder()
    good = [encoder.encode(f) for f in
            (tone(440, 0.02, 16000), tone(440, 0.04, 16000)[640:])]
    assert rig.send(media(good[0])) == []
    bad = {
        bytes([0x09 << 3 | 3, 0]): "frame count of 0",
        bytes([0x0B << 3 | 3, 3]): "at most 120 ms",
        bytes([0x09 << 3 | 2, 250]) + bytes(10): "libopus could not decode the packet",
        bytes(5000): "at most 4000 bytes here",
    }
    for packet, detail in bad.items():
        [error] = rig.send(media(packet))
        assert error["payload"]["code"] == 100004
        assert error["payload"]["title"] == "invalid_media"
        assert detail in error["payload"]["detail"]
    assert rig.send(media(b"")) == []  # empty: nothing to play, no error
    assert rig.send(media(good[1])) == []
    assert rig.playback.messages == 3 and rig.playback.errors == 4
    assert len(rig.play_out()) >= 2 * 640


def test_clear_resets_the_opus_decoder() -> None:
    rig = Rig({"a": 16000}, codec="OPUS", rate=16000)
    encoder = opus_codec(16000).new_encoder()
    clip = tone(440, 0.2, 16000)
    for i in range(10):
        rig.send(media(encoder.encode(clip[i * 640:(i + 1) * 640])))
    first = rig.playback._decoder
    rig.send({"event": "clear"})
    assert rig.playback._decoder is not first
    assert rig.tick()["a"] is None
