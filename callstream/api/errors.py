"""The Telnyx error envelope, and the mapping from validation failures to its codes.

Every error the API returns looks like::

    {"errors": [{"code": "10032", "title": "Invalid enumerated value",
                 "detail": "...", "source": {"pointer": "/stream_track"}}]}

``code`` is a string of digits. Deterministic failures are never 409/408/5xx, which
the SDKs would retry.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match

from callstream.calls import exceptions as calls

JSON = "application/json"

#: Each domain refusal as the API answers it: HTTP status, Telnyx code, title (spec §8).
#: The detail and the field pointer come from the exception.
COMMAND_ERRORS: dict[type[calls.CommandError], tuple[int, str, str]] = {
    calls.CallNotFound: (422, "90015", "Invalid Call Control ID"),
    calls.CallEnded: (422, "90018", "Call has already ended"),
    calls.CallNotAnswered: (422, "90034", "Call not answered yet"),
    calls.InvalidCommand: (422, "10015", "Bad Request"),
    calls.InvalidValue: (422, "10015", "Invalid value"),
    calls.MissingParameter: (422, "10004", "Missing required parameter"),
    calls.UnsupportedValue: (422, "10032", "Invalid enumerated value"),
    calls.UnknownApplication: (422, "10015", "Invalid value for connection_id"),
    calls.DestinationRefused: (422, "10015", "Destination not allowed"),
    calls.NoSuchResource: (422, "10005", "Resource not found"),
    calls.StreamLimit: (422, "90045", "Media Streaming is used"),
    calls.NotForked: (422, "90031", "Call is not currently forked"),
    calls.AlreadyTranscribing: (422, "90054", "Call transcription is already in progress"),
    calls.TranscriptionUnavailable: (422, "10015", "Transcription engine unavailable"),
    # 503, which the Telnyx SDKs retry: behind a load balancer, on another node.
    calls.NodeDraining: (503, "10007", "Service unavailable"),
    # 503 too: a worker restarting, or a crossed bridge; a retry finds it answering.
    calls.PeerUnavailable: (503, "10011", "Service unavailable"),
}


class ApiError(Exception):
    """A refusal of the API's own (not the domain's), rendered as the Telnyx envelope."""

    def __init__(self, status: int, code: str, title: str, detail: str, *,
                 pointer: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.pointer = pointer

#: pydantic error type -> (code, title). Anything else is a generic 10015.
VALIDATION_CODES: dict[str, tuple[str, str]] = {
    "missing": ("10004", "Missing required parameter"),
    "literal_error": ("10032", "Invalid enumerated value"),
    "enum": ("10032", "Invalid enumerated value"),
    "invalid_url": ("10003", "Invalid URL"),
    "url_parsing": ("10003", "Invalid URL"),
    "url_scheme": ("10003", "Invalid URL"),
    "url_too_long": ("10003", "Invalid URL"),
    "greater_than": ("10033", "Value outside of range"),
    "greater_than_equal": ("10033", "Value outside of range"),
    "less_than": ("10033", "Value outside of range"),
    "less_than_equal": ("10033", "Value outside of range"),
    "string_too_long": ("10033", "Value outside of range"),
    "too_long": ("10033", "Value outside of range"),
    "invalid_e164": ("10016", "Phone number must be in +E164 format"),
    "invalid_connection_id": ("10015", "Invalid value for connection_id"),
    "unsupported": ("10015", "Bad Request"),
}


def error_body(
    code: str,
    title: str,
    detail: str | None = None,
    *,
    pointer: str | None = None,
    parameter: str | None = None,
) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "title": title}
    if detail:
        err["detail"] = detail
    if pointer is not None:
        err["source"] = {"pointer": pointer}
    elif parameter is not None:
        err["source"] = {"parameter": parameter}
    return err


def error_response(status: int, errors: Sequence[dict[str, Any]]) -> Response:
    return Response(orjson.dumps({"errors": list(errors)}), status_code=status, media_type=JSON)


def json_pointer(loc: Iterable[Any]) -> str:
    # pydantic tags union/validator branches in the location ("function-after[...]",
    # "list[str]"); they are not fields of the body.
    parts = [
        str(p).replace("~", "~0").replace("/", "~1")
        for p in loc
        if not (isinstance(p, str) and ("[" in p or "(" in p))
    ]
    return "/" + "/".join(parts)


def _describe(err: dict[str, Any]) -> str:
    ctx = err.get("ctx") or {}
    if err["type"] in ("literal_error", "enum") and "expected" in ctx:
        values = str(ctx["expected"]).replace("'", "").replace(" or ", ", ")
        return f"The value must be one of: {values}."
    if err["type"] == "missing":
        return f"The '{err['loc'][-1]}' parameter is required."
    if err["type"] == "null_not_allowed" or (
        err.get("input", ...) is None and str(err["type"]).endswith("_type")
    ):
        return f"The '{err['loc'][-1]}' parameter cannot be null."
    return str(err.get("msg", "Invalid value")).removeprefix("Value error, ")


def validation_errors(errors: Sequence[Any], *, location: str = "body") -> tuple[int, list[Any]]:
    """Map pydantic errors to Telnyx errors; the HTTP status is 400 for unparseable JSON."""
    out: list[dict[str, Any]] = []
    status = 422
    seen: set[str] = set()
    for err in errors:
        loc = list(err.get("loc", ()))
        kind = err.get("type", "")
        if kind in ("json_invalid", "json_type", "model_attributes_type") or (
            loc and loc[0] == "body" and len(loc) == 1 and kind != "missing"
        ):
            out.append(error_body("10015", "Bad Request", "The request body is not a JSON object."))
            status = 400
            continue
        if loc and loc[0] in ("body", "query", "path"):
            where, loc = loc[0], loc[1:]
        else:
            where = location
        code, title = VALIDATION_CODES.get(kind, ("10015", "Invalid value"))
        if where == "query":
            out.append(error_body(code, title, _describe(err), parameter=".".join(map(str, loc))))
        else:
            pointer = json_pointer(loc)
            if pointer in seen:  # one error per field: the first union branch explains it
                continue
            seen.add(pointer)
            out.append(error_body(code, title, _describe(err), pointer=pointer))
    return status, out


async def on_validation_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    status, errors = validation_errors(exc.errors())
    return error_response(status, errors)


def command_error_status(exc: calls.CommandError) -> tuple[int, str, str]:
    """(HTTP status, Telnyx code, title) of a domain refusal: its class's row, or its
    nearest ancestor's (a bare CommandError is a 10015)."""
    for cls in type(exc).__mro__:
        if cls in COMMAND_ERRORS:
            return COMMAND_ERRORS[cls]
    return 422, "10015", "Bad Request"


async def on_command_error(_request: Request, exc: Exception) -> Response:
    if isinstance(exc, ApiError):
        status, code, title = exc.status, exc.code, exc.title
    else:
        assert isinstance(exc, calls.CommandError)
        status, code, title = command_error_status(exc)
    return error_response(status, [error_body(code, title, exc.detail, pointer=exc.pointer)])


#: The methods a route may serve; a 405's ``Allow`` lists those that match its path.
HTTP_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def allowed_methods(request: Request) -> str:
    """Every method some route serves at this path (RFC 9110 ``Allow``). Starlette's own
    405 names only the first route matching the path, and each of ours serves one method;
    so each method is tried against the routes (a 405 is rare, the probe is cheap)."""
    allowed = [
        method
        for method in HTTP_METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL
            for route in request.app.router.routes
        )
    ]
    return ", ".join(allowed)


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        return error_response(404, [error_body("10005", "Resource not found", str(exc.detail))])
    if exc.status_code == 405:
        response = error_response(
            405, [error_body("10015", "Method not allowed", str(exc.detail))]
        )
        response.headers["Allow"] = allowed_methods(request)
        return response
    return error_response(exc.status_code, [error_body(str(exc.status_code), str(exc.detail))])
