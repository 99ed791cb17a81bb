"""Shapes shared by every Call Control command."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from callstream.api.schemas.fields import (
    SIP_HEADER_NAME_PATTERN,
    SIP_TEXT_PATTERN,
    ClientState,
    CommandId,
    sip_header_name,
    sip_text,
)

#: Most custom headers one command may add to its SIP request.
MAX_CUSTOM_HEADERS = 32
#: Longest custom header name and value, in characters.
MAX_HEADER_NAME = 128
MAX_HEADER_VALUE = 1024


class CommandBody(BaseModel):
    """Fields every call action accepts. Unknown fields are ignored, as Telnyx does."""

    model_config = ConfigDict(extra="ignore")

    client_state: ClientState | None = None
    command_id: CommandId | None = None


class CommandResult(BaseModel):
    result: Literal["ok"] = "ok"


class CommandResponse(BaseModel):
    data: CommandResult


class CustomHeader(BaseModel):
    """One extra SIP header: an RFC 3261 token name the UA does not own, a one-line value."""

    name: Annotated[
        str,
        Field(max_length=MAX_HEADER_NAME, json_schema_extra={"pattern": SIP_HEADER_NAME_PATTERN}),
        AfterValidator(sip_header_name),
    ]
    value: Annotated[
        str,
        Field(max_length=MAX_HEADER_VALUE, json_schema_extra={"pattern": SIP_TEXT_PATTERN}),
        AfterValidator(sip_text),
    ]


CustomHeaders = Annotated[
    list[CustomHeader],
    Field(default_factory=list, max_length=MAX_CUSTOM_HEADERS,
          description="Extra SIP headers (X-... and others the UA does not write itself)."),
]
