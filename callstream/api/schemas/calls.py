"""Request/response models for /v2/calls and the call actions (spec §4)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from callstream.api.schemas.common import CommandBody, CustomHeaders
from callstream.api.schemas.fields import (
    HttpUrl,
    JsonInteger,
    PhoneOrSip,
    PreferredCodecs,
    SipText,
)
from callstream.api.schemas.streaming import CallStreamFields
from callstream.api.schemas.transcription import TranscriptionStartRequest
from callstream.calls.requests import Answer, Bridge, Dial, Hangup, Reject, TranscriptionSpec


def _transcription(on: bool, config: TranscriptionStartRequest | None) -> TranscriptionSpec | None:
    if not on:
        return None
    return (config or TranscriptionStartRequest()).spec()


class DialRequest(CommandBody, CallStreamFields):
    connection_id: str = Field(description="Call Control Application id; 'default' always exists.")
    # A list is dialled by its first entry (Telnyx's list rings several; we ring one).
    to: PhoneOrSip | Annotated[list[PhoneOrSip], Field(min_length=1)] = Field(
        description="sip: URI, or +E164 via the trunk.")
    from_: PhoneOrSip = Field(alias="from")
    from_display_name: SipText | None = Field(
        None, max_length=128, description="Display name in From; quotes are escaped.")
    timeout_secs: Annotated[int, JsonInteger] = Field(30, ge=5, le=600)
    time_limit_secs: Annotated[int, JsonInteger] = Field(14400, ge=30, le=14400)
    webhook_url: HttpUrl | None = None
    webhook_url_method: Literal["POST", "GET"] = "POST"
    custom_headers: CustomHeaders
    send_silence_when_idle: StrictBool = False
    preferred_codecs: PreferredCodecs | None = None

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    # Transcription (spec §4.1): started when the call is answered.
    transcription: StrictBool = False
    transcription_config: TranscriptionStartRequest | None = None

    def to_request(self) -> Dial:
        return Dial(
            command_id=self.command_id,
            client_state=self.client_state,
            connection_id=self.connection_id,
            to=self.to[0] if isinstance(self.to, list) else self.to,
            from_=self.from_,
            from_display_name=self.from_display_name,
            timeout_secs=self.timeout_secs,
            time_limit_secs=self.time_limit_secs,
            webhook_url=self.webhook_url,
            custom_headers=tuple((h.name, h.value) for h in self.custom_headers),
            send_silence_when_idle=self.send_silence_when_idle,
            preferred_codecs=self.preferred_codecs,
            stream=self.call_stream(),
            stream_establish_before_call_originate=self.stream_establish_before_call_originate,
            transcription=_transcription(self.transcription, self.transcription_config),
        )


class AnswerRequest(CommandBody, CallStreamFields):
    webhook_url: HttpUrl | None = None
    webhook_url_method: Literal["POST", "GET"] = "POST"
    send_silence_when_idle: StrictBool = False
    preferred_codecs: PreferredCodecs | None = None

    # Transcription (spec §4.2): started once answered.
    transcription: StrictBool = False
    transcription_config: TranscriptionStartRequest | None = None

    def to_request(self) -> Answer:
        return Answer(
            command_id=self.command_id,
            client_state=self.client_state,
            webhook_url=self.webhook_url,
            send_silence_when_idle=self.send_silence_when_idle,
            preferred_codecs=self.preferred_codecs,
            stream=self.call_stream(),
            transcription=_transcription(self.transcription, self.transcription_config),
        )


class HangupRequest(CommandBody):
    custom_headers: CustomHeaders

    def to_request(self) -> Hangup:
        return Hangup(command_id=self.command_id, client_state=self.client_state,
                      custom_headers=tuple((h.name, h.value) for h in self.custom_headers))


class RejectRequest(CommandBody):
    cause: Literal["CALL_REJECTED", "USER_BUSY"] = Field(description="Rejection cause.")

    def to_request(self) -> Reject:
        return Reject(command_id=self.command_id, client_state=self.client_state,
                      cause=self.cause)


class BridgeRequest(CommandBody):
    call_control_id: str = Field(description="The call to bridge with.")

    def to_request(self) -> Bridge:
        return Bridge(command_id=self.command_id, client_state=self.client_state,
                      call_control_id=self.call_control_id)


class CallStatus(BaseModel):
    """What `GET /v2/calls/{id}` and dial return; the first five fields are required by the SDK."""

    call_control_id: str
    call_leg_id: str
    call_session_id: str
    is_alive: bool
    record_type: Literal["call"] = "call"
    client_state: str | None = None
    start_time: str | None = None
    end_time: str | None = None
    call_duration: int | None = None
    recording_id: str | None = None
    connection_id: str | None = None
    direction: str | None = None
    from_: str | None = Field(None, alias="from")
    to: str | None = None
    state: str | None = None

    model_config = ConfigDict(populate_by_name=True)


class CallStatusResponse(BaseModel):
    data: CallStatus


class CallListResponse(BaseModel):
    data: list[CallStatus]
    meta: dict[str, int]
