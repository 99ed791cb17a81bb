"""DTMF digits carried in SIP INFO bodies (``application/dtmf-relay``, ``application/dtmf``).

Neither format has an RFC: ``application/dtmf-relay`` is Cisco's
``Signal=5`` / ``Duration=160`` lines, ``application/dtmf`` a bare digit. Both
are what SIP phones and gateways send when DTMF goes out of band.
"""

from __future__ import annotations

__all__ = ["DTMF_CONTENT_TYPES", "parse_dtmf"]

#: Content types we accept for DTMF in INFO.
DTMF_CONTENT_TYPES = ("application/dtmf-relay", "application/dtmf")
_DTMF_DIGITS = "0123456789*#ABCD"
_DTMF_CODES = {"10": "*", "11": "#", "12": "A", "13": "B", "14": "C", "15": "D"}


def parse_dtmf(content_type: str, body: bytes) -> tuple[str, int | None] | None:
    """``(digit, duration_ms)`` from an INFO body of ``content_type``, or
    ``None`` when it names no single digit of ``0-9 * # A-D``."""
    try:
        text = body.decode("ascii").strip()
    except UnicodeDecodeError:
        return None
    signal: str | None = None
    duration: int | None = None
    if content_type == "application/dtmf":
        signal = text
    else:
        for line in text.splitlines():
            name, _, value = line.partition("=")
            name, value = name.strip().lower(), value.strip()
            if name == "signal":
                signal = value
            elif name == "duration" and value.isascii() and value.isdigit() and len(value) < 7:
                duration = int(value)
    if signal is None:
        return None
    signal = _DTMF_CODES.get(signal, signal).upper()
    if len(signal) != 1 or signal not in _DTMF_DIGITS:
        return None
    return signal, duration
