"""Errors raised by :mod:`callstream.media`.

The tree::

    MediaError
    ├── MediaParseError (ValueError)        remote bytes that do not parse;
    │   │                                   the session counts and drops them
    │   ├── RtpParseError
    │   ├── RtcpParseError
    │   ├── DtmfParseError
    │   └── OpusPacketError                 an Opus packet a stream consumer sent
    ├── CodecError                          a codec cannot be built or fed
    │   └── UnknownCodecError (LookupError) no codec by that name or rate
    ├── InvalidDtmfError (ValueError)       a local DTMF request with a bad digit
    ├── MediaStateError (RuntimeError)      a local call made in the wrong state
    │                                       (our bug, never the peer's)
    └── PortsExhaustedError                 no free even port left in the RTP range

Remote errors (``MediaParseError``) never escape the sans-I/O session: it
catches them, bumps ``malformed_dropped`` and logs at debug level. Local
errors are raised to the caller.
"""

from __future__ import annotations

__all__ = [
    "CodecError",
    "DtmfParseError",
    "InvalidDtmfError",
    "MediaError",
    "MediaParseError",
    "MediaStateError",
    "OpusPacketError",
    "PortsExhaustedError",
    "RtcpParseError",
    "RtpParseError",
    "UnknownCodecError",
]


class MediaError(Exception):
    """Base class of every error raised by ``callstream.media``."""


class MediaParseError(MediaError, ValueError):
    """Bytes received from a peer are not a valid packet."""


class RtpParseError(MediaParseError):
    """An RTP packet (RFC 3550 §5.1) is malformed."""


class RtcpParseError(MediaParseError):
    """An RTCP packet (RFC 3550 §6) is malformed."""


class DtmfParseError(MediaParseError):
    """An RFC 4733 telephone-event payload is malformed."""


class OpusPacketError(MediaParseError):
    """An Opus packet (RFC 6716 §3) is malformed or libopus cannot decode it."""


class CodecError(MediaError):
    """A codec cannot be built or cannot process its input."""


class UnknownCodecError(CodecError, LookupError):
    """No codec is registered under the requested name and rate."""

    def __init__(self, name: str, clock_rate: int | None = None) -> None:
        self.name = name
        self.clock_rate = clock_rate
        super().__init__(name, clock_rate)

    def __str__(self) -> str:
        if self.clock_rate is None:
            return f"unknown codec {self.name!r}"
        return f"unknown codec {self.name!r} at {self.clock_rate} Hz"


class InvalidDtmfError(MediaError, ValueError):
    """A DTMF string given to us locally holds a character that is not a key."""


class MediaStateError(MediaError, RuntimeError):
    """A local call was made in a state that does not allow it."""


class PortsExhaustedError(MediaError):
    """Every even port of the configured RTP range is in use (ours or busy)."""

    def __init__(self, range_start: int, range_end: int, *, busy: int = 0) -> None:
        self.range_start = range_start
        self.range_end = range_end
        self.busy = busy
        super().__init__(range_start, range_end, busy)

    def __str__(self) -> str:
        text = f"no free RTP port pair in {self.range_start}-{self.range_end}"
        if self.busy:
            text += f" ({self.busy} pairs held by other programs)"
        return text
