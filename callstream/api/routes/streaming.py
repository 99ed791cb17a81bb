"""/v2/calls/{call_control_id}/actions/streaming_start|stop (spec §3.1, §3.2)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path
from starlette.responses import Response

from callstream.api.destinations import check_urls
from callstream.api.errors import JSON
from callstream.api.schemas.common import CommandResponse
from callstream.api.schemas.streaming import StartStreamingRequest, StopStreamingRequest
from callstream.api.services import Services, services
from callstream.calls.exceptions import InvalidCommand

router = APIRouter(prefix="/v2/calls", tags=["calls"])
CallId = Annotated[str, Path(description="call_control_id from call.initiated or dial")]
Svc = Annotated[Services, Depends(services)]


def _manager(svc: Services) -> Any:
    if svc.streams is None:
        raise InvalidCommand("10015", "Bad Request", "Streaming is not running on this server.")
    return svc.streams


@router.post("/{call_control_id}/actions/streaming_start", response_model=CommandResponse,
             summary="Start streaming the call's audio to a WebSocket")
async def streaming_start(
    svc: Svc, call_control_id: CallId, body: Annotated[StartStreamingRequest, Body()]
) -> Response:
    req = body.model_dump(exclude_none=True)
    if not req.get("stream_url"):
        raise InvalidCommand("10004", "Missing required parameter",
                             "The 'stream_url' parameter is required.", pointer="/stream_url")
    await check_urls(svc.outbound, {"/stream_url": req["stream_url"]})
    reply = await _manager(svc).start(call_control_id, req)
    return Response(reply.body, status_code=reply.status, media_type=JSON)


@router.post("/{call_control_id}/actions/streaming_stop", response_model=CommandResponse,
             summary="Stop one stream (stream_id) or every stream of the call")
async def streaming_stop(
    svc: Svc, call_control_id: CallId,
    body: Annotated[StopStreamingRequest | None, Body()] = None,
) -> Response:
    req = {} if body is None else body.model_dump(exclude_none=True)
    reply = await _manager(svc).stop(call_control_id, req)
    return Response(reply.body, status_code=reply.status, media_type=JSON)
