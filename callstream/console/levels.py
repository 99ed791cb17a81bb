"""Audio level of a PCM frame, for the console's meters."""

from __future__ import annotations

import math

import numpy as np

#: What silence (and no audio at all) reads as; the meters' floor.
FLOOR_DBFS = -90.0
_FULL_SCALE = 32768.0


def rms_dbfs(pcm: bytes | None) -> float:
    """RMS level of 16-bit little-endian mono PCM in dBFS, rounded to 0.1 dB.

    A full-scale square wave is 0 dBFS, a full-scale sine -3.0; ``None``, empty input
    and digital silence read :data:`FLOOR_DBFS`. A trailing odd byte is ignored.
    """
    if not pcm or len(pcm) < 2:
        return FLOOR_DBFS
    samples = np.frombuffer(pcm, dtype="<i2", count=len(pcm) // 2).astype(np.float64)
    mean_square = float(np.dot(samples, samples)) / len(samples)
    if mean_square <= 0.0:
        return FLOOR_DBFS
    level = 10.0 * math.log10(mean_square / (_FULL_SCALE * _FULL_SCALE))
    return round(max(level, FLOOR_DBFS), 1)
