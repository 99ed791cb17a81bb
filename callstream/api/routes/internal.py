"""/internal: what the processes of one deployment ask each other (not in the API docs).

``POST /internal/calls/{id}/bridge`` and ``.../unbridge``: the owner of a call joins or
leaves a bridge with a call another process holds (:mod:`callstream.calls.remote_bridge`).
They are routed to the call's owner like any command for the call, and answer only a
request showing the deployment's peer token; an API key is no use here.
"""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Header, Request
from starlette.responses import Response

from callstream.api.errors import JSON, ApiError
from callstream.api.services import Services, services
from callstream.calls.remote_bridge import PEER_TOKEN_HEADER, RemoteBridges
from callstream.media.hop import HopError, HopOffer

router = APIRouter(prefix="/internal/calls", include_in_schema=False)
Svc = Annotated[Services, Depends(services)]
#: Most bytes of an internal request's body (an offer is under 200).
MAX_BODY = 4096


def _bridges(svc: Services, token: str | None) -> RemoteBridges:
    bridges = svc.calls.remote_bridges
    if bridges is None or not bridges.token_ok(token):
        raise ApiError(401, "10009", "Authentication failed",
                       "An internal request needs this deployment's peer token.")
    return bridges


async def _body(request: Request) -> tuple[str, dict[str, object]]:
    raw = await request.body()
    try:
        body = orjson.loads(raw) if len(raw) <= MAX_BODY else None
    except orjson.JSONDecodeError:
        body = None
    peer = body.get("call_control_id") if isinstance(body, dict) else None
    if not isinstance(peer, str) or not peer:
        raise ApiError(422, "10015", "Bad Request",
                       f"An internal request is a JSON object of at most {MAX_BODY} bytes "
                       "with a call_control_id.")
    assert isinstance(body, dict)
    return peer, body


@router.post("/{call_control_id}/bridge")
async def join(svc: Svc, call_control_id: str, request: Request,
               token: Annotated[str | None, Header(alias=PEER_TOKEN_HEADER)] = None
               ) -> Response:
    _bridges(svc, token)
    peer, body = await _body(request)
    try:
        theirs = HopOffer.from_json(body.get("hop"))
    except HopError as exc:
        raise ApiError(422, "10015", "Bad Request", str(exc), pointer="/hop") from exc
    ours = await svc.calls.join_remote(call_control_id, peer, theirs)
    return Response(orjson.dumps({"data": ours.as_json()}), media_type=JSON)


@router.post("/{call_control_id}/unbridge")
async def leave(svc: Svc, call_control_id: str, request: Request,
                token: Annotated[str | None, Header(alias=PEER_TOKEN_HEADER)] = None
                ) -> Response:
    _bridges(svc, token)
    peer, body = await _body(request)
    ssrc = body.get("ssrc")
    if type(ssrc) is not int or not 0 <= ssrc <= 0xFFFFFFFF:
        raise ApiError(422, "10015", "Bad Request",
                       "An unbridge names the hop it leaves: ssrc, a 32-bit unsigned integer.",
                       pointer="/ssrc")
    await svc.calls.leave_remote(call_control_id, peer, ssrc)
    return Response(orjson.dumps({"data": {"result": "ok"}}), media_type=JSON)
