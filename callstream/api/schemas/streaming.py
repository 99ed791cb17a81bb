"""Request models for streaming_start/stop, the stream fields of dial/answer, TeXML Streams.

Field names, enums and defaults are spec §3.1, §3.2, §4 and §10. Bidirectional fields
default to None so "not given" stays visible: a stream is bidirectional when any of them
is given (the manager fills in the documented defaults: mp3, PCMU, 8000, opposite).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from callstream.api.schemas.common import CommandBody
from callstream.api.schemas.fields import HttpUrl, JsonNumber, WsUrl
from callstream.calls.exceptions import MissingParameter
from callstream.calls.requests import StreamingStart, StreamingStop, StreamSpec, TexmlCallback
from callstream.config import MAX_RECONNECT_SECS
from callstream.media.codecs import OPUS_SAMPLE_RATES

# No maintained library gives both AMR-WB directions (docs/streaming.md says why).
UNSUPPORTED = ("AMR-WB",)


def _producible(value: str) -> str:
    if value in UNSUPPORTED:
        raise PydanticCustomError(
            "unsupported",
            "{codec} is not supported by this server; use PCMU, PCMA, G722, OPUS or L16.",
            {"codec": value},
        )
    return value


def _no_dialogflow(value: bool | None) -> bool | None:
    if value:
        raise PydanticCustomError("unsupported", "Dialogflow streaming is not supported.")
    return value


StreamTrack = Literal["inbound_track", "outbound_track", "both_tracks"]
# Telnyx's values are all accepted (so OPUS gets "not supported", not "no such value"),
# but the OpenAPI document offers only those this server produces.
StreamCodec = Annotated[
    Literal["PCMU", "PCMA", "G722", "OPUS", "AMR-WB", "L16", "default"],
    AfterValidator(_producible),
    Field(json_schema_extra={"enum": ["PCMU", "PCMA", "G722", "OPUS", "L16", "default"]}),
]
BidirectionalCodec = Annotated[
    Literal["PCMU", "PCMA", "G722", "OPUS", "AMR-WB", "L16"],
    AfterValidator(_producible),
    Field(json_schema_extra={"enum": ["PCMU", "PCMA", "G722", "OPUS", "L16"]}),
]
SamplingRate = Literal[8000, 16000, 22050, 24000, 48000]


class CustomParameter(BaseModel):
    name: str = Field(max_length=256)
    value: str = Field(max_length=4096)


class DialogflowConfig(BaseModel):
    analyze_sentiment: StrictBool = False
    partial_automated_agent_reply: StrictBool = False


class StreamFields(BaseModel):
    """The ``stream_*`` fields shared by streaming_start, dial and answer."""

    model_config = ConfigDict(extra="ignore")

    stream_track: StreamTrack = "inbound_track"
    stream_codec: StreamCodec = "default"
    stream_bidirectional_mode: Literal["mp3", "rtp"] | None = None
    stream_bidirectional_codec: BidirectionalCodec | None = None
    stream_bidirectional_sampling_rate: SamplingRate | None = None
    stream_bidirectional_target_legs: Literal["both", "self", "opposite"] | None = None
    stream_auth_token: str | None = Field(None, max_length=4000)
    enable_dialogflow: Annotated[StrictBool | None, AfterValidator(_no_dialogflow)] = Field(
        None, json_schema_extra={"anyOf": [{"type": "boolean", "enum": [False]}, {"type": "null"}]}
    )
    dialogflow_config: DialogflowConfig | None = None
    stream_reconnect_seconds: Annotated[float | None, JsonNumber] = Field(
        None, ge=0, le=MAX_RECONNECT_SECS, allow_inf_nan=False,
        description="callstream extension, not in Telnyx's API: when the stream's WebSocket "
        "drops without a clean close, reconnect within this many seconds and resume the "
        "stream (start.resumed: true, buffered audio replayed). 0: no reconnect; omitted: "
        "CALLSTREAM_STREAM_RECONNECT_SECS.")

    def stream_spec(self, url: str, custom: list[CustomParameter] | None) -> StreamSpec:
        return StreamSpec(
            stream_url=url,
            stream_track=self.stream_track,
            stream_codec=self.stream_codec,
            stream_bidirectional_mode=self.stream_bidirectional_mode,
            stream_bidirectional_codec=self.stream_bidirectional_codec,
            stream_bidirectional_sampling_rate=self.stream_bidirectional_sampling_rate,
            stream_bidirectional_target_legs=self.stream_bidirectional_target_legs,
            stream_auth_token=self.stream_auth_token,
            custom_parameters=tuple((p.name, p.value) for p in custom or ()),
            stream_reconnect_seconds=self.stream_reconnect_seconds,
        )

    @field_validator("stream_bidirectional_sampling_rate")
    @classmethod
    def _opus_rate(cls, value: int | None, info: ValidationInfo) -> int | None:
        # Opus sets its rate from this field (8000 when absent); 22050 is no Opus rate.
        codecs = (info.data.get("stream_codec"), info.data.get("stream_bidirectional_codec"))
        if "OPUS" in codecs and value is not None and value not in OPUS_SAMPLE_RATES:
            raise PydanticCustomError(
                "unsupported",
                "OPUS runs at {rates} Hz; {value} is not one of them.",
                {"rates": ", ".join(map(str, OPUS_SAMPLE_RATES)), "value": value},
            )
        return value


class CallStreamFields(StreamFields):
    """On dial and answer: the stream starts when the call is answered."""

    stream_url: WsUrl | None = None
    stream_establish_before_call_originate: StrictBool = False
    # Not in the answer/dial schemas of OAS; accepted anyway (spec §12.12).
    custom_parameters: list[CustomParameter] | None = None

    def call_stream(self) -> StreamSpec | None:
        """The stream a dial or answer asks for, if it names a ``stream_url``."""
        if not self.stream_url:
            return None
        return self.stream_spec(self.stream_url, self.custom_parameters)


class StartStreamingRequest(CommandBody, StreamFields):
    stream_url: WsUrl | None = Field(None, description="ws:// or wss:// URL to stream to.")
    custom_parameters: list[CustomParameter] | None = Field(
        None, description="Copied into start.custom_parameters as an object."
    )

    def to_request(self) -> StreamingStart:
        # Optional in the schema so a missing or null URL gets the one 10004 answer.
        if not self.stream_url:
            raise MissingParameter("The 'stream_url' parameter is required.",
                                   pointer="/stream_url")
        return StreamingStart(command_id=self.command_id, client_state=self.client_state,
                              stream=self.stream_spec(self.stream_url, self.custom_parameters))


class StopStreamingRequest(CommandBody):
    stream_id: str | None = Field(None, max_length=64,
                                  description="The stream to stop; omitted: every stream.")

    def to_request(self) -> StreamingStop:
        return StreamingStop(command_id=self.command_id, client_state=self.client_state,
                             stream_id=self.stream_id)


class TexmlStreamCreate(BaseModel):
    """``Streams.json`` body (JSON from the Python SDK, form from Node; spec §10.1)."""

    model_config = ConfigDict(extra="ignore")

    Url: WsUrl
    Track: StreamTrack = "inbound_track"
    Name: str | None = Field(None, max_length=256)
    BidirectionalMode: Literal["mp3", "rtp"] | None = None
    BidirectionalCodec: Literal["PCMU", "PCMA", "G722"] | None = None
    StatusCallback: HttpUrl | None = None
    StatusCallbackMethod: Literal["GET", "POST"] = "POST"

    def to_request(self, account_sid: str) -> StreamingStart:
        # Either bidirectional field makes the stream bidirectional, the other defaulted.
        bidirectional = bool(self.BidirectionalMode or self.BidirectionalCodec)
        return StreamingStart(
            stream=StreamSpec(
                stream_url=self.Url,
                stream_track=self.Track,
                stream_bidirectional_mode=self.BidirectionalMode or (
                    "mp3" if bidirectional else None),
                stream_bidirectional_codec=self.BidirectionalCodec or (
                    "PCMU" if bidirectional else None),
            ),
            texml=TexmlCallback(account_sid=account_sid, name=self.Name,
                                status_callback=self.StatusCallback,
                                status_callback_method=self.StatusCallbackMethod),
        )


class TexmlStreamUpdate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    Status: Literal["stopped"] = "stopped"


class TexmlStream(BaseModel):
    """The TeXML stream object (no ``data`` wrapper)."""

    account_sid: str
    call_sid: str
    sid: str
    name: str | None = None
    status: str
    date_updated: str
    uri: str
