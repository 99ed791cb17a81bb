"""The server→client frames (spec §5.2): numbering, fields, codec resolution."""

from __future__ import annotations

import base64
import json

import pytest

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
