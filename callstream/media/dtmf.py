"""DTMF over RTP: RFC 4733 telephone-event payloads, detection and generation.

A key press travels as a run of packets sharing one RTP timestamp (the event
start): the first carries the marker bit, each one reports the growing
duration, and the final "end" packet is repeated three times (RFC 4733
§2.5.1.4). Peers differ in the details — SIPp's pcaps repeat the end packet
with the same sequence number — so :class:`DtmfDetector` keys an event on
``(timestamp, event code)`` and reports each key press exactly once, on the
first packet of it that arrives.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from callstream.media.exceptions import DtmfParseError, InvalidDtmfError
from callstream.media.rtp import RtpPacket

__all__ = [
    "DTMF_DIGITS",
    "DtmfDetector",
    "DtmfDigit",
    "DtmfPlan",
    "TelephoneEvent",
    "dtmf_packets",
    "plan_dtmf",
]

# RFC 4733 §3.2: event codes 0-15 are the DTMF keys in this order.
DTMF_DIGITS = "0123456789*#ABCD"
_EVENT_OF_DIGIT = {digit: code for code, digit in enumerate(DTMF_DIGITS)}
_EVENT_OF_DIGIT.update({digit.lower(): code for digit, code in list(_EVENT_OF_DIGIT.items())})

TELEPHONE_EVENT_LENGTH = 4
MAX_VOLUME = 63
# Telnyx send_dtmf: duration_millis 100-500, default 250.
DEFAULT_DURATION_MS = 250
MIN_DURATION_MS = 40
MAX_DURATION_MS = 5000
DEFAULT_GAP_MS = 100
DEFAULT_VOLUME = 10  # -10 dBm0
END_REPEATS = 3
PACKET_MS = 20
# Events remembered to ignore a straggler of an earlier key press.
DETECTOR_MEMORY = 8

_EVENT = struct.Struct("!BBH")


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """One RFC 4733 telephone-event payload (§2.3).

    ``duration`` is in RTP timestamp units since the event started;
    ``volume`` is the power level in -dBm0 (0-63).
    """

    event: int
    end: bool = False
    volume: int = DEFAULT_VOLUME
    duration: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.event <= 255:
            raise ValueError(f"event {self.event} is not 8 bits")
        if not 0 <= self.volume <= MAX_VOLUME:
            raise ValueError(f"volume {self.volume} is not 0-63")
        if not 0 <= self.duration <= 0xFFFF:
            raise ValueError(f"duration {self.duration} is not 16 bits")

    @property
    def digit(self) -> str | None:
        """The DTMF key of this event, or None for other events (flash...)."""
        return DTMF_DIGITS[self.event] if self.event < len(DTMF_DIGITS) else None

    @classmethod
    def parse(cls, payload: bytes) -> TelephoneEvent:
        """Parse a telephone-event payload.

        Raises:
            DtmfParseError: it is shorter than 4 bytes.
        """
        if len(payload) < TELEPHONE_EVENT_LENGTH:
            raise DtmfParseError("telephone-event payload is shorter than 4 bytes")
        event, flags, duration = _EVENT.unpack_from(payload)
        # The R bit (0x40) is reserved and ignored by receivers.
        return cls(event, bool(flags & 0x80), flags & 0x3F, duration)

    def serialize(self) -> bytes:
        return _EVENT.pack(self.event, (0x80 if self.end else 0) | self.volume, self.duration)


@dataclass(frozen=True, slots=True)
class DtmfDigit:
    """A key press received from the peer: the event the session reports."""

    digit: str
    timestamp: int
    received_at: float


class DtmfDetector:
    """Turns a stream of telephone-event packets into one digit per key press."""

    __slots__ = ("_recent", "detected")

    def __init__(self) -> None:
        self._recent: deque[tuple[int, int]] = deque(maxlen=DETECTOR_MEMORY)
        self.detected = 0

    def feed(self, event: TelephoneEvent, timestamp: int, now: float) -> DtmfDigit | None:
        """Account one packet; return the digit if it starts a new key press."""
        key = (timestamp, event.event)
        if key in self._recent:
            return None  # an update, an end packet or a repeat of one
        self._recent.append(key)
        digit = event.digit
        if digit is None:
            return None
        self.detected += 1
        return DtmfDigit(digit, timestamp, now)

    def reset(self) -> None:
        """Forget earlier events (the source changed)."""
        self._recent.clear()


def _event_code(digit: str) -> int:
    try:
        return _EVENT_OF_DIGIT[digit]
    except KeyError:
        raise InvalidDtmfError(f"{digit!r} is not a DTMF key (0-9, *, #, A-D)") from None


@dataclass(frozen=True, slots=True)
class DtmfPlan:
    """What to send on one 20 ms tick of a DTMF string.

    ``event`` is None for a gap tick (send audio as usual); ``start`` marks
    the first packet of a key press (marker bit, new event timestamp).
    """

    event: TelephoneEvent | None
    start: bool = False


def plan_dtmf(
    digits: str,
    *,
    duration_ms: int = DEFAULT_DURATION_MS,
    gap_ms: int = DEFAULT_GAP_MS,
    clock_rate: int = 8000,
    volume: int = DEFAULT_VOLUME,
) -> Iterator[DtmfPlan]:
    """Yield the per-tick plan that sends ``digits`` (RFC 4733 §2.5).

    Each key: ``duration_ms / 20`` packets with growing duration, the first
    one marked, then the end packet on three ticks, then ``gap_ms`` of audio.

    Raises:
        InvalidDtmfError: a character is not a key, or a duration is out of range.
    """
    if not MIN_DURATION_MS <= duration_ms <= MAX_DURATION_MS:
        raise InvalidDtmfError(
            f"DTMF duration {duration_ms} ms is not {MIN_DURATION_MS}-{MAX_DURATION_MS} ms"
        )
    if gap_ms < 0:
        raise InvalidDtmfError(f"DTMF gap {gap_ms} ms is negative")
    codes = [_event_code(digit) for digit in digits]  # validate before yielding
    tick = clock_rate * PACKET_MS // 1000
    packets = max(duration_ms // PACKET_MS, 1)
    gap_ticks = gap_ms // PACKET_MS
    for code in codes:
        for i in range(packets - 1):
            yield DtmfPlan(TelephoneEvent(code, False, volume, (i + 1) * tick), start=i == 0)
        end = TelephoneEvent(code, True, volume, min(packets * tick, 0xFFFF))
        yield DtmfPlan(end, start=packets == 1)
        for _ in range(END_REPEATS - 1):
            yield DtmfPlan(end)
        for _ in range(gap_ticks):
            yield DtmfPlan(None)


def dtmf_packets(
    digits: str,
    *,
    payload_type: int,
    ssrc: int,
    sequence_number: int = 0,
    timestamp: int = 0,
    duration_ms: int = DEFAULT_DURATION_MS,
    gap_ms: int = DEFAULT_GAP_MS,
    clock_rate: int = 8000,
) -> list[RtpPacket]:
    """Return the RTP packets that send ``digits`` (gaps carry no packets).

    The timestamp advances 20 ms per tick, gaps included, as a sender's
    clock does; every packet of one key press carries its start timestamp.
    """
    tick = clock_rate * PACKET_MS // 1000
    packets = []
    seq = sequence_number
    ts = timestamp
    event_ts = timestamp
    for step in plan_dtmf(digits, duration_ms=duration_ms, gap_ms=gap_ms, clock_rate=clock_rate):
        if step.event is not None:
            if step.start:
                event_ts = ts
            packets.append(
                RtpPacket(
                    payload_type=payload_type,
                    sequence_number=seq,
                    timestamp=event_ts,
                    ssrc=ssrc,
                    payload=step.event.serialize(),
                    marker=step.start,
                )
            )
            seq = (seq + 1) & 0xFFFF
        ts = (ts + tick) & 0xFFFFFFFF
    return packets
