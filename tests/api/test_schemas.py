"""api/schemas: each validated body converts once into its typed request
(``to_request()``), with the spec's defaults and nothing read from a dict after."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from callstream.api.schemas.calls import AnswerRequest, DialRequest, HangupRequest
from callstream.api.schemas.forking import ForkStartRequest
from callstream.api.schemas.streaming import StartStreamingRequest, TexmlStreamCreate
from callstream.api.schemas.transcription import TranscriptionStartRequest
from callstream.calls.exceptions import MissingParameter
from callstream.calls.requests import (
    Answer,
    Dial,
    ForkStart,
    Hangup,
    StreamSpec,
    TexmlCallback,
    TranscriptionSpec,
)


def test_dial() -> None:
    body = DialRequest.model_validate({
        "connection_id": "default", "to": ["sip:bob@127.0.0.1:5062", "sip:x@y"],
        "from": "+15550001111", "command_id": "c1", "client_state": "YQ==",
        "custom_headers": [{"name": "X-Case", "value": "42"}],
        "stream_url": "wss://agent.example/ws", "stream_track": "both_tracks",
        "stream_bidirectional_mode": "rtp", "custom_parameters": [{"name": "a", "value": "b"}],
        "stream_establish_before_call_originate": True, "transcription": True,
    })
    assert body.to_request() == Dial(
        command_id="c1", client_state="YQ==", connection_id="default",
        to="sip:bob@127.0.0.1:5062", from_="+15550001111",
        custom_headers=(("X-Case", "42"),),
        stream=StreamSpec(stream_url="wss://agent.example/ws", stream_track="both_tracks",
                          stream_bidirectional_mode="rtp", custom_parameters=(("a", "b"),)),
        stream_establish_before_call_originate=True,
        transcription=TranscriptionSpec(),
    )
    assert body.to_request().stream.bidirectional  # type: ignore[union-attr]


def test_dial_to_an_empty_list_is_refused() -> None:
    """Found by schemathesis: ``"to": []`` reached to_request() and answered 500."""
    with pytest.raises(ValidationError, match="at least 1 item"):
        DialRequest.model_validate({"connection_id": "default", "to": [], "from": "+15550001111"})


def test_answer_without_a_stream_url_starts_no_stream() -> None:
    answer = AnswerRequest.model_validate({
        "stream_track": "both_tracks", "transcription": False,
        "transcription_config": {"transcription_tracks": "both"}})
    assert answer.to_request() == Answer()
    assert AnswerRequest().to_request() == Answer()


def test_answer_transcription_config() -> None:
    answer = AnswerRequest.model_validate({"transcription": True, "transcription_config": {
        "transcription_engine": "Deepgram", "transcription_tracks": "both",
        "transcription_engine_config": {"language": "de", "interim_results": True,
                                        "transcription_model": "whisper-tiny",
                                        "hints": ["Kiel"], "keyterms": ["Förde"],
                                        "smart_format": True}}})
    assert answer.to_request().transcription == TranscriptionSpec(
        transcription_engine="Deepgram", transcription_tracks="both", language="de",
        interim_results=True, transcription_model="whisper-tiny", hints=("Kiel",),
        keyterms=("Förde",))
    assert TranscriptionStartRequest().to_request().transcription == TranscriptionSpec()


def test_streaming_start_needs_its_url_once() -> None:
    for body in ({}, {"stream_url": None}):
        with pytest.raises(MissingParameter) as missing:
            StartStreamingRequest.model_validate(body).to_request()
        assert missing.value.pointer == "/stream_url"
    req = StartStreamingRequest.model_validate({"stream_url": "ws://127.0.0.1:1/m"}).to_request()
    assert req.stream == StreamSpec(stream_url="ws://127.0.0.1:1/m")
    assert not req.stream.bidirectional


def test_texml_streams_json() -> None:
    req = TexmlStreamCreate.model_validate({
        "Url": "wss://a.example/m", "BidirectionalCodec": "PCMA", "Name": "n",
        "StatusCallback": "https://a.example/cb"}).to_request("AC1")
    assert req.stream == StreamSpec(stream_url="wss://a.example/m",
                                    stream_bidirectional_mode="mp3",
                                    stream_bidirectional_codec="PCMA")
    assert req.texml == TexmlCallback(account_sid="AC1", name="n",
                                      status_callback="https://a.example/cb")


def test_fork_and_hangup() -> None:
    fork = ForkStartRequest.model_validate({"rx": "udp:127.0.0.1:5000",
                                            "tx": "udp:127.0.0.1:5001"})
    assert fork.to_request() == ForkStart(rx="udp:127.0.0.1:5000", tx="udp:127.0.0.1:5001")
    hangup = HangupRequest.model_validate({"custom_headers": [{"name": "X-A", "value": "1"}]})
    assert hangup.to_request() == Hangup(custom_headers=(("X-A", "1"),))


def test_stream_reconnect_seconds_is_a_bounded_extension() -> None:
    url = {"stream_url": "ws://127.0.0.1:1/m"}
    spec = StartStreamingRequest.model_validate({**url, "stream_reconnect_seconds": 7.5})
    assert spec.to_request().stream.stream_reconnect_seconds == 7.5
    assert StartStreamingRequest.model_validate(url).to_request().stream.stream_reconnect_seconds \
        is None  # the server's default applies
    for bad in (-0.1, 60.5, "inf", True, "5"):
        with pytest.raises(ValidationError):
            StartStreamingRequest.model_validate({**url, "stream_reconnect_seconds": bad})
