"""Wraparound arithmetic for RTP sequence numbers (16 bit) and timestamps (32 bit).

RFC 3550 §5.1 sequence numbers and timestamps are modular; comparisons use
the serial-number rule of RFC 1982: ``a`` is after ``b`` when the forward
distance from ``b`` to ``a`` is less than half the space.
"""

from __future__ import annotations

SEQ_MOD = 1 << 16
SEQ_MASK = SEQ_MOD - 1
SEQ_HALF = 1 << 15
TS_MOD = 1 << 32
TS_MASK = TS_MOD - 1
TS_HALF = 1 << 31


def seq_add(seq: int, delta: int) -> int:
    """Return ``seq + delta`` modulo 2**16."""
    return (seq + delta) & SEQ_MASK


def seq_diff(a: int, b: int) -> int:
    """Return the signed distance ``a - b`` in [-32768, 32767]."""
    return ((a - b + SEQ_HALF) & SEQ_MASK) - SEQ_HALF


def seq_gt(a: int, b: int) -> bool:
    """Return whether sequence number ``a`` comes after ``b``."""
    return seq_diff(a, b) > 0


def unwrap_seq(seq: int, reference: int) -> int:
    """Extend a 16-bit ``seq`` to the extended number nearest ``reference``.

    ``reference`` is an already extended (unbounded) sequence number, for
    example the highest one seen so far. The result may be negative when the
    stream starts near 0 and an older packet arrives.
    """
    return reference + seq_diff(seq, reference & SEQ_MASK)


def ts_add(ts: int, delta: int) -> int:
    """Return ``ts + delta`` modulo 2**32."""
    return (ts + delta) & TS_MASK


def ts_diff(a: int, b: int) -> int:
    """Return the signed distance ``a - b`` between two RTP timestamps."""
    return ((a - b + TS_HALF) & TS_MASK) - TS_HALF
