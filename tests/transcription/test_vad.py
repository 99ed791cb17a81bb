"""The VAD segmenter as a table: probabilities in, utterance boundaries out."""

from __future__ import annotations

import pytest

from callstream.transcription.vad import (
    WINDOW_SECONDS,
    Segmenter,
    VadEvent,
    VadEventKind,
    VadOptions,
)

START, END, DROP = VadEventKind.START, VadEventKind.END, VadEventKind.DROP
SILENCE_WINDOWS = round(0.6 / WINDOW_SECONDS)  # 19 windows of 32 ms


def run(probs: list[float], options: VadOptions | None = None) -> list[VadEvent]:
    seg = Segmenter(options)
    events = [e for p in probs for e in seg.push(p)]
    return events + seg.finish()


@pytest.mark.parametrize(("probs", "expected"), [
    ([0.0] * 50, []),
    ([0.0] * 5 + [0.9] * 20 + [0.0] * 30,
     [VadEvent(START, 5), VadEvent(END, 5, 25)]),
    # Phone-band speech scores low: 0.25 is speech at the tuned threshold of 0.2.
    ([0.25] * 20 + [0.0] * 30, [VadEvent(START, 0), VadEvent(END, 0, 20)]),
    # A dip shorter than the minimum silence does not end the utterance.
    ([0.9] * 10 + [0.0] * 10 + [0.9] * 10 + [0.0] * 30,
     [VadEvent(START, 0), VadEvent(END, 0, 30)]),
    # Between the thresholds (0.1..0.2) counts as neither: the silence timer keeps going.
    ([0.9] * 10 + [0.0] * 5 + [0.15] * 20, [VadEvent(START, 0), VadEvent(END, 0, 10)]),
    # Too short to be speech (a click): dropped.
    ([0.9] * 3 + [0.0] * 30, [VadEvent(START, 0), VadEvent(DROP, 0, 3)]),
    # Speech still going when the track ends is closed by finish().
    ([0.9] * 40, [VadEvent(START, 0), VadEvent(END, 0, 40)]),
])
def test_segmenter(probs: list[float], expected: list[VadEvent]) -> None:
    assert run(probs) == expected


def test_long_speech_is_cut_at_the_maximum_and_continues() -> None:
    options = VadOptions(max_utterance_s=1.0)
    limit = round(1.0 / WINDOW_SECONDS)
    events = run([0.9] * (limit * 2 + 5) + [0.0] * 30, options)
    assert events == [
        VadEvent(START, 0), VadEvent(END, 0, limit),
        VadEvent(START, limit), VadEvent(END, limit, 2 * limit),
        # The 160 ms left over is under the minimum speech length.
        VadEvent(START, 2 * limit), VadEvent(DROP, 2 * limit, 2 * limit + 5),
    ]


def test_end_needs_the_full_minimum_silence() -> None:
    seg = Segmenter()
    for _ in range(10):
        seg.push(0.9)
    events = [e for _ in range(SILENCE_WINDOWS - 1) for e in seg.push(0.0)]
    assert events == [] and seg.in_speech
    assert seg.push(0.0) == [VadEvent(END, 0, 10)]


@pytest.mark.parametrize("kwargs", [
    {"threshold": 0.1, "neg_threshold": 0.2}, {"threshold": 1.0},
    {"max_utterance_s": 0.1},
])
def test_bad_options_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        VadOptions(**kwargs)  # type: ignore[arg-type]
