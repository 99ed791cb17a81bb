"""The console over HTTP: the page, sign-in, and the live feed (Server-Sent Events).

========================  ======  ===============================================
path                      auth    what
========================  ======  ===============================================
``/``                     none    303 to ``/console``
``/console``              none    the page; ``?token=`` redeems a login link
``/console/static/NAME``  none    the page's JS and CSS (a fixed list of files)
``/console/login``        none    POST ``{"api_key": ...}``: a session cookie
``/console/session``      yes     the session's CSRF token and expiry
``/console/logout``       yes     POST: ends the session
``/console/feed``         yes     ``text/event-stream`` (see :mod:`.feed`)
========================  ======  ===============================================

"auth" is :class:`callstream.api.auth.AuthMiddleware`: a session cookie or an API key.
The page calls the REST API (``/v2/...``) with its cookie and its CSRF header. None of
these routes are in the OpenAPI document: they are not the Telnyx API.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response, StreamingResponse

from callstream.api.auth import hash_key
from callstream.api.errors import error_body
from callstream.console.feed import KEEPALIVE_SECS, ConsoleFeed, FeedFull
from callstream.console.metrics import CONSOLE_LOGINS
from callstream.console.sessions import COOKIE_NAME, ConsoleSessions, Session, same_origin

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

#: The files under ``static/`` the server hands out, with their types; nothing else is.
STATIC_FILES = {
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "softphone.js": "text/javascript; charset=utf-8",
}
#: The most an API key pasted into the form may be (ours are 46 characters).
MAX_KEY_LENGTH = 256

_PAGE_HEADERS = {
    "cache-control": "no-store",
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


def _static(name: str) -> bytes:
    return resources.files("callstream.console").joinpath("static", name).read_bytes()


def _sessions(request: Request) -> ConsoleSessions:
    sessions: ConsoleSessions = request.app.state.services.console_sessions
    return sessions


def _feed(request: Request) -> ConsoleFeed:
    feed: ConsoleFeed = request.app.state.services.console_feed
    return feed


def _error(status: int, code: str, title: str, detail: str) -> Response:
    return Response(orjson.dumps({"errors": [error_body(code, title, detail)]}),
                    status_code=status, media_type="application/json")


def _with_cookie(response: Response, request: Request, session: Session) -> Response:
    ttl = _sessions(request).session_ttl
    response.set_cookie(COOKIE_NAME, session.id, max_age=int(ttl), path="/",
                        httponly=True, samesite="strict")
    return response


@router.get("/")
async def root() -> Response:
    return RedirectResponse("/console", status_code=303)


@router.get("/console")
async def page(request: Request) -> Response:
    token = request.query_params.get("token")
    if token is not None:
        session = _sessions(request).redeem_link(token[:MAX_KEY_LENGTH], time.monotonic())
        if session is None:
            CONSOLE_LOGINS.labels("link", "refused").inc()
            log.info("console: a login link was refused (unknown, used or expired)")
            return RedirectResponse("/console#link-expired", status_code=303,
                                    headers=_PAGE_HEADERS)
        CONSOLE_LOGINS.labels("link", "ok").inc()
        log.info("console: signed in with the one-time login link")
        return _with_cookie(RedirectResponse("/console", status_code=303,
                                             headers=_PAGE_HEADERS), request, session)
    return Response(_static("index.html"), media_type="text/html; charset=utf-8",
                    headers=_PAGE_HEADERS)


@router.get("/console/static/{name}")
async def static(name: str) -> Response:
    media_type = STATIC_FILES.get(name)
    if media_type is None:
        return _error(404, "10005", "Resource not found", f"No console file {name!r}.")
    return Response(_static(name), media_type=media_type,
                    headers={"cache-control": "no-cache", "x-content-type-options": "nosniff"})


@router.post("/console/login")
async def login(request: Request) -> Response:
    if not same_origin(request.headers.get("origin"), request.headers.get("host")):
        CONSOLE_LOGINS.labels("key", "refused").inc()
        return _error(403, "10010", "Forbidden", "Cross-origin sign-in is refused.")
    try:
        body: Any = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        body = None
    key = body.get("api_key") if isinstance(body, dict) else None
    if not isinstance(key, str) or not key.strip() or len(key) > MAX_KEY_LENGTH:
        return _error(422, "10015", "Invalid value for api_key",
                      'Send {"api_key": "<key>"}: a key from `callstream keys create`.')
    key = key.strip()
    checker = request.app.state.key_checker
    if not await checker.valid(key):
        CONSOLE_LOGINS.labels("key", "refused").inc()
        log.info("console: sign-in refused: the API key is unknown or revoked")
        return _error(401, "10009", "Authentication failed",
                      "The API key is unknown or revoked.")
    session = _sessions(request).open(time.monotonic(), key_hash=hash_key(key))
    CONSOLE_LOGINS.labels("key", "ok").inc()
    log.info("console: signed in with API key %s...", key[:10])
    return _with_cookie(Response(orjson.dumps({"csrf": session.csrf}),
                                 media_type="application/json"), request, session)


def _session(request: Request) -> Session | None:
    session: Session | None = request.scope.get("state", {}).get("console_session")
    return session


@router.get("/console/session")
async def session_info(request: Request) -> Response:
    session = _session(request)
    if session is None:  # signed in with a bearer key: no cookie session to describe
        return _error(404, "10005", "Resource not found", "No console session: sign in.")
    left = max(0.0, session.expires_at - time.monotonic())
    return Response(orjson.dumps({"csrf": session.csrf, "expires_in_secs": round(left)}),
                    media_type="application/json", headers={"cache-control": "no-store"})


@router.post("/console/logout")
async def logout(request: Request) -> Response:
    session = _session(request)
    if session is not None:
        _sessions(request).close(session.id)
    response = Response(status_code=204)
    response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="strict")
    return response


@router.get("/console/feed")
async def feed(request: Request) -> Response:
    console = _feed(request)
    try:
        sub = console.subscribe()
    except FeedFull as exc:
        return _error(503, "10011", "Too many consoles", str(exc))
    session = _session(request)
    sessions = _sessions(request)
    checker = request.app.state.key_checker

    async def still_signed_in() -> bool:
        if session is None:
            return True  # a bearer key: checked when the request came in
        if sessions.get(session.id, time.monotonic()) is None:
            return False
        return session.key_hash is None or await checker.valid_hash(session.key_hash)

    async def events() -> AsyncIterator[bytes]:
        try:
            yield b"retry: 2000\n\n"
            while True:
                message = await sub.next(KEEPALIVE_SECS)
                if message is None:
                    return
                if not message:
                    if not await still_signed_in():
                        yield b"event: signed-out\ndata: {}\n\n"
                        return
                    message = b": keepalive\n\n"
                elif session is not None and sessions.get(session.id,
                                                          time.monotonic()) is None:
                    yield b"event: signed-out\ndata: {}\n\n"
                    return
                yield message
        finally:
            console.unsubscribe(sub)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"cache-control": "no-store", "x-accel-buffering": "no"})
