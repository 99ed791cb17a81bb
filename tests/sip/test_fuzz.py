"""Property tests: no input from the wire raises anything but the documented errors,
and garbage does not disturb a call in progress."""

from __future__ import annotations

import contextlib
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callstream.sip.digest import parse_challenge
from callstream.sip.endpoint import DialogEnded, EndReason
from callstream.sip.exceptions import DigestError, FramingError, SipParseError
from callstream.sip.framing import StreamFramer
from callstream.sip.headers import parse_cseq, parse_name_addr, parse_via
from callstream.sip.message import parse_message
from callstream.sip.sdp import parse_sdp
from callstream.sip.uri import parse_uri

from .helpers import ANSWER, DATA, OFFER, UAC_ADDR, UacUasPair, fixture

FIXTURES = sorted(path.name for path in DATA.glob("*.sip"))
SIP_ALPHABET = list(b'\r\n :;,<>"@=/[]\\\t') + list(b"SIPINVTEvia0123456789")

#: Multiply example counts for a longer hunt: CALLSTREAM_FUZZ_SCALE=20 pytest tests/sip/test_fuzz.py
SCALE = int(os.environ.get("CALLSTREAM_FUZZ_SCALE", "1"))


def examples(count: int) -> settings:
    return settings(
        max_examples=count * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A real peer message with bytes flipped, inserted, deleted, cut or repeated."""
    data = bytearray(fixture(draw(st.sampled_from(FIXTURES))))
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        op = draw(st.sampled_from(["flip", "insert", "delete", "cut", "dup_line", "swap"]))
        position = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[position] = draw(st.sampled_from(SIP_ALPHABET + list(range(256))))
        elif op == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[position : position + draw(st.integers(1, 20))]
        elif op == "cut":
            del data[position:]
        elif op == "dup_line":
            end = data.find(b"\r\n", position)
            start = data.rfind(b"\r\n", 0, position)
            if 0 <= start < end:
                data[end:end] = data[start:end]
        else:
            other = draw(st.integers(0, len(data) - 1))
            data[position], data[other] = data[other], data[position]
    return bytes(data)


wire_input = st.one_of(st.binary(max_size=1500), mutated())


@given(wire_input)
@examples(600)
def test_parse_message_raises_only_parse_errors(data: bytes) -> None:
    try:
        message = parse_message(data)
    except SipParseError:
        return
    # What parses serializes and parses back to the same message.
    assert parse_message(message.serialize()) == message


@given(st.binary(max_size=600))
@examples(300)
def test_parse_sdp_raises_only_parse_errors(data: bytes) -> None:
    with contextlib.suppress(SipParseError):
        parse_sdp(data)


@given(st.text(alphabet=st.sampled_from(':;@<>"[]=?&,. \tsipta0123456789.-_+%\\'), max_size=80))
@examples(500)
def test_header_parsers_raise_only_parse_errors(text: str) -> None:
    for parser in (parse_uri, parse_via, parse_name_addr, parse_cseq):
        with contextlib.suppress(SipParseError):
            parser(text)
    with contextlib.suppress(DigestError):
        parse_challenge("Digest " + text)


@given(st.lists(st.binary(max_size=400), max_size=8))
@examples(300)
def test_framer_raises_only_framing_errors(chunks: list[bytes]) -> None:
    framer = StreamFramer()
    with contextlib.suppress(FramingError):
        for chunk in chunks:
            for message in framer.feed(chunk):
                with contextlib.suppress(SipParseError):
                    parse_message(message, stream=True)


@given(st.lists(wire_input, min_size=1, max_size=6), st.booleans())
@examples(250)
def test_garbage_does_not_disturb_a_call(garbage: list[bytes], to_uac: bool) -> None:
    pair = UacUasPair()
    handle = pair.uac.invite(
        "sip:service@127.0.0.1:5060", from_uri="sip:a@127.0.0.1", sdp=OFFER, now=pair.now
    )
    pair.pump()
    (incoming,) = pair.take_uas()
    pair.uas.answer(incoming.handle, ANSWER, pair.now)  # type: ignore[attr-defined]
    pair.pump()
    pair.take_uac()
    target = pair.uac if to_uac else pair.uas
    for data in garbage:
        target.receive_datagram(data, ("127.0.0.1", 5999), pair.now)
        target.datagrams_to_send()  # answers to the garbage go nowhere
        target.events_received()
        pair.advance(0.3)
    pair.uac.bye(handle, pair.now)
    pair.pump()
    assert pair.take_uac()[-1] == DialogEnded(handle, EndReason.LOCAL_BYE, 200)
    assert pair.take_uas()[-1] == DialogEnded(incoming.handle, EndReason.REMOTE_BYE)  # type: ignore[attr-defined]


@given(st.lists(mutated(), min_size=1, max_size=10))
@examples(200)
def test_endpoint_never_raises_on_wire_input(messages: list[bytes]) -> None:
    pair = UacUasPair()
    for data in messages:
        for endpoint in (pair.uas, pair.uac):
            endpoint.receive_datagram(data, UAC_ADDR, pair.now)
            # Let it answer/retransmit into the void for a while.
        pair.advance(1.0)
    # Every transaction and call ends (setup timeout included): nothing leaks.
    pair.advance(400)
    for endpoint in (pair.uas, pair.uac):
        assert not endpoint._server_tx and not endpoint._client_tx
        assert not endpoint._calls and not endpoint._dialogs and not endpoint._invites_in
        assert endpoint.active_calls == 0
    assert pair.next_deadline() is None
