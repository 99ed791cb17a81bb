"""/v2/calls/{call_control_id}/actions/streaming_start|stop (spec §3.1, §3.2)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body
from starlette.responses import Response

from callstream.api.destinations import check_urls
from callstream.api.errors import ApiError
from callstream.api.routes.calls import CallId, Svc, respond
from callstream.api.schemas.common import CommandResponse
from callstream.api.schemas.streaming import StartStreamingRequest, StopStreamingRequest
from callstream.api.services import Services
from callstream.calls.requests import StreamingStop
from callstream.streaming.manager import StreamManager

router = APIRouter(prefix="/v2/calls", tags=["calls"])


def _manager(svc: Services) -> StreamManager:
    if svc.streams is None:
        raise ApiError(422, "10015", "Bad Request", "Streaming is not running on this server.")
    return svc.streams


@router.post("/{call_control_id}/actions/streaming_start", response_model=CommandResponse,
             summary="Start streaming the call's audio to a WebSocket")
async def streaming_start(
    svc: Svc, call_control_id: CallId, body: Annotated[StartStreamingRequest, Body()]
) -> Response:
    req = body.to_request()
    await check_urls(svc.outbound, {"/stream_url": req.stream.stream_url})
    return respond(await _manager(svc).start(call_control_id, req))


@router.post("/{call_control_id}/actions/streaming_stop", response_model=CommandResponse,
             summary="Stop one stream (stream_id) or every stream of the call")
async def streaming_stop(
    svc: Svc, call_control_id: CallId,
    body: Annotated[StopStreamingRequest | None, Body()] = None,
) -> Response:
    req = body.to_request() if body is not None else StreamingStop()
    return respond(await _manager(svc).stop(call_control_id, req))
