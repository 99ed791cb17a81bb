"""G.722: 16 kHz audio, 8 kHz RTP clock, stateful per direction."""

from __future__ import annotations

from callstream.media.codecs import G722
from callstream.media.codecs.g722 import G722Decoder, G722Encoder

from .helpers import aligned_snr, frames, samples, tone


def test_registry_numbers() -> None:
    assert (G722.clock_rate, G722.sample_rate, G722.payload_type) == (8000, 16000, 9)
    assert (G722.frame_bytes, G722.frame_samples, G722.frame_ticks) == (160, 320, 160)
    assert G722.rtpmap == "G722/8000"


def test_tone_round_trip_snr() -> None:
    """Encode and decode in 20 ms frames; > 25 dB once the codec delay is aligned."""
    pcm = tone(440, 16000, 1.0, 6000)
    encoder, decoder = G722Encoder(), G722Decoder()
    out = b""
    for frame in frames(pcm, 640):
        payload = encoder.encode(frame)
        assert len(payload) == 160
        decoded = decoder.decode(payload)
        assert len(decoded) == 640
        out += decoded
    snr, lag = aligned_snr(samples(pcm), samples(out), max_lag=64)
    assert snr > 25
    assert 10 < lag < 40  # the QMF filters' delay (22 samples measured)


def test_two_tone_wideband_round_trip() -> None:
    # 5 kHz is above G.711's band; G.722 carries it.
    low = samples(tone(440, 16000, 0.5, 3000)) + samples(tone(5000, 16000, 0.5, 3000))
    pcm = low.astype("<i2").tobytes()
    out = G722Decoder().decode(G722Encoder().encode(pcm))
    snr, _ = aligned_snr(low, samples(out), max_lag=64)
    assert snr > 20


def test_state_is_per_instance() -> None:
    pcm = tone(1000, 16000, 0.1)
    a, b = G722Encoder(), G722Encoder()
    first = a.encode(pcm[:640])
    assert b.encode(pcm[:640]) == first  # fresh encoders agree
    assert a.encode(pcm[:640]) != first  # but state moved on
