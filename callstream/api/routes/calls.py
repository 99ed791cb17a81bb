"""/v2/calls and the call actions. Thin: parse, call CallControl, render."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Body, Depends, Path
from starlette.responses import Response

from callstream.api.destinations import check_urls
from callstream.api.errors import JSON, ApiError
from callstream.api.render import status_dict
from callstream.api.schemas.calls import (
    AnswerRequest,
    BridgeRequest,
    CallListResponse,
    CallStatusResponse,
    DialRequest,
    HangupRequest,
    RejectRequest,
)
from callstream.api.schemas.common import CommandBody, CommandResponse
from callstream.api.schemas.errors import DRAINING_RESPONSE
from callstream.api.services import Services, services
from callstream.calls.requests import Hangup
from callstream.store.records import Receipt

router = APIRouter(prefix="/v2/calls", tags=["calls"])
CallId = Annotated[str, Path(description="call_control_id from call.initiated or dial")]
Svc = Annotated[Services, Depends(services)]


def respond(receipt: Receipt) -> Response:
    """A command's answer: the receipt Call Control stored for its command_id."""
    return Response(receipt.body, status_code=receipt.status_code, media_type=JSON)


@router.post("", response_model=CallStatusResponse, summary="Dial",
             responses=DRAINING_RESPONSE)
async def dial(svc: Svc, body: Annotated[DialRequest, Body()]) -> Response:
    await check_urls(svc.outbound, {"/webhook_url": body.webhook_url,
                                    "/stream_url": body.stream_url})
    return respond(await svc.calls.dial(body.to_request()))


@router.get("", response_model=CallListResponse, summary="List active calls")
async def list_calls(svc: Svc) -> Response:
    records = await svc.store.list_calls(alive=True)
    data = [status_dict(r) for r in records]
    return Response(
        orjson.dumps({"data": data, "meta": {"total_results": len(data), "page_number": 1,
                                            "page_size": len(data), "total_pages": 1}}),
        media_type=JSON,
    )


@router.get("/{call_control_id}", response_model=CallStatusResponse, summary="Call status")
async def retrieve_status(svc: Svc, call_control_id: CallId) -> Response:
    record = await svc.store.get_call(call_control_id)
    if record is None:
        raise ApiError(404, "10005", "Resource not found",
                       f"No call with call_control_id {call_control_id!r}.")
    return Response(orjson.dumps({"data": status_dict(record)}), media_type=JSON)


@router.post("/{call_control_id}/actions/answer", response_model=CommandResponse)
async def answer(
    svc: Svc, call_control_id: CallId, body: Annotated[AnswerRequest | None, Body()] = None
) -> Response:
    body = body or AnswerRequest()
    await check_urls(svc.outbound, {"/webhook_url": body.webhook_url,
                                    "/stream_url": body.stream_url})
    return respond(await svc.calls.answer(call_control_id, body.to_request()))


@router.post("/{call_control_id}/actions/hangup", response_model=CommandResponse)
async def hangup(
    svc: Svc, call_control_id: CallId, body: Annotated[HangupRequest | None, Body()] = None
) -> Response:
    req = body.to_request() if body is not None else Hangup()
    return respond(await svc.calls.hangup(call_control_id, req))


@router.post("/{call_control_id}/actions/reject", response_model=CommandResponse)
async def reject(
    svc: Svc, call_control_id: CallId, body: Annotated[RejectRequest, Body()]
) -> Response:
    return respond(await svc.calls.reject(call_control_id, body.to_request()))


@router.post("/{call_control_id}/actions/bridge", response_model=CommandResponse)
async def bridge(
    svc: Svc, call_control_id: CallId, body: Annotated[BridgeRequest, Body()]
) -> Response:
    return respond(await svc.calls.bridge(call_control_id, body.to_request()))


# Keeps CommandBody in the OpenAPI components for actions that take no other field.
__all__ = ["CommandBody", "router"]
