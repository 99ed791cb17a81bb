"""The consumer's frames (spec §5.3): parsed into dataclasses, or refused with the code
the ``error`` frame carries; never any other exception, whatever arrives."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from callstream.streaming.protocol import (
    MAX_CLIENT_FRAME_BYTES,
    MAX_MARK_NAME_CHARS,
    ClientClear,
    ClientMark,
    ClientMedia,
    ErrorReport,
    FrameBuilder,
    MarkEcho,
    StreamErrorCode,
    StreamProtocolError,
    parse_client_frame,
)
from callstream.streaming.protocol import client as client_module

MALFORMED = StreamErrorCode.MALFORMED_FRAME
INVALID = StreamErrorCode.INVALID_MEDIA


def refusal(text: str | bytes) -> StreamProtocolError:
    with pytest.raises(StreamProtocolError) as info:
        parse_client_frame(text)
    return info.value


def test_media_mark_clear_with_or_without_stream_fields() -> None:
    payload = base64.b64encode(b"\xff\x7f" * 80).decode()
    assert parse_client_frame(json.dumps({"event": "media", "media": {"payload": payload}})) \
        == ClientMedia(b"\xff\x7f" * 80)
    assert parse_client_frame(json.dumps({
        "event": "media", "stream_id": "s", "sequence_number": "4",
        "media": {"payload": payload, "track": "outbound"}})) == ClientMedia(b"\xff\x7f" * 80)
    assert parse_client_frame('{"event":"mark","mark":{"name":"greeting-done"}}') \
        == ClientMark("greeting-done")
    assert parse_client_frame(b'{"event":"clear"}') == ClientClear()
    assert parse_client_frame('{"event":"media","media":{"payload":""}}') == ClientMedia(b"")


@pytest.mark.parametrize(("text", "code", "detail"), [
    ("not json", MALFORMED, "could not be parsed as JSON"),
    ("", MALFORMED, "could not be parsed as JSON"),
    ('["event"]', MALFORMED, "must be a JSON object"),
    ('{"media": {}}', MALFORMED, 'no "event" string'),
    ('{"event": 7}', MALFORMED, 'no "event" string'),
    ('{"event": "play"}', MALFORMED, "Unknown event 'play'; expected media, mark or clear"),
    ('{"event": "media"}', MALFORMED, '"media.payload" string'),
    ('{"event": "media", "media": "AAAA"}', MALFORMED, '"media.payload" string'),
    ('{"event": "media", "media": {"payload": 5}}', MALFORMED, '"media.payload" string'),
    ('{"event": "media", "media": {"payload": "AAA"}}', INVALID, "not valid base64"),
    ('{"event": "media", "media": {"payload": "AA-_"}}', INVALID, "not valid base64"),
    ('{"event": "media", "media": {"payload": "é"}}', INVALID, "not valid base64"),
    ('{"event": "mark"}', MALFORMED, '"mark.name" string'),
    ('{"event": "mark", "mark": {"name": null}}', MALFORMED, '"mark.name" string'),
])
def test_refusals_say_what_is_wrong(text: str, code: StreamErrorCode, detail: str) -> None:
    error = refusal(text)
    assert error.code is code and detail in error.detail
    assert str(error).startswith(f"{code.title} ({int(code)}): ")


def test_long_values_are_cut_in_the_detail_and_limits_hold() -> None:
    error = refusal(json.dumps({"event": "x" * 500}))
    assert len(error.detail) < 200 and "…" in error.detail
    assert parse_client_frame(json.dumps({"event": "mark", "mark": {
        "name": "m" * MAX_MARK_NAME_CHARS}})) == ClientMark("m" * MAX_MARK_NAME_CHARS)
    error = refusal(json.dumps({"event": "mark", "mark": {"name": "m" * (MAX_MARK_NAME_CHARS
                                                                          + 1)}}))
    assert error.code is MALFORMED and f"at most {MAX_MARK_NAME_CHARS}" in error.detail
    error = refusal(" " * (MAX_CLIENT_FRAME_BYTES + 1))
    assert error.code is MALFORMED and f"at most {MAX_CLIENT_FRAME_BYTES} bytes" in error.detail


def test_echo_and_error_frames_are_numbered_like_every_frame() -> None:
    frames = FrameBuilder("sid")
    frames.start({}, now=0.0)
    assert frames.event(MarkEcho("m")) == (
        b'{"event":"mark","sequence_number":"2","stream_id":"sid","mark":{"name":"m"}}')
    assert frames.event(ErrorReport(StreamErrorCode.INVALID_MEDIA, "bad")) == (
        b'{"event":"error","sequence_number":"3","stream_id":"sid","payload":'
        b'{"code":100004,"title":"invalid_media","detail":"bad"}}')


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)


@given(st.text() | st.binary())
def test_garbage_is_refused_never_crashes(text: str | bytes) -> None:
    try:
        parse_client_frame(text)
    except StreamProtocolError as exc:
        assert exc.code in (MALFORMED, INVALID) and exc.detail


@given(st.sampled_from(["media", "mark", "clear", "start", ""]), JSON, JSON)
def test_any_json_object_is_parsed_or_refused(event: str, media: object, mark: object) -> None:
    text = json.dumps({"event": event, "media": media, "mark": mark})
    try:
        frame = parse_client_frame(text)
    except StreamProtocolError as exc:
        assert exc.code in (MALFORMED, INVALID)
    else:
        assert {"media": ClientMedia, "mark": ClientMark, "clear": ClientClear}[event] \
            is type(frame)


def outcome(text: str) -> object:
    try:
        return parse_client_frame(text)
    except StreamProtocolError as refusal:
        return (refusal.code, refusal.detail)


@given(middle=st.text(alphabet='AQw+/=_-"\\ \néu0}', max_size=12),
       spaced=st.booleans())
@example(middle="", spaced=False)
@example(middle=base64.b64encode(bytes(range(256))).decode(), spaced=True)
@example(middle='AAAA"}},"media":{"payload":"BBBB', spaced=False)
@example(middle="\\u0041AAA", spaced=False)  # JSON escapes: base64 only once unescaped
def test_media_messages_read_without_a_json_parse_say_what_the_json_says(
        middle: str, spaced: bool) -> None:
    """The common ``media`` shapes are read by their bytes; whatever lies between start and
    end, the result (or refusal) is the full parse's."""
    text = (json.dumps({"event": "media", "media": {"payload": "@"}}) if spaced
            else '{"event":"media","media":{"payload":"@"}}').replace("@", middle)
    fast = outcome(text)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(client_module, "_MEDIA_STARTS", ())
        assert outcome(text) == fast


def test_the_common_media_shapes_skip_the_json_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    class NoJson:
        JSONDecodeError = ValueError

        @staticmethod
        def loads(text: object) -> object:
            raise AssertionError("parsed as JSON")

    monkeypatch.setattr(client_module, "orjson", NoJson)
    payload = base64.b64encode(b"\xff\x7f" * 80).decode()
    for text in (json.dumps({"event": "media", "media": {"payload": payload}}),
                 f'{{"event":"media","media":{{"payload":"{payload}"}}}}'):
        assert parse_client_frame(text) == ClientMedia(b"\xff\x7f" * 80)
