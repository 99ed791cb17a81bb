"""Streaming resampling: quality, anti-aliasing and whole 20 ms frames."""

from __future__ import annotations

import numpy as np
import pytest

from callstream.media.codecs.resample import Resampler
from callstream.media.exceptions import CodecError

from .helpers import frames, samples, tone, tone_snr

PAIRS = [
    (8000, 16000),
    (16000, 8000),
    (22050, 8000),
    (22050, 16000),
    (24000, 8000),
    (24000, 16000),
    (48000, 8000),
    (48000, 16000),
]


def run(resampler: Resampler, pcm: bytes, rate: int) -> bytes:
    return b"".join(resampler.process(chunk) for chunk in frames(pcm, 2 * rate // 50))


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_tone_snr(in_rate: int, out_rate: int) -> None:
    pcm = tone(1000, in_rate, 1.0)
    out = samples(run(Resampler(in_rate, out_rate), pcm, in_rate))
    assert len(out) == out_rate  # one second in, one second out
    # Skip the priming delay (about 30 ms); then compare with an ideal tone.
    assert tone_snr(out, 1000, out_rate, skip=out_rate // 20) > 60


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_every_20ms_chunk_gives_20ms(in_rate: int, out_rate: int) -> None:
    resampler = Resampler(in_rate, out_rate)
    chunk = bytes(2 * in_rate // 50)
    assert [len(resampler.process(chunk)) for _ in range(10)] == [2 * out_rate // 50] * 10


def test_downsampling_filters_aliases() -> None:
    """A 6 kHz tone has no place at 8 kHz: it must not fold back to 2 kHz."""
    out = samples(run(Resampler(16000, 8000), tone(6000, 16000, 0.5, 10000), 16000))
    rms = np.sqrt(np.mean(out[800:] ** 2))
    assert rms < 10000 / np.sqrt(2) / 100  # at least 40 dB down


def test_same_rate_passes_through() -> None:
    pcm = tone(440, 8000, 0.02)
    assert Resampler(8000, 8000).process(pcm) is pcm


def test_unsupported_rate() -> None:
    with pytest.raises(CodecError, match=r"^sample rate 11025 Hz is not supported$"):
        Resampler(11025, 8000)


def test_odd_input_is_refused() -> None:
    with pytest.raises(CodecError, match="odd number of bytes"):
        Resampler(8000, 16000).process(b"abc")
