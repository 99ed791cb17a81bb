"""The browser leg's conversions (the hub's libswresample resampler): little delay, exactly
20 ms out for each 20 ms in from the first frame, the tone and its level kept, what 16 kHz
cannot carry filtered out."""

from __future__ import annotations

import fractions

import av
import numpy as np
import pytest

from callstream.media.codecs.resample import Resampler
from callstream.media.exceptions import CodecError
from callstream.webrtc.audio import HUB_RATE, OPUS_RATE, FromBrowser

HUB_FRAME = HUB_RATE // 50
OPUS_FRAME = OPUS_RATE // 50
#: The most either converter may hold back (the soxr path it replaced held 12-15 ms).
MAX_DELAY_MS = 2.0


def browser_frame(mono: np.ndarray, pts: int) -> av.AudioFrame:
    """A decoded Opus frame as aiortc hands it: s16, stereo (interleaved), 48 kHz."""
    stereo = np.repeat(mono.astype("<i2"), 2).reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
    frame.sample_rate = OPUS_RATE
    frame.time_base = fractions.Fraction(1, OPUS_RATE)
    frame.pts = pts
    return frame


def tone(hz: float, samples: int, rate: int, amplitude: float = 10000.0) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * hz * np.arange(samples) / rate)).astype("<i2")


def from_browser(signal: np.ndarray) -> tuple[np.ndarray, list[int]]:
    converter = FromBrowser()
    chunks = [np.frombuffer(converter.process(browser_frame(signal[i:i + OPUS_FRAME], i)),
                            dtype="<i2") for i in range(0, len(signal), OPUS_FRAME)]
    return np.concatenate(chunks), [len(c) for c in chunks]


def to_browser(signal: np.ndarray) -> tuple[np.ndarray, list[int]]:
    converter = Resampler(HUB_RATE, OPUS_RATE)
    chunks = [np.frombuffer(converter.process(signal[i:i + HUB_FRAME].tobytes()), dtype="<i2")
              for i in range(0, len(signal), HUB_FRAME)]
    return np.concatenate(chunks), [len(c) for c in chunks]


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


def peak_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


def test_to_browser_gives_exactly_20_ms_a_frame_and_delays_an_impulse_under_2_ms() -> None:
    signal = np.zeros(30 * HUB_FRAME, dtype="<i2")
    signal[5 * HUB_FRAME] = 20000
    out, lengths = to_browser(signal)
    assert set(lengths) == {OPUS_FRAME}  # the first pull too: aiortc's encoder never waits
    delay_ms = (int(np.argmax(np.abs(out))) - 5 * OPUS_FRAME) / OPUS_RATE * 1000
    assert 0 <= delay_ms <= MAX_DELAY_MS


def test_from_browser_gives_exactly_20_ms_a_frame_and_delays_an_impulse_under_2_ms() -> None:
    """Each frame's audio is out when the frame is in: none of it waits for the next frame
    (a remainder held back made the leg push every frame 19 ms late)."""
    signal = np.zeros(30 * OPUS_FRAME, dtype="<i2")
    signal[5 * OPUS_FRAME] = 20000
    out, lengths = from_browser(signal)
    assert lengths == [HUB_FRAME] * 30  # the first frame too
    delay_ms = (int(np.argmax(np.abs(out))) - 5 * HUB_FRAME) / HUB_RATE * 1000
    assert 0 <= delay_ms <= MAX_DELAY_MS


def test_from_browser_refuses_what_aiortc_never_decodes_to() -> None:
    frame = av.AudioFrame(format="s16", layout="stereo", samples=OPUS_FRAME)
    frame.sample_rate = 44100
    with pytest.raises(CodecError, match=r"^decoded audio is s16, 44100 Hz, 2 channels; "
                                          r"expected s16 at 48000 Hz$"):
        FromBrowser().process(frame)
    converter = FromBrowser()
    converter.process(browser_frame(np.zeros(OPUS_FRAME), 0))
    mono = av.AudioFrame.from_ndarray(np.zeros((1, OPUS_FRAME), dtype="<i2"), format="s16",
                                      layout="mono")
    mono.sample_rate = OPUS_RATE
    with pytest.raises(CodecError, match=r"^decoded audio went from 2 to 1 channels$"):
        converter.process(mono)


def test_a_tone_keeps_its_pitch_and_level_both_ways() -> None:
    second = tone(1000, OPUS_RATE, OPUS_RATE)
    hub, _ = from_browser(second)
    assert abs(peak_hz(hub[HUB_FRAME:], HUB_RATE) - 1000) < 5
    assert abs(rms(hub[HUB_FRAME:]) / rms(second) - 1) < 0.02  # both channels, not summed

    back, _ = to_browser(tone(1000, HUB_RATE, HUB_RATE))
    assert abs(peak_hz(back[OPUS_FRAME:], OPUS_RATE) - 1000) < 5
    assert abs(rms(back[OPUS_FRAME:]) / rms(second) - 1) < 0.02


def test_what_16_khz_cannot_carry_is_filtered_not_folded_back() -> None:
    # 12 kHz would alias to 4 kHz at 16 kHz without an anti-aliasing filter.
    hub, _ = from_browser(tone(12000, OPUS_RATE, OPUS_RATE))
    assert rms(hub[HUB_FRAME:]) < 0.01 * rms(tone(12000, OPUS_RATE, OPUS_RATE))
