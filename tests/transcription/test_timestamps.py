"""Reading Whisper's timestamped tokens: kept words and how far they reach."""

from __future__ import annotations

import pytest

from callstream.transcription.timestamps import Reading, read_tokens

EOT, TS = 1000, 2000  # the end-of-text id and the id of <|0.00|>


def ts(seconds: float) -> int:
    return TS + round(seconds / 0.02)


def read(tokens: list[int], duration: float = 10.0) -> Reading:
    return read_tokens(tokens, timestamp_begin=TS, eot=EOT, duration=duration)


@pytest.mark.parametrize(("tokens", "expected"), [
    # Two closed segments, then end of text: all of it, complete.
    ([ts(0), 1, 2, ts(3), ts(3), 3, ts(6.5), EOT], Reading((1, 2, 3), 6.5, True)),
    # A lone start timestamp at the end: "it goes on past here" — incomplete at 7.0.
    ([ts(0), 1, 2, ts(7), ts(7), EOT], Reading((1, 2), 7.0, False)),
    # Text with no closing timestamp (the token budget ran out): not kept (only
    # reported as unfinished, for interims).
    ([ts(0), 1, ts(4), ts(4), 2, 3], Reading((1,), 4.0, False, unfinished=(2, 3))),
    # A segment that starts past the audio is imagined: dropped, and incomplete.
    ([ts(0), 1, ts(9.5), ts(10.5), 2, ts(12), EOT], Reading((1,), 9.5, False)),
    # A last segment that ends a little past the audio still covers it, to its end.
    ([ts(0), 1, ts(8), ts(8), 2, ts(10.4), EOT], Reading((1, 2), 10.0, True)),
    # Nothing said: nothing deferred.
    ([EOT], Reading((), 0.0, True)),
    ([ts(0), EOT], Reading((), 0.0, True)),
    # Special tokens (between end-of-text and the timestamps) are not words.
    ([ts(0), 1, 1500, ts(2), EOT], Reading((1,), 2.0, True)),
    # Seven tokens in one second: the timestamps are wrong (speech was skipped).
    ([ts(0), *range(7), ts(1), ts(1), 8, ts(4), EOT],
     Reading((*range(7), 8), 4.0, True, hurried=True)),
    # Five tokens in a second is fast speech, not a skip; so are four in no time.
    ([ts(0), *range(5), ts(1), ts(1), 1, 2, 3, 4, ts(1), EOT],
     Reading((*range(5), 1, 2, 3, 4), 1.0, True)),
])
def test_read_tokens(tokens: list[int], expected: Reading) -> None:
    assert read(tokens) == expected
