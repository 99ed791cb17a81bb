"""The media error tree: who is at fault, and builtins callers can catch."""

from __future__ import annotations

from callstream.media.exceptions import (
    CodecError,
    DtmfParseError,
    InvalidDtmfError,
    MediaError,
    MediaParseError,
    MediaStateError,
    OpusPacketError,
    PortsExhaustedError,
    RtcpParseError,
    RtpParseError,
    UnknownCodecError,
)


def test_remote_errors_are_parse_errors() -> None:
    for error in (RtpParseError, RtcpParseError, DtmfParseError, OpusPacketError):
        assert issubclass(error, MediaParseError)
        assert issubclass(error, ValueError)
        assert issubclass(error, MediaError)


def test_local_errors() -> None:
    assert issubclass(MediaStateError, RuntimeError)
    assert issubclass(InvalidDtmfError, ValueError)
    assert issubclass(UnknownCodecError, CodecError)
    assert issubclass(UnknownCodecError, LookupError)
    assert not issubclass(MediaStateError, MediaParseError)


def test_structured_errors_render() -> None:
    assert str(UnknownCodecError("OPUS")) == "unknown codec 'OPUS'"
    assert str(UnknownCodecError("PCMU", 16000)) == "unknown codec 'PCMU' at 16000 Hz"
    error = PortsExhaustedError(10000, 10100)
    assert (error.range_start, error.range_end) == (10000, 10100)
    assert str(error) == "no free RTP port pair in 10000-10100"
