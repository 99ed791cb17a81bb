"""The HTTP control plane: ``create_app(services)`` builds the FastAPI application."""

from __future__ import annotations

import time

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from callstream import __version__
from callstream.api.auth import AuthMiddleware, KeyChecker
from callstream.api.body_limit import BodyLimit
from callstream.api.errors import (
    ApiError,
    on_command_error,
    on_http_error,
    on_validation_error,
)
from callstream.api.routes import (
    applications,
    calls,
    forking,
    internal,
    streaming,
    texml,
    transcription,
    webhook_deliveries,
    webrtc,
)
from callstream.api.schemas.errors import ERROR_RESPONSES
from callstream.api.services import Services
from callstream.calls.exceptions import CommandError
from callstream.console import routes as console
from callstream.metrics import HTTP_LATENCY, HTTP_REQUESTS

#: Every API's routes but the console's (included when the console is on).
ROUTERS = (calls.router, applications.router, streaming.router, texml.router,
           forking.router, transcription.router, webhook_deliveries.router, webrtc.router,
           internal.router)


def create_app(services: Services) -> FastAPI:
    app = FastAPI(
        title="callstream",
        version=__version__,
        description="Telnyx Call Control compatible voice media server. "
        "Authenticate with `Authorization: Bearer <key>` (`callstream keys create`).",
        openapi_url="/v2/openapi.json",
        docs_url="/v2/docs",
        redoc_url=None,
        responses=ERROR_RESPONSES,
    )
    app.state.services = services
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(CommandError, on_command_error)
    app.add_exception_handler(ApiError, on_command_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)

    @app.get("/healthz", tags=["ops"], summary="Liveness (no key needed)")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok", "version": __version__})

    @app.get(
        "/metrics",
        tags=["ops"],
        summary="Prometheus metrics",
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    for router in ROUTERS:
        app.include_router(router)
    if services.console_sessions is not None:
        app.include_router(console.router)
    checker = KeyChecker(services.store)
    app.state.key_checker = checker
    # Innermost of the three: only an authenticated request's body is ever read.
    app.add_middleware(BodyLimit, max_size=services.settings.http_max_body_size)
    app.add_middleware(AuthMiddleware, checker=checker, sessions=services.console_sessions)
    app.add_middleware(RequestMetrics)
    return app


class RequestMetrics:
    """Counts requests and their latency by route, as a pure ASGI middleware (Starlette's
    ``@app.middleware("http")`` runs each request through extra tasks and streams)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            HTTP_REQUESTS.labels(scope["method"], path, str(status)).inc()
            HTTP_LATENCY.labels(scope["method"], path).observe(time.perf_counter() - start)
