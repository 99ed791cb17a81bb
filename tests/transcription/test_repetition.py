"""The loop and repeat filter: Whisper's loops go, people's repeats stay."""

from __future__ import annotations

import pytest

from callstream.transcription.repetition import collapse_repeats, drop_overlap, until_repeat


@pytest.mark.parametrize(("text", "expected"), [
    # Decoder loops.
    ("Thank you, Mary, Mary, Mary, Mary, Mary.", "Thank you, Mary."),
    ("Please bring your ring your ring your ring your insurance card.",
     "Please bring your ring your insurance card."),
    ("and arrive and arrive 10 minutes early", "and arrive 10 minutes early"),
    ("after June 13, after June 13, after June 13.", "after June 13."),
    ("the tracking page page page page page page", "the tracking page"),
    # Phone numbers and other digit runs are what people say.
    ("call us at five five five, two one nine, eight eight four zero",
     "call us at five five five, two one nine, eight eight four zero"),
    ("my PIN is 1 1 1 1", "my PIN is 1 1 1 1"),
    ("5, 5, 5, 2, 1, 9, 8, 8, 4, 0", "5, 5, 5, 2, 1, 9, 8, 8, 4, 0"),
    ("that's double double oh seven", "that's double double oh seven"),
    # A doubled word is speech, not a loop.
    ("it was very very good", "it was very very good"),
    ("", ""),
])
def test_collapse_repeats(text: str, expected: str) -> None:
    assert collapse_repeats(text) == expected


@pytest.mark.parametrize(("previous", "text", "expected"), [
    ("It was supposed to arrive after June", "after June 13th but nothing came.",
     "13th but nothing came."),
    ("Please bring your", "Bring your insurance card.", "insurance card."),
    # One word is not evidence enough; numbers are read on.
    ("and then I said no", "no way", "no way"),
    ("my number is five five", "five five two one", "five five two one"),
    ("", "hello there", "hello there"),
])
def test_drop_overlap(previous: str, text: str, expected: str) -> None:
    assert drop_overlap(previous, text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("4 4 4 4 4 4", "4"),
    ("four, four, four, four", "four,"),
    ("four queen of four queen of four", "four queen of"),
    ("seven of", "seven of"),
    ("five five", "five"),  # stricter than collapse_repeats: for a decoder's loose end
    ("he might even have been", "he might even have been"),
    ("", ""),
])
def test_until_repeat(text: str, expected: str) -> None:
    assert until_repeat(text) == expected
