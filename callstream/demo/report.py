"""Pure pieces of the demo's terminal view and its ``--once`` verdict.

* :func:`describe` — one readable line for a webhook event;
* :func:`word_error_rate` — how far a transcript is from the known text;
* :func:`voiced_seconds` — how much of a recording is not silence;
* :func:`verdict` — the checks of ``callstream demo --once`` and the first that failed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

FRAME_S = 0.02
VOICED_DBFS = -40.0  # a 20 ms frame louder than this counts as voiced
MAX_WER = 0.35  # --once passes when the caller's transcript is at least this close
MAX_TEXT = 90  # transcript text shown per line in the terminal


def normalise_words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / words in ``reference``."""
    ref, hyp = normalise_words(reference), normalise_words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, word in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, other in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (word != other))
    return row[len(hyp)] / max(len(ref), 1)


def voiced_seconds(pcm: bytes, rate: int, threshold_dbfs: float = VOICED_DBFS) -> float:
    """Seconds of 16-bit mono ``pcm`` in 20 ms frames louder than ``threshold_dbfs``."""
    frame = int(rate * FRAME_S)
    samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2").astype(np.float64)
    count = len(samples) // frame
    if count == 0:
        return 0.0
    frames = samples[: count * frame].reshape(count, frame) / 32768.0
    rms = np.sqrt(np.mean(frames * frames, axis=1))
    floor = 10.0 ** (threshold_dbfs / 20.0)
    return float(np.count_nonzero(rms > floor)) * FRAME_S


def _short(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def describe(event: dict[str, Any]) -> str:
    """One line for the terminal view of a webhook event."""
    kind = str(event.get("event_type", "?"))
    p = event.get("payload") or {}
    if kind == "call.transcription":
        data = p.get("transcription_data") or {}
        label = "final  " if data.get("is_final") else "interim"
        track = data.get("transcription_track", "?")
        return f"transcript {track:>8} {label} {_short(str(data.get('transcript', '')))!r}"
    if kind == "call.initiated":
        return f"{kind:<22} {p.get('from', '?')} → {p.get('to', '?')} ({p.get('direction')})"
    if kind == "call.hangup":
        return (f"{kind:<22} cause {p.get('hangup_cause', '?')}, "
                f"by {p.get('hangup_source', '?')}")
    if kind == "streaming.failed":
        return f"{kind:<22} {p.get('failure_reason', '?')}"
    if kind.startswith("streaming."):
        return f"{kind:<22} {p.get('stream_url', '')}"
    return kind


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    why: str  # said when it failed


def verdict(checks: list[Check]) -> str | None:
    """None when every check passed, else the first failure's one-line reason."""
    for check in checks:
        if not check.ok:
            return f"{check.name}: {check.why}"
    return None


def finite(value: float) -> float | None:
    return None if math.isinf(value) or math.isnan(value) else round(value, 3)
