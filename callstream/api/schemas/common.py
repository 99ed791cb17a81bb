"""Shapes shared by every Call Control command."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from callstream.api.schemas.fields import ClientState, CommandId


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
    name: str
    value: str
