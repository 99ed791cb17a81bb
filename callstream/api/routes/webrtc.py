"""/v2/webrtc/...: calls from browsers (WHIP-style offer/answer over HTTP) and their tokens.

=====================================  ========================  ==============================
route                                  auth                      what
=====================================  ========================  ==============================
``POST /v2/webrtc/tokens``             API key or console        a single-use token for a page
``POST /v2/webrtc/sessions``           token or API key          SDP offer in, SDP answer out
``DELETE /v2/webrtc/sessions/{id}``    the session's URL         hang up
``OPTIONS`` on both                    none                      CORS preflight
``GET /static/callstream-webrtc.js``   none                      the browser client
=====================================  ========================  ==============================

The sessions routes check their own credentials (the auth middleware lets them
through): a page holds a token, never an API key, and the session's URL
(``Location``, 256 random bits) is what lets its page hang up. They carry SDP, not
JSON, and are not Telnyx's API, so they stay out of the OpenAPI document (docs/webrtc.md
states them); the token route is in it.
"""

from __future__ import annotations

import logging
import time
from importlib import resources
from typing import Annotated

import orjson
from fastapi import APIRouter, Body, Depends, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from callstream.api.auth import KeyChecker
from callstream.api.errors import JSON, error_body, error_response
from callstream.api.services import Services, services
from callstream.timefmt import iso
from callstream.webrtc.gateway import NoApplication, TooManyLegs, WebRtcGateway
from callstream.webrtc.metrics import WEBRTC_REFUSED
from callstream.webrtc.offer import OFFER_MAX_BYTES, OfferError, check_offer
from callstream.webrtc.tokens import Grant, TooManyTokens

log = logging.getLogger(__name__)

router = APIRouter(tags=["webrtc"])
Svc = Annotated[Services, Depends(services)]
SESSIONS_PATH = "/v2/webrtc/sessions"
#: Longest ``from``/``to`` name a browser call may carry.
MAX_NAME_LENGTH = 128
SDP = "application/sdp"


class TokenRequest(BaseModel):
    connection_id: str = Field("default", max_length=256,
                               description="The application the call goes to.")
    from_: str = Field("browser", alias="from", min_length=1, max_length=MAX_NAME_LENGTH,
                       pattern=r"^[\x21-\x7e]+$",
                       description="The caller's name: call.initiated's `from`.")
    to: str = Field("webrtc", min_length=1, max_length=MAX_NAME_LENGTH,
                    pattern=r"^[\x21-\x7e]+$", description="call.initiated's `to`.")


def _gateway(svc: Services) -> WebRtcGateway:
    if svc.webrtc is None:
        raise RuntimeError("the WebRTC gateway is not running")
    return svc.webrtc


def _error(status: int, code: str, title: str, detail: str) -> Response:
    return error_response(status, [error_body(code, title, detail)])


@router.post("/v2/webrtc/tokens", status_code=201,
             summary="A single-use token a web page places one WebRTC call with")
async def create_token(
    svc: Svc, body: Annotated[TokenRequest | None, Body()] = None
) -> Response:
    req = body or TokenRequest()
    app = await svc.store.get_application(req.connection_id)
    if app is None or not app.active:
        return error_response(422, [error_body(
            "10015", "Invalid value for connection_id",
            "connection_id names no active application.", pointer="/connection_id")])
    gateway = _gateway(svc)
    try:
        token, grant = gateway.tokens.issue(req.connection_id, req.from_, req.to,
                                            time.monotonic())
    except TooManyTokens as exc:
        return _error(503, "10015", "Too many tokens", str(exc))
    expires = time.time() + (grant.expires_at - time.monotonic())
    data = {"token": token, "expires_at": iso(expires), "connection_id": grant.connection_id,
            "from": grant.from_, "to": grant.to}
    return Response(orjson.dumps({"data": data}), status_code=201, media_type=JSON)


