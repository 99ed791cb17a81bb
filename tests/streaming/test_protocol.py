"""The server→client frames (spec §5.2): numbering, fields, codec resolution."""

from __future__ import annotations

import base64
import json

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from callstream.media.codecs import G722, L16, PCMA, PCMU
from callstream.streaming.protocol import FrameBuilder, media_format


def test_connected_has_no_sequence_number_and_carries_the_token() -> None:
    assert json.loads(FrameBuilder.connected()) == {"event": "connected", "version": "1.0.0"}
    assert json.loads(FrameBuilder.connected("s3cr3t")) == {
        "event": "connected", "version": "1.0.0", "x-telnyx-streaming-auth-token": "s3cr3t"}


def test_sequence_numbers_are_strings_from_one_across_every_frame() -> None:
    frames = FrameBuilder("sid")
    start = json.loads(frames.start({"call_control_id": "v3:x"}, now=10.0))
    assert start == {"event": "start", "sequence_number": "1", "stream_id": "sid",
                     "start": {"call_control_id": "v3:x"}}
    media = json.loads(frames.media("inbound", b"\xff" * 160, now=10.04))
    dtmf = json.loads(frames.dtmf("5", "2026-05-01T10:00:03.512345Z"))
    mark = json.loads(frames.stamp({"event": "mark", "mark": {"name": "m"}}))
    error = json.loads(frames.stamp({"event": "error", "payload": {"code": 100003}}))
    stop = json.loads(frames.stop("user", "v3:x"))
    assert [f["sequence_number"] for f in (media, dtmf, mark, error, stop)] == [
        "2", "3", "4", "5", "6"]
    assert all(f["stream_id"] == "sid" for f in (media, dtmf, mark, error, stop))
    assert dtmf["dtmf"] == {"digit": "5"} and dtmf["occurred_at"].endswith("Z")
    assert mark["mark"] == {"name": "m"} and error["payload"] == {"code": 100003}
    assert stop["stop"] == {"user_id": "user", "call_control_id": "v3:x"}
    assert media["media"] == {"track": "inbound", "chunk": "1", "timestamp": "40",
                              "payload": base64.b64encode(b"\xff" * 160).decode()}


def test_chunks_count_per_track() -> None:
    frames = FrameBuilder("sid", start_time=0.0)
    tracks = ["inbound", "outbound", "inbound", "inbound", "outbound"]
    chunks = [json.loads(frames.media(t, b"x", now=0.0))["media"]["chunk"] for t in tracks]
    assert chunks == ["1", "1", "2", "3", "2"]


def media_as_dict(stream_id: str, sequence: int, track: str, chunk: int, timestamp: int,
                  payload: bytes) -> bytes:
    """A ``media`` frame as the dict-and-orjson builder made it (the wire to keep)."""
    return orjson.dumps({
        "event": "media",
        "sequence_number": str(sequence),
        "stream_id": stream_id,
        "media": {"track": track, "chunk": str(chunk), "timestamp": str(timestamp),
                  "payload": base64.b64encode(payload).decode("ascii")},
    })


def test_media_frame_bytes_are_exactly_orjsons() -> None:
    frames = FrameBuilder("6d1f0b5e-2a4c-4f0e-9b1d-3c5e7a9b1d2f", start_time=100.0)
    got = frames.media("outbound", b"\x00\x7f\xff" * 53, now=100.0204)
    assert got == media_as_dict("6d1f0b5e-2a4c-4f0e-9b1d-3c5e7a9b1d2f", 1, "outbound", 1, 20,
                                b"\x00\x7f\xff" * 53)
    assert got.startswith(b'{"event":"media","sequence_number":"1","stream_id":"6d1f')


@given(stream_id=st.text(max_size=40), payload=st.binary(max_size=400),
       tracks=st.lists(st.sampled_from(["inbound", "outbound"]), min_size=1, max_size=6),
       start=st.floats(0, 1e6), offset=st.floats(-1.0, 1e5))
def test_media_frames_match_the_dict_builder_for_any_input(
        stream_id: str, payload: bytes, tracks: list[str], start: float, offset: float) -> None:
    """The template escapes a stream id as orjson does, clamps early audio to 0 and
    counts chunks per track: byte for byte what the dict builder sent."""
    frames = FrameBuilder(stream_id, start_time=start)
    chunks = {"inbound": 0, "outbound": 0}
    for sequence, track in enumerate(tracks, 1):
        chunks[track] += 1
        timestamp = max(0, round((start + offset - start) * 1000))
        assert frames.media(track, payload, start + offset) == media_as_dict(
            stream_id, sequence, track, chunks[track], timestamp, payload)


def test_media_refuses_an_unknown_track() -> None:
    with pytest.raises(KeyError):
        FrameBuilder("sid").media('in"bound', b"x", 0.0)


@pytest.mark.parametrize(("stream_codec", "call", "encoding", "rate"), [
    ("default", PCMU, "PCMU", 8000),
    ("default", PCMA, "PCMA", 8000),
    ("default", G722, "G722", 8000),  # the RTP clock rate (spec §12.13)
    ("PCMA", PCMU, "PCMA", 8000),
    ("G722", PCMU, "G722", 8000),
    ("L16", PCMU, "L16", 16000),
    ("PCMU", L16, "PCMU", 8000),
])
def test_media_format(stream_codec: str, call: object, encoding: str, rate: int) -> None:
    fmt = media_format(stream_codec, call)  # type: ignore[arg-type]
    assert fmt.as_frame() == {"encoding": encoding, "sample_rate": rate, "channels": 1}


@pytest.mark.parametrize("rate", [8000, 16000, 24000, 48000])
def test_opus_runs_at_the_bidirectional_sampling_rate(rate: int) -> None:
    fmt = media_format("OPUS", PCMU, rate)
    assert fmt.as_frame() == {"encoding": "OPUS", "sample_rate": rate, "channels": 1}
    assert fmt.codec.sample_rate == rate


def test_opus_default_rate_is_8000_and_22050_is_refused() -> None:
    assert media_format("OPUS", G722).sample_rate == 8000
    with pytest.raises(ValueError, match="OPUS cannot run at 22050 Hz"):
        media_format("OPUS", PCMU, 22050)


def test_amr_wb_is_not_produced() -> None:
    with pytest.raises(ValueError, match="not supported"):
        media_format("AMR-WB", PCMU)


def test_a_resumed_start_goes_on_numbering_and_timing() -> None:
    """After a reconnect: ``start`` with ``resumed: true``, the next sequence number, and
    media timestamps and chunks still counted from the first ``start``."""
    frames = FrameBuilder("sid")
    frames.start({"call_control_id": "v3:x"}, now=10.0)
    frames.media("inbound", b"\xff" * 160, now=10.02)
    again = json.loads(frames.restart({"call_control_id": "v3:x"}))
    assert again == {"event": "start", "sequence_number": "3", "stream_id": "sid",
                     "start": {"call_control_id": "v3:x", "resumed": True}}
    media = json.loads(frames.media("inbound", b"\xff" * 160, now=11.0))
    assert media["sequence_number"] == "4"
    assert media["media"]["chunk"] == "2" and media["media"]["timestamp"] == "1000"
