"""/v2/calls/{call_control_id}/actions/fork_start|fork_stop (spec §3.3, §3.4)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body
from starlette.responses import Response

from callstream.api.errors import ApiError
from callstream.api.routes.calls import CallId, Svc, respond
from callstream.api.schemas.common import CommandResponse
from callstream.api.schemas.forking import ForkStartRequest, ForkStopRequest
from callstream.api.services import Services
from callstream.calls.requests import ForkStart, ForkStop
from callstream.forking.manager import ForkManager

router = APIRouter(prefix="/v2/calls", tags=["calls"])


def _forks(svc: Services) -> ForkManager:
    if svc.forks is None:
        raise ApiError(422, "10015", "Bad Request", "Forking is not running on this server.")
    return svc.forks


@router.post("/{call_control_id}/actions/fork_start", response_model=CommandResponse,
             summary="Fork the call's RTP to UDP destinations")
async def fork_start(
    svc: Svc, call_control_id: CallId, body: Annotated[ForkStartRequest | None, Body()] = None
) -> Response:
    req = body.to_request() if body is not None else ForkStart()
    return respond(await _forks(svc).start(call_control_id, req))


@router.post("/{call_control_id}/actions/fork_stop", response_model=CommandResponse,
             summary="Stop the call's fork")
async def fork_stop(
    svc: Svc, call_control_id: CallId, body: Annotated[ForkStopRequest | None, Body()] = None
) -> Response:
    req = body.to_request() if body is not None else ForkStop()
    return respond(await _forks(svc).stop(call_control_id, req))
