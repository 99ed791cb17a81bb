"""Removing what Whisper says twice: decoder loops and repeats across a cut.

Whisper repeats itself when it runs out of audio it understands ("Thank you, Mary,
Mary, Mary…", "please bring your ring your ring your") and, around a cut, may say a
phrase at the end of one final and again at the start of the next. People repeat
themselves too, but differently: digits ("five five five, two one two"), a doubled
word ("very very"). So:

* a phrase of two or more words said twice or more in a row is kept once;
* a single word said three or more times in a row is kept once;
* a phrase made only of numbers (digits or number words) is never touched.

Words are compared lower-cased without punctuation; what is kept is the text as
written. Pure functions on strings.
"""

from __future__ import annotations

import re

MAX_PHRASE_WORDS = 8  # longer repeats than this are left alone
MIN_SINGLE_REPEATS = 3  # a lone word must be said this many times to be a loop
MAX_OVERLAP_WORDS = 6  # a phrase repeated across a cut: at most this long

_NUMBER_WORDS = frozenset({
    "zero", "oh", "o", "one", "two", "three", "four", "five", "six", "seven", "eight",
    "nine", "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
    "seventeen", "eighteen", "nineteen", "twenty", "thirty", "forty", "fifty", "sixty",
    "seventy", "eighty", "ninety", "hundred", "thousand", "million", "double", "triple",
})


def word_key(word: str) -> str:
    """``word`` as words are compared: lower-cased, without punctuation."""
    return re.sub(r"[^\w']", "", word.lower())


def _is_number(key: str) -> bool:
    return any(c.isdigit() for c in key) or key in _NUMBER_WORDS


def _all_numbers(keys: list[str]) -> bool:
    return all(_is_number(k) for k in keys)


def until_repeat(text: str) -> str:
    """``text`` up to where a word or phrase is first said again at once, numbers
    included ("4 4 4 4" → "4"): for the unfinished end of a decode, where a repeat is
    the decoder stuck, not the speaker."""
    words = text.split()
    keys = [word_key(w) for w in words]
    for end in range(1, len(keys)):
        for n in range(1, min(MAX_PHRASE_WORDS, len(keys) - end, end) + 1):
            if keys[end - n: end] == keys[end: end + n]:
                return " ".join(words[:end])
    return text


def collapse_repeats(text: str) -> str:
    """``text`` with looped phrases kept once (see the module docstring)."""
    words = text.split()
    keys = [word_key(w) for w in words]
    out: list[str] = []
    i = 0
    while i < len(words):
        for n in range(1, min(MAX_PHRASE_WORDS, (len(words) - i) // 2) + 1):  # shortest first
            phrase = keys[i: i + n]
            if _all_numbers(phrase) or not all(phrase):
                continue
            repeats = 1
            while keys[i + repeats * n: i + (repeats + 1) * n] == phrase:
                repeats += 1
            if repeats >= (2 if n > 1 else MIN_SINGLE_REPEATS):
                out += words[i + (repeats - 1) * n: i + repeats * n]  # the last says it best
                i += repeats * n
                break
        else:
            out.append(words[i])
            i += 1
    return " ".join(out)


def drop_overlap(previous: str, text: str) -> str:
    """``text`` without a leading phrase (two words or more, not only numbers) that
    ``previous`` ends with: the same words heard on both sides of a cut."""
    before = [word_key(w) for w in previous.split()]
    words = text.split()
    keys = [word_key(w) for w in words]
    for n in range(min(MAX_OVERLAP_WORDS, len(before), len(words)), 1, -1):
        if keys[:n] == before[-n:] and not _all_numbers(keys[:n]) and all(keys[:n]):
            return " ".join(words[n:])
    return text
