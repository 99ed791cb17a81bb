"""Streaming resampling (libswresample): little delay, quality, anti-aliasing, whole
20 ms frames."""

from __future__ import annotations

import itertools
import os

import numpy as np
import numpy.typing as npt
import pytest

from callstream.media.codecs.resample import Resampler
from callstream.media.exceptions import CodecError

from .helpers import frames, samples, tone, tone_snr

PAIRS = [
    (8000, 16000),
    (16000, 8000),
    (16000, 48000),
    (22050, 8000),
    (22050, 16000),
    (24000, 8000),
    (24000, 16000),
    (48000, 8000),
    (48000, 16000),
]
#: The most a resampler may hold a sample back (soxr's streaming mode, before, held
#: 10-30 ms; the browser's mouth-to-ear budget, docs/webrtc.md, has no room for that).
MAX_DELAY_MS = 2.5


def run(resampler: Resampler, pcm: bytes, rate: int) -> bytes:
    return b"".join(resampler.process(chunk) for chunk in frames(pcm, 2 * rate // 50))


def sweep(rate: int, seconds: float, low: float, high: float,
          delay: float = 0.0) -> npt.NDArray[np.float64]:
    """An exponential sine sweep from ``low`` to ``high`` Hz, ``delay`` seconds late."""
    t = np.arange(int(rate * seconds)) / rate - delay
    k = np.log(high / low)
    return 8000.0 * np.sin(2 * np.pi * low * seconds / k * (np.exp(t / seconds * k) - 1))


def impulse_delay(in_rate: int, out_rate: int) -> float:
    """Output samples from an impulse fed (mid-stream, mid-frame) to where it peaks."""
    pcm = np.zeros(in_rate // 2, dtype="<i2")
    at = 5 * in_rate // 50 + 7
    pcm[at] = 20000
    out = samples(run(Resampler(in_rate, out_rate), pcm.tobytes(), in_rate))
    return float(np.argmax(np.abs(out))) - at * out_rate / in_rate


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_an_impulse_is_held_back_under_the_bound(in_rate: int, out_rate: int) -> None:
    delay = impulse_delay(in_rate, out_rate)
    assert -1 <= delay <= out_rate * MAX_DELAY_MS / 1000


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_tone_snr(in_rate: int, out_rate: int) -> None:
    pcm = tone(1000, in_rate, 1.0)
    out = samples(run(Resampler(in_rate, out_rate), pcm, in_rate))
    assert len(out) == out_rate  # one second in, one second out
    assert tone_snr(out, 1000, out_rate, skip=out_rate // 50) > 75


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_a_sweep_through_the_band_keeps_its_shape(in_rate: int, out_rate: int) -> None:
    """100 Hz to 45 % of the lower rate, against the ideal sweep at the measured delay."""
    high = 0.45 * min(in_rate, out_rate)
    pcm = sweep(in_rate, 1.0, 100, high).astype("<i2").tobytes()
    out = samples(run(Resampler(in_rate, out_rate), pcm, in_rate))
    coarse = round(impulse_delay(in_rate, out_rate))
    middle = slice(out_rate // 10, len(out) - out_rate // 10)
    best = -np.inf
    for lag in np.arange(coarse - 1, coarse + 1, 0.01):  # the filter's fractional delay
        ideal = sweep(out_rate, 1.0, 100, high, delay=lag / out_rate)[middle]
        noise = np.sum((out[middle] - ideal) ** 2)
        best = max(best, 10 * np.log10(np.sum(ideal**2) / noise))
    assert best > 70


@pytest.mark.parametrize(("in_rate", "out_rate"), [p for p in PAIRS if p[1] < p[0]])
def test_downsampling_filters_aliases(in_rate: int, out_rate: int) -> None:
    """A tone the lower rate cannot carry must not fold back into its band."""
    hz = (out_rate / 2 + min(in_rate / 2, out_rate)) / 2  # between the two Nyquists
    out = samples(run(Resampler(in_rate, out_rate), tone(hz, in_rate, 0.5, 10000), in_rate))
    rms = np.sqrt(np.mean(out[out_rate // 50:] ** 2))
    assert rms < 10000 / np.sqrt(2) / 10000  # at least 80 dB down


def test_upsampling_leaves_no_images() -> None:
    """8 -> 16 kHz: a 3.2 kHz tone's image at 4.8 kHz is filtered out."""
    out = samples(run(Resampler(8000, 16000), tone(3200, 8000, 1.0, 10000), 8000))[320:]
    spectrum = np.abs(np.fft.rfft(out * np.hanning(len(out)))) ** 2
    hz = np.fft.rfftfreq(len(out), 1 / 16000)
    assert 10 * np.log10(spectrum[hz > 4000].sum() / spectrum.sum()) < -70


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_every_20ms_chunk_gives_20ms(in_rate: int, out_rate: int) -> None:
    resampler = Resampler(in_rate, out_rate)
    chunk = bytes(2 * in_rate // 50)
    assert [len(resampler.process(chunk)) for _ in range(10)] == [2 * out_rate // 50] * 10


def test_odd_sized_chunks_lose_nothing() -> None:
    """Any chunk sizes: what comes out is the same audio, with the same delay."""
    pcm = tone(1000, 8000, 0.5)
    whole = run(Resampler(8000, 16000), pcm, 8000)
    resampler = Resampler(8000, 16000)
    cuts = [0, 2, 300, 302, 1000, 4000, len(pcm)]
    pieces = b"".join(resampler.process(pcm[a:b]) for a, b in itertools.pairwise(cuts))
    assert pieces == whole


def test_stereo_is_mixed_down() -> None:
    left = np.frombuffer(tone(1000, 48000, 0.2), dtype="<i2")
    stereo = np.column_stack([left, left]).reshape(-1).tobytes()
    resampler = Resampler(48000, 16000, channels=2)
    out = samples(b"".join(resampler.process(c) for c in frames(stereo, 4 * 960)))
    assert len(out) == 16000 // 5
    assert tone_snr(out, 1000, 16000, skip=320) > 75
    # The level is kept (the channels averaged, not summed).
    assert abs(np.sqrt(np.mean(out[320:] ** 2)) / np.sqrt(np.mean(left**2.0)) - 1) < 0.02


def test_same_rate_passes_through() -> None:
    pcm = tone(440, 8000, 0.02)
    assert Resampler(8000, 8000).process(pcm) is pcm


def test_unsupported_rate() -> None:
    with pytest.raises(CodecError, match=r"^sample rate 11025 Hz is not supported$"):
        Resampler(11025, 8000)


def test_unsupported_channels() -> None:
    with pytest.raises(CodecError, match=r"^3 channels: a resampler takes 1 to 2$"):
        Resampler(48000, 16000, channels=3)


def test_a_partial_sample_is_refused() -> None:
    with pytest.raises(CodecError, match=r"^PCM of 3 bytes is not a whole number of "
                                         r"1-channel 16-bit samples$"):
        Resampler(8000, 16000).process(b"abc")
    with pytest.raises(CodecError, match="2-channel"):
        Resampler(48000, 16000, channels=2).process(b"ab")


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2,
                    reason="on one CPU FFmpeg starts no filter-graph threads anyway")
def test_a_resampler_starts_no_threads() -> None:
    """A call's resamplers (a bridge between rates, a stream at another rate) run on the
    event loop's thread; FFmpeg's default, one idle thread per CPU for each (PyAV's
    AudioResampler), multiplied a worker's threads by its CPUs (bench/bridge_hop.py)."""
    before = _threads()
    resamplers = [Resampler(8000, 16000) for _ in range(4)]
    for resampler in resamplers:
        resampler.process(bytes(320))
    assert _threads() <= before
