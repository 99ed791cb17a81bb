from __future__ import annotations

import pytest

from callstream.workers.exceptions import RelayError
from callstream.workers.relay import (
    WAKE_MESSAGE,
    Ready,
    SipDatagram,
    Wake,
    decode,
    encode_ready,
    encode_sip,
)


@pytest.mark.parametrize("addr", [("127.0.0.1", 5062), ("::1", 65535), ("10.1.2.3", 0)])
def test_sip_datagrams_round_trip(addr: tuple[str, int]) -> None:
    data = b"OPTIONS sip:x SIP/2.0\r\n\r\n"
    assert decode(encode_sip(data, addr)) == SipDatagram(data, addr)


def test_ready_and_wake_round_trip() -> None:
    assert decode(encode_ready(40123)) == Ready(40123)
    assert decode(WAKE_MESSAGE) == Wake()


@pytest.mark.parametrize(("message", "error"), [
    (b"", "empty"),
    (b"Q", "unknown relay message kind"),
    (b"S\x13", "truncated"),
    (b"S\x13\xc4\x09127", "truncated"),
    (b"R\x01", "ready message of 2 bytes"),
])
def test_bad_messages_are_precise_errors(message: bytes, error: str) -> None:
    with pytest.raises(RelayError, match=error):
        decode(message)
