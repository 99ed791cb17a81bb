"""DTMF bodies of SIP INFO: callstream.sip.dtmf."""

from __future__ import annotations

import pytest

from callstream.sip.dtmf import DTMF_CONTENT_TYPES, parse_dtmf

RELAY, PLAIN = DTMF_CONTENT_TYPES


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        (RELAY, b"Signal=5\r\nDuration=160\r\n", ("5", 160)),
        (RELAY, b"signal = 9\r\n", ("9", None)),  # names are case-insensitive, spaces allowed
        (RELAY, b"Signal=10\r\n", ("*", None)),  # event codes 10-15 (RFC 4733 numbering)
        (RELAY, b"Signal=11\r\n", ("#", None)),
        (RELAY, b"Signal=15\r\n", ("D", None)),
        (RELAY, b"Signal=a\r\n", ("A", None)),
        (RELAY, b"Duration=100\r\nSignal=#\r\n", ("#", 100)),
        (PLAIN, b"*", ("*", None)),
        (PLAIN, b"12", ("A", None)),  # the event codes hold here too
        (PLAIN, b" 7\r\n", ("7", None)),
    ],
)
def test_digits(content_type: str, body: bytes, expected: tuple[str, int | None]) -> None:
    assert parse_dtmf(content_type, body) == expected


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (RELAY, b"Duration=160\r\n"),  # no signal
        (RELAY, b"Signal=X\r\n"),  # not a DTMF digit
        (RELAY, b"Signal=16\r\n"),  # past the 0-15 event codes
        (RELAY, b"Signal=12345\r\n"),
        (RELAY, b"Signal=\xff\r\n"),  # not ASCII
        (PLAIN, b"123"),
        (PLAIN, b""),
    ],
)
def test_bodies_naming_no_single_digit(content_type: str, body: bytes) -> None:
    assert parse_dtmf(content_type, body) is None


@pytest.mark.parametrize("duration", [b"-5", b"1e3", b"1234567", b""])
def test_a_duration_that_is_not_a_short_ascii_number_is_left_out(duration: bytes) -> None:
    assert parse_dtmf(RELAY, b"Signal=1\r\nDuration=" + duration + b"\r\n") == ("1", None)