async def _read_offer(request: Request) -> bytes | None:
    """The body, or None when it runs over OFFER_MAX_BYTES (read no further)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > OFFER_MAX_BYTES:
            return None
    return bytes(body)


async def _grant(svc: Services, request: Request) -> Grant | None:
    """Who calls: a token's grant, or an API key's (query parameters name the rest)."""
    scheme, _, credential = request.headers.get("authorization", "").partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        return None
    grant = _gateway(svc).tokens.redeem(credential, time.monotonic())
    if grant is not None:
        return grant
    if not await KeyChecker(svc.store).valid(credential):
        return None
    query = request.query_params
    names = (query.get("from", "browser"), query.get("to", "webrtc"))
    if not all(0 < len(n) <= MAX_NAME_LENGTH and n.isprintable() and " " not in n
               for n in names):
        return None
    return Grant(query.get("connection_id", "default"), names[0], names[1], 0.0)


def _cors(svc: Services, request: Request) -> dict[str, str]:
    """CORS headers for a page on an allowed origin (``webrtc_allowed_origins``), else none."""
    origin = request.headers.get("origin")
    allowed = svc.settings.webrtc_allowed_origins
    if origin is None or not (origin in allowed or "*" in allowed):
        return {}
    return {"access-control-allow-origin": origin, "vary": "Origin",
            "access-control-expose-headers": "Location, X-Call-Control-Id"}


@router.options(SESSIONS_PATH, include_in_schema=False)
@router.options(SESSIONS_PATH + "/{session}", include_in_schema=False)
async def preflight(svc: Svc, request: Request) -> Response:
    headers = _cors(svc, request)
    if headers:
        headers.update({"access-control-allow-methods": "POST, DELETE",
                        "access-control-allow-headers": "authorization, content-type",
                        "access-control-max-age": "600"})
    return Response(status_code=204, headers=headers)


@router.post(SESSIONS_PATH, status_code=201, include_in_schema=False)
async def create_session(svc: Svc, request: Request) -> Response:
    reply = await _create_session(svc, request)
    reply.headers.update(_cors(svc, request))
    return reply


async def _create_session(svc: Services, request: Request) -> Response:
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != SDP:
        return _error(415, "10015", "Unsupported Media Type", "Send the offer as application/sdp.")
    grant = await _grant(svc, request)
    if grant is None:
        WEBRTC_REFUSED.labels("auth").inc()
        return error_response(401, [error_body(
            "10009", "Authentication failed",
            "Send Authorization: Bearer <token from POST /v2/webrtc/tokens, or an API key>; "
            "a token places one call and expires.")])
    raw = await _read_offer(request)
    if raw is None:
        WEBRTC_REFUSED.labels("offer").inc()
        return _error(413, "10015", "Request body too large",
                      f"An offer may have at most {OFFER_MAX_BYTES} bytes.")
    gateway = _gateway(svc)
    try:
        offer = check_offer(raw.decode("utf-8"))
        call, answer = await gateway.call_in(offer, connection_id=grant.connection_id,
                                             from_=grant.from_, to=grant.to)
    except (OfferError, UnicodeDecodeError) as exc:
        WEBRTC_REFUSED.labels("offer").inc()
        return _error(400, "10015", "Invalid SDP offer", str(exc))
    except TooManyLegs as exc:
        return _error(503, "10015", "Too many WebRTC calls", str(exc))
    except NoApplication:
        return error_response(422, [error_body(
            "10015", "Invalid value for connection_id",
            "connection_id names no active application.", parameter="connection_id")])
    return Response(answer.sdp, status_code=201, media_type=SDP, headers={
        "location": f"{SESSIONS_PATH}/{answer.session}", "x-call-control-id": call.id,
        "cache-control": "no-store"})


@router.delete(SESSIONS_PATH + "/{session}", status_code=200, include_in_schema=False)
async def delete_session(svc: Svc, session: str, request: Request) -> Response:
    if not _gateway(svc).hangup_session(session):
        reply = _error(404, "10005", "Resource not found", "No such WebRTC session.")
    else:
        reply = Response(status_code=200)
    reply.headers.update(_cors(svc, request))
    return reply


@router.get("/static/callstream-webrtc.js", include_in_schema=False)
async def client_script() -> Response:
    script = resources.files("callstream.webrtc").joinpath("static", "callstream-webrtc.js")
    return Response(script.read_bytes(), media_type="text/javascript; charset=utf-8",
                    headers={"cache-control": "no-cache"})
