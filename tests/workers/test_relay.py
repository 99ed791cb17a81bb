from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callstream.sip.records import TCP
from callstream.workers.exceptions import RelayError
from callstream.workers.relay import (
    WAKE_MESSAGE,
    Ready,
    SipDatagram,
    TcpFailed,
    TcpSend,
    Wake,
    decode,
    encode_ready,
    encode_sip,
    encode_tcp_failed,
    encode_tcp_send,
)


@pytest.mark.parametrize("addr", [("127.0.0.1", 5062), ("::1", 65535), ("10.1.2.3", 0)])
def test_sip_messages_round_trip(addr: tuple[str, int]) -> None:
    data = b"OPTIONS sip:x SIP/2.0\r\n\r\n"
    assert decode(encode_sip(data, addr)) == SipDatagram(data, addr)
    assert decode(encode_sip(data, addr, TCP)) == SipDatagram(data, addr, TCP)
    assert decode(encode_tcp_send(data, addr)) == TcpSend(data, addr)
    assert decode(encode_tcp_failed(addr)) == TcpFailed(addr)


@given(st.binary(max_size=300))
def test_any_message_decodes_or_is_a_relay_error(message: bytes) -> None:
    with contextlib.suppress(RelayError):
        decode(message)


def test_ready_and_wake_round_trip() -> None:
    assert decode(encode_ready(40123)) == Ready(40123)
    assert decode(WAKE_MESSAGE) == Wake()


@pytest.mark.parametrize(("message", "error"), [
    (b"", "empty"),
    (b"Q", "unknown relay message kind"),
    (b"S\x13", "truncated"),
    (b"S\x13\xc4\x09127", "truncated"),
    (b"R\x01", "ready message of 2 bytes"),
    (b"T\x13", "truncated 'T'"),
    (b"O\x13\xc4\x01\xff", "non-ASCII host"),
    (b"F\x13\xc4\x01hx", "TCP failure message with 1 bytes"),
])
def test_bad_messages_are_precise_errors(message: bytes, error: str) -> None:
    with pytest.raises(RelayError, match=error):
        decode(message)
