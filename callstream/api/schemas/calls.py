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


class DialRequest(CommandBody, CallStreamFields):
    connection_id: str = Field(description="Call Control Application id; 'default' always exists.")
    to: PhoneOrSip | list[PhoneOrSip] = Field(description="sip: URI, or +E164 via the trunk.")
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


class AnswerRequest(CommandBody, CallStreamFields):
    webhook_url: HttpUrl | None = None
    webhook_url_method: Literal["POST", "GET"] = "POST"
    send_silence_when_idle: StrictBool = False
    preferred_codecs: PreferredCodecs | None = None

    # Transcription (spec §4.2): started once answered.
    transcription: StrictBool = False
    transcription_config: TranscriptionStartRequest | None = None


class HangupRequest(CommandBody):
    custom_headers: CustomHeaders


class RejectRequest(CommandBody):
    cause: Literal["CALL_REJECTED", "USER_BUSY"] = Field(description="Rejection cause.")


class BridgeRequest(CommandBody):
    call_control_id: str = Field(description="The call to bridge with.")


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
