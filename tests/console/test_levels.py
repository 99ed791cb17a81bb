"""callstream.console.levels: RMS dBFS of PCM frames."""

from __future__ import annotations

import math

import numpy as np
import pytest

from callstream.console.levels import FLOOR_DBFS, rms_dbfs


def pcm(samples: np.ndarray) -> bytes:
    return bytes(samples.astype("<i2").tobytes())


def test_full_scale_square_is_0_dbfs() -> None:
    square = np.where(np.arange(160) % 2 == 0, 32767, -32768)
    assert rms_dbfs(pcm(square)) == 0.0


def test_full_scale_sine_is_minus_3_dbfs() -> None:
    sine = 32767 * np.sin(2 * math.pi * 1000 * np.arange(8000) / 8000)
    assert rms_dbfs(pcm(sine)) == -3.0


def test_halving_the_amplitude_is_6_db_down() -> None:
    sine = 8000 * np.sin(2 * math.pi * 440 * np.arange(8000) / 8000)
    assert rms_dbfs(pcm(sine / 2)) == pytest.approx(rms_dbfs(pcm(sine)) - 6.0, abs=0.15)


@pytest.mark.parametrize("data", [None, b"", b"\x01", bytes(320)])
def test_no_audio_reads_the_floor(data: bytes | None) -> None:
    assert rms_dbfs(data) == FLOOR_DBFS


def test_a_trailing_odd_byte_is_ignored() -> None:
    square = pcm(np.where(np.arange(160) % 2 == 0, 1000, -1000))
    assert rms_dbfs(square + b"\x7f") == rms_dbfs(square)


def test_a_faint_signal_stays_above_the_floor() -> None:
    assert FLOOR_DBFS < rms_dbfs(pcm(np.full(160, 2))) < -80
