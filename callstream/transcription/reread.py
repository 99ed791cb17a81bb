"""What a re-read adds: the new part of a decode that heard the previous utterance too.

A pause splits a sentence into short utterances, and Whisper decodes a short piece
worse than the same words inside their sentence ("The epoch of infidelity." alone,
"It was the epoch of belief. It was the epoch of incredulity." with the utterance
before it). So a two-pass final may be decoded over the previous utterance's audio
as well (:class:`~callstream.transcription.whisper.WhisperTrack`), and only what
follows the previous final's words is emitted: this module finds that point.

The decode's words are aligned to the previous final's (edit distance, words compared
lower-cased without punctuation) at the prefix that matches them best; what comes
after it is new. A re-read that disagrees with the previous final on more than
:data:`MAX_MISMATCH_SHARE` of its words is not trusted (None: decode the utterance
alone). Pure functions on strings.
"""

from __future__ import annotations

from callstream.transcription.repetition import word_key

MAX_MISMATCH_SHARE = 0.5  # edits per previous-final word above which the split is a guess


def new_part(previous: str, text: str) -> str | None:
    """``text`` after the words it shares with ``previous`` (which it starts with, as
    heard again), or None when no prefix of ``text`` is close enough to ``previous``
    to say where it ends, or when nothing follows it."""
    before = [word_key(w) for w in previous.split()]
    words = text.split()
    keys = [word_key(w) for w in words]
    if not before:
        return None
    # row[j]: edits turning before[:i] into keys[:j], one previous word (i) at a time.
    row = list(range(len(keys) + 1))
    for i, word in enumerate(before, 1):
        above, row = row, [i]
        for j, key in enumerate(keys, 1):
            row.append(min(above[j] + 1, row[j - 1] + 1, above[j - 1] + (word != key)))
    edits = min(row)
    # The longest best prefix: a word where the previous final's last word was heard
    # is that word heard differently ("infidelity" / "incredulity"), not a new one.
    split = len(row) - 1 - row[::-1].index(edits)
    if edits > MAX_MISMATCH_SHARE * len(before) or split == len(words):
        return None
    return " ".join(words[split:])
