"""NTP timestamps (RFC 5905 §6) and the one place that reads the wall clock.

Cores run on the event loop's monotonic clock (``loop.time()``). RTCP sender
reports need wall-clock NTP time, so the I/O layer reads the offset between
the two once, with :func:`wallclock_offset`, and hands it to the session.
"""

from __future__ import annotations

import time

# Seconds from the NTP era 0 epoch (1900-01-01) to the Unix epoch (1970-01-01).
NTP_UNIX_OFFSET = 2_208_988_800
NTP_FRACTION = 1 << 32
NTP_MASK = (1 << 64) - 1


def ntp_from_unix(seconds: float) -> int:
    """Return the 64-bit NTP timestamp (32.32 fixed point) of a Unix time."""
    return round((seconds + NTP_UNIX_OFFSET) * NTP_FRACTION) & NTP_MASK


def unix_from_ntp(ntp: int) -> float:
    """Return the Unix time of a 64-bit NTP timestamp (era 0)."""
    return ntp / NTP_FRACTION - NTP_UNIX_OFFSET


def ntp_middle(ntp: int) -> int:
    """Return the middle 32 bits of an NTP timestamp (RTCP LSR, RFC 3550 §6.4.1)."""
    return (ntp >> 16) & 0xFFFFFFFF


def short_ntp_to_seconds(value: int) -> float:
    """Convert a 16.16 fixed-point NTP duration (DLSR, RTT) to seconds."""
    return value / 65536.0


def seconds_to_short_ntp(seconds: float) -> int:
    """Convert seconds to a 16.16 fixed-point NTP duration, clamped to 32 bits."""
    return max(0, min(round(seconds * 65536.0), 0xFFFFFFFF))


def wallclock_offset(monotonic_now: float) -> float:
    """Return ``unix_time - monotonic_now``, read once per session.

    ``monotonic_now`` is ``loop.time()`` taken by the caller at the same
    instant; adding the result to a later ``loop.time()`` gives Unix time.
    """
    return time.time() - monotonic_now
