"""/v2/calls/{call_control_id}/actions/... for forking."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Path
from starlette.responses import Response

from callstream.api.errors import JSON
from callstream.api.schemas.common import CommandResponse
from callstream.api.schemas.forking import ForkStartRequest, ForkStopRequest
from callstream.api.services import Services, services
from callstream.calls.exceptions import InvalidCommand
from callstream.forking.manager import ForkManager

router = APIRouter(prefix="/v2/calls", tags=["calls"])
CallId = Annotated[str, Path(description="call_control_id from call.initiated or dial")]
Svc = Annotated[Services, Depends(services)]


def _forks(svc: Services) -> ForkManager:
    if not isinstance(svc.forks, ForkManager):
        raise InvalidCommand("10015", "Bad Request", "Forking is not running on this server.")
    return svc.forks


@router.post("/{call_control_id}/actions/fork_start", response_model=CommandResponse,
             summary="Fork the call's RTP to UDP destinations")
async def fork_start(
    svc: Svc, call_control_id: CallId, body: Annotated[ForkStartRequest | None, Body()] = None
) -> Response:
    req = {} if body is None else body.model_dump(exclude_none=True)
    reply = await _forks(svc).start(call_control_id, req)
    return Response(reply.body, status_code=reply.status, media_type=JSON)


@router.post("/{call_control_id}/actions/fork_stop", response_model=CommandResponse,
             summary="Stop the call's fork")
async def fork_stop(
    svc: Svc, call_control_id: CallId, body: Annotated[ForkStopRequest | None, Body()] = None
) -> Response:
    req = {} if body is None else body.model_dump(exclude_none=True)
    reply = await _forks(svc).stop(call_control_id, req)
    return Response(reply.body, status_code=reply.status, media_type=JSON)
