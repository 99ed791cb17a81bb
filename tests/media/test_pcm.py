"""PCM helpers: saturating mix, gain, byte swap; audioop and numpy agree."""

from __future__ import annotations

import numpy as np
import pytest

from callstream.media.codecs import pcm as pcm_module
from callstream.media.codecs.pcm import byteswap, mix, mix_frames, peak, scale, silence


def as_pcm(*values: int) -> bytes:
    return np.array(values, dtype="<i2").tobytes()


@pytest.fixture(params=["audioop", "numpy"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "numpy":
        monkeypatch.setattr(pcm_module, "AUDIOOP", None)
    return str(request.param)


def test_mix_saturates(backend: str) -> None:
    a = as_pcm(30000, -30000, 100, 32767)
    b = as_pcm(10000, -10000, -50, 1)
    assert mix(a, b) == as_pcm(32767, -32768, 50, 32767)


def test_mix_frames_clips_once(backend: str) -> None:
    frames = [as_pcm(30000, -30000), as_pcm(10000, -10000), as_pcm(-15000, 15000)]
    assert mix_frames(frames) == as_pcm(25000, -25000)
    assert mix_frames(frames[:2]) == as_pcm(32767, -32768)
    assert mix_frames(frames[:1]) is frames[0]


def test_scale(backend: str) -> None:
    rng = np.random.default_rng(3)
    pcm = rng.integers(-32768, 32768, 1000).astype("<i2").tobytes()
    for gain in (0.8, 0.5, 0.25, 1.5):
        out = np.frombuffer(scale(pcm, gain), dtype="<i2")
        expected = np.floor(np.clip(np.frombuffer(pcm, dtype="<i2") * gain, -32768, 32767))
        assert np.array_equal(out, expected.astype("<i2"))


def test_byteswap(backend: str) -> None:
    assert byteswap(b"\x01\x02\x03\x04") == b"\x02\x01\x04\x03"


def test_silence_and_peak() -> None:
    assert silence(160) == bytes(320)
    assert peak(as_pcm(3, -7, 5)) == 7
    assert peak(as_pcm(-32768)) == 32768
    assert peak(b"") == 0
