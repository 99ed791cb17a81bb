"""RFC 4733 telephone events: payloads, detection, generation."""

from __future__ import annotations

import struct

import pytest

from callstream.media.dtmf import (
    DTMF_DIGITS,
    DtmfDetector,
    TelephoneEvent,
    dtmf_packets,
    plan_dtmf,
)
from callstream.media.exceptions import DtmfParseError, InvalidDtmfError
from callstream.media.rtp import RtpPacket

# SIPp's dtmf_2833_1.pcap, payloads in order: seven updates, then the end
# packet three times with the same sequence number and timestamp.
SIPP_DIGIT_1 = [
    (7984, "010a0000"),
    (7985, "010a0140"),
    (7986, "010a0280"),
    (7987, "010a03c0"),
    (7988, "010a0500"),
    (7989, "010a0640"),
    (7990, "010a0780"),
    (7991, "018a08c0"),
    (7991, "018a08c0"),
    (7991, "018a08c0"),
]


def test_parse_and_serialize() -> None:
    event = TelephoneEvent.parse(bytes.fromhex("018a08c0"))
    assert event == TelephoneEvent(event=1, end=True, volume=10, duration=0x08C0)
    assert event.digit == "1"
    assert event.serialize() == bytes.fromhex("018a08c0")


def test_reserved_bit_is_ignored() -> None:
    assert TelephoneEvent.parse(bytes.fromhex("05ca0000")) == TelephoneEvent(5, True, 10, 0)


def test_non_dtmf_event_has_no_digit() -> None:
    assert TelephoneEvent(16).digit is None  # flash


def test_short_payload() -> None:
    with pytest.raises(DtmfParseError, match=r"^telephone-event payload is shorter than 4 bytes$"):
        TelephoneEvent.parse(b"\x01\x0a\x00")


def test_invalid_events_cannot_be_built() -> None:
    with pytest.raises(ValueError, match="volume"):
        TelephoneEvent(1, volume=64)
    with pytest.raises(ValueError, match="duration"):
        TelephoneEvent(1, duration=70000)


def test_sipp_key_press_is_one_digit() -> None:
    detector = DtmfDetector()
    digits = []
    for n, (_seq, payload) in enumerate(SIPP_DIGIT_1):
        found = detector.feed(TelephoneEvent.parse(bytes.fromhex(payload)), 13280, n * 0.02)
        if found is not None:
            digits.append(found)
    assert [d.digit for d in digits] == ["1"]
    assert digits[0].timestamp == 13280
    assert digits[0].received_at == 0.0


def test_lost_start_still_detects_once() -> None:
    detector = DtmfDetector()
    found = [
        detector.feed(TelephoneEvent.parse(bytes.fromhex(p)), 13280, 0.0)
        for _, p in SIPP_DIGIT_1[4:]
    ]
    assert [f.digit for f in found if f is not None] == ["1"]


def test_same_key_twice_is_two_digits() -> None:
    detector = DtmfDetector()
    first = detector.feed(TelephoneEvent(5), 1000, 0.0)
    again = detector.feed(TelephoneEvent(5, end=True), 1000, 0.1)
    second = detector.feed(TelephoneEvent(5), 3000, 0.5)
    assert first is not None and again is None and second is not None


def test_generated_packets_detect_exactly() -> None:
    packets = dtmf_packets("0123456789*#ABCD", payload_type=101, ssrc=7, sequence_number=65530)
    detector = DtmfDetector()
    digits = []
    for packet in packets:
        parsed = RtpPacket.parse(packet.serialize())
        found = detector.feed(TelephoneEvent.parse(parsed.payload), parsed.timestamp, 0.0)
        if found is not None:
            digits.append(found.digit)
    assert "".join(digits) == DTMF_DIGITS


def test_generated_packet_shape() -> None:
    """250 ms = 12 ticks: 11 updates, the end on the 12th and twice more; one timestamp."""
    packets = dtmf_packets("5", payload_type=101, ssrc=1, sequence_number=10, timestamp=8000)
    assert len(packets) == 11 + 3
    assert [p.sequence_number for p in packets] == list(range(10, 24))
    assert {p.timestamp for p in packets} == {8000}
    assert [p.marker for p in packets] == [True] + [False] * 13
    events = [TelephoneEvent.parse(p.payload) for p in packets]
    assert [e.duration for e in events[:3]] == [160, 320, 480]
    assert all(e.end for e in events[-3:]) and not any(e.end for e in events[:-3])
    assert events[-1].duration == 12 * 160
    assert events[-1].serialize() == struct.pack("!BBH", 5, 0x80 | 10, 12 * 160)


def test_second_digit_starts_after_the_gap() -> None:
    packets = dtmf_packets("12", payload_type=101, ssrc=1, duration_ms=100, gap_ms=100)
    first_ts = packets[0].timestamp
    second = [p for p in packets if TelephoneEvent.parse(p.payload).event == 2]
    # 4 update ticks, 3 end ticks, 5 gap ticks.
    assert second[0].timestamp == first_ts + 12 * 160
    assert second[0].marker


def test_plan_rejects_bad_input() -> None:
    with pytest.raises(InvalidDtmfError, match="'x' is not a DTMF key"):
        list(plan_dtmf("1x"))
    with pytest.raises(InvalidDtmfError, match="duration"):
        list(plan_dtmf("1", duration_ms=10))
    with pytest.raises(InvalidDtmfError, match="gap"):
        list(plan_dtmf("1", gap_ms=-1))


def test_lower_case_keys() -> None:
    plan = [step for step in plan_dtmf("a", duration_ms=40) if step.event is not None]
    assert plan[0].event is not None and plan[0].event.digit == "A"
