"""Call Control Applications (Telnyx ``/v2/call_control_applications``, the fields we use)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from callstream.api.schemas.fields import HttpUrl, JsonInteger, NotNull


class ApplicationCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    application_name: str = Field(min_length=1, max_length=255)
    webhook_event_url: HttpUrl
    webhook_event_failover_url: HttpUrl | None = None
    webhook_timeout_secs: Annotated[int | None, JsonInteger] = Field(None, ge=0, le=30)
    webhook_api_version: Literal["1", "2"] = "2"
    active: StrictBool = True
    anchorsite_override: str | None = None
    dtmf_type: Literal["RFC 2833", "Inband", "SIP INFO"] = "RFC 2833"
    first_command_timeout: StrictBool = False
    first_command_timeout_secs: Annotated[int, JsonInteger] = Field(30, ge=1, le=600)
    tags: list[str] = Field(default_factory=list)


class ApplicationUpdate(BaseModel):
    """Only the fields sent are changed. ``null`` clears a field that may be empty (the
    failover URL, the timeout) and is refused (422) for the others."""

    model_config = ConfigDict(extra="ignore")

    application_name: Annotated[str | None, *NotNull] = Field(None, min_length=1, max_length=255)
    webhook_event_url: Annotated[HttpUrl | None, *NotNull] = None
    webhook_event_failover_url: HttpUrl | None = None
    webhook_timeout_secs: Annotated[int | None, JsonInteger] = Field(None, ge=0, le=30)
    webhook_api_version: Annotated[Literal["1", "2"] | None, *NotNull] = None
    active: Annotated[StrictBool | None, *NotNull] = None
    dtmf_type: Annotated[Literal["RFC 2833", "Inband", "SIP INFO"] | None, *NotNull] = None
    first_command_timeout: Annotated[StrictBool | None, *NotNull] = None
    first_command_timeout_secs: Annotated[int | None, JsonInteger, *NotNull] = Field(
        None, ge=1, le=600
    )
    tags: Annotated[list[str] | None, *NotNull] = None


class ApplicationOut(BaseModel):
    id: str
    record_type: Literal["call_control_application"] = "call_control_application"
    application_name: str
    webhook_event_url: str | None
    webhook_event_failover_url: str | None
    webhook_timeout_secs: int | None
    webhook_api_version: str = "2"
    active: bool
    dtmf_type: str = "RFC 2833"
    first_command_timeout: bool = False
    first_command_timeout_secs: int = 30
    tags: list[str] = Field(default_factory=list)
    created_at: str
    updated_at: str
    extra: dict[str, Any] | None = Field(None, exclude=True)


class ApplicationResponse(BaseModel):
    data: ApplicationOut


class ApplicationListResponse(BaseModel):
    data: list[ApplicationOut]
    meta: dict[str, int]
