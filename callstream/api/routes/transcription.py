"""/v2/calls/{call_control_id}/actions/transcription_start|stop (spec §3.5, §3.6)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body
from starlette.responses import Response

from callstream.api.errors import ApiError
from callstream.api.routes.calls import CallId, Svc, respond
from callstream.api.schemas.common import CommandResponse
from callstream.api.schemas.transcription import (
    TranscriptionStartRequest,
    TranscriptionStopRequest,
)
from callstream.api.services import Services
from callstream.calls.requests import TranscriptionStart, TranscriptionStop
from callstream.transcription.manager import TranscriptionManager

router = APIRouter(prefix="/v2/calls", tags=["calls"])


def _manager(svc: Services) -> TranscriptionManager:
    if svc.transcriptions is None:
        raise ApiError(422, "10015", "Bad Request", "Transcription is not running here.")
    return svc.transcriptions


@router.post("/{call_control_id}/actions/transcription_start",
             response_model=CommandResponse, summary="Start live transcription")
async def transcription_start(
    svc: Svc, call_control_id: CallId,
    body: Annotated[TranscriptionStartRequest | None, Body()] = None,
) -> Response:
    req = body.to_request() if body is not None else TranscriptionStart()
    return respond(await _manager(svc).start(call_control_id, req))


@router.post("/{call_control_id}/actions/transcription_stop",
             response_model=CommandResponse, summary="Stop live transcription")
async def transcription_stop(
    svc: Svc, call_control_id: CallId,
    body: Annotated[TranscriptionStopRequest | None, Body()] = None,
) -> Response:
    req = body.to_request() if body is not None else TranscriptionStop()
    return respond(await _manager(svc).stop(call_control_id, req))
