"""Reading Whisper's timestamped output: which words count, and how far they reach.

Whisper interleaves text with timestamp tokens: ``<|0.00|> text <|2.40|><|2.40|> more
<|5.10|>`` then end-of-text. A segment is text between a start and an end timestamp.
How the output ends says whether the decoder accounted for all the audio:

* ``… text <|t|>`` then end-of-text: the last segment closed; nothing more was heard.
* ``… <|t|><|t|>`` then end-of-text (a lone start timestamp): "speech continues past
  here, beyond what I can place in this window" — the audio after ``t`` is undecoded.
* text with no closing timestamp (the token budget ran out): the last segment is
  unfinished; its words are not kept and the audio from its start is undecoded.
* a segment that starts past the end of the audio is padding the decoder imagined.
* no text at all: nothing was heard, and nothing is left over.

Timestamps can also be impossible: a segment that puts a sentence in a fraction of a
second (``<|0.00|> I moved to Portland last month.<|1.00|>`` where that sentence is
2 s long and starts at 2.5 s) is how Whisper shows it skipped the speech before it.
Such a reading is ``hurried``.

:func:`read_tokens` keeps the words of complete segments and says how far they
reached, so a caller can decode the rest again from there (as faster-whisper's own
``transcribe`` seeks). It is pure: token ids in, word ids and seconds out.
"""

from __future__ import annotations

from dataclasses import dataclass

SECONDS_PER_TIMESTAMP = 0.02
#: Faster than this (text tokens a second, over a segment of at least
#: ``HURRIED_MIN_TOKENS``) is not speech but misplaced timestamps. Fast speech is ~4.
MAX_TOKENS_PER_SECOND = 6.0
HURRIED_MIN_TOKENS = 5


@dataclass(frozen=True, slots=True)
class Reading:
    """What one decode's tokens say.

    Attributes:
        words: the text token ids of the complete segments, in order.
        covered: seconds from the start of the audio that those segments account for.
        complete: the output ended with a closed segment (no lone timestamp, no
            unfinished segment, nothing placed past the audio).
        hurried: some segment's timestamps give it an impossible speaking rate.
        unfinished: the text token ids of a last segment the decoder never closed (not
            in ``words``): a guess a live interim may show, never a final.
    """

    words: tuple[int, ...]
    covered: float
    complete: bool
    hurried: bool = False
    unfinished: tuple[int, ...] = ()


def read_tokens(tokens: list[int], *, timestamp_begin: int, eot: int,
                duration: float) -> Reading:
    """Split a decode's ``tokens`` (prompt excluded) into kept words and coverage.

    Args:
        timestamp_begin: the id of ``<|0.00|>``; every id from it up is a timestamp.
        eot: the end-of-text id; ids from it up to ``timestamp_begin`` are special.
        duration: seconds of real audio in the window (the rest is padding).
    """
    words: list[int] = []
    pending: list[int] = []  # text of the segment in progress
    segment_start = 0.0
    covered = 0.0
    closed = False  # the last timestamp seen closed a segment
    hurried = False
    for token in tokens:
        if token >= timestamp_begin:
            at = (token - timestamp_begin) * SECONDS_PER_TIMESTAMP
            if pending:
                if segment_start >= duration:
                    return Reading(tuple(words), covered, False, hurried)  # imagined
                if len(pending) >= HURRIED_MIN_TOKENS and (
                        len(pending) > MAX_TOKENS_PER_SECOND * (at - segment_start)):
                    hurried = True
                words += pending
                pending = []
                covered = min(max(covered, at), duration)
                closed = True
            else:
                segment_start = at
                closed = False
        elif token == eot:
            break
        elif token < eot:
            pending.append(token)
    if not words and not pending:
        return Reading((), 0.0, True)  # nothing said: nothing deferred either
    if pending or not closed:
        # Unfinished text or a lone start timestamp: the rest of the audio is undecoded.
        return Reading(tuple(words), covered, False, hurried, tuple(pending))
    return Reading(tuple(words), covered, True, hurried)
