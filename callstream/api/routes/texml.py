"""TeXML Streams REST (spec §10): start and stop a stream on a call by its ``call_sid``.

Bodies are PascalCase, as JSON (Python SDK) or ``application/x-www-form-urlencoded``
(Node SDK, OAS); both are accepted. Answers are flat objects (no ``data`` wrapper).
An unknown call or stream is 404 with the TeXML error shape
``{"errors": [{"detail": "Resource not found"}]}``.
"""

from __future__ import annotations

import copy
from typing import Annotated, Any
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, ValidationError
from starlette.responses import Response

from callstream.api.destinations import check_urls
from callstream.api.errors import JSON, error_body, error_response, validation_errors
from callstream.api.schemas.errors import TEXML_NOT_FOUND
from callstream.api.schemas.fields import without_null
from callstream.api.schemas.streaming import TexmlStream, TexmlStreamCreate, TexmlStreamUpdate
from callstream.api.services import Services, services
from callstream.calls.exceptions import CallNotFound, NoSuchResource
from callstream.timefmt import iso_now

router = APIRouter(prefix="/v2/texml/Accounts/{account_sid}/Calls/{call_sid}",
                   tags=["texml"])
Svc = Annotated[Services, Depends(services)]
AccountSid = Annotated[str, Path(description="Account (any value; echoed back)")]
CallSid = Annotated[str, Path(description="The call_control_id of the call")]

NOT_FOUND = b'{"errors":[{"detail":"Resource not found"}]}'


async def _parse(request: Request, model: type[BaseModel]) -> BaseModel | Response:
    raw = await request.body()
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    data: Any
    if ctype == "application/x-www-form-urlencoded":
        data = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
    elif not raw.strip():
        data = {}
    else:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            data = None
    if not isinstance(data, dict):
        return error_response(400, [error_body("10015", "Bad Request",
                                               "The request body is not a JSON object.")])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        status, errors = validation_errors(exc.errors(), location="body")
        return error_response(status, errors)


def texml_object(account_sid: str, call_sid: str, sid: str, status: str, *,
                 name: str | None = None) -> Response:
    """The TeXML stream object (:class:`TexmlStream`), as both actions answer it."""
    out: dict[str, Any] = {
        "account_sid": account_sid, "call_sid": call_sid, "sid": sid,
        "status": status, "date_updated": iso_now(),
        "uri": f"/v2/texml/Accounts/{account_sid}/Calls/{call_sid}/Streams/{sid}.json",
    }
    if name is not None or status != "stopped":
        out["name"] = name
    return Response(orjson.dumps(out), media_type=JSON)


def _body_schema(model: type[BaseModel], *, required: bool) -> dict[str, Any]:
    """The body, documented by hand: _parse reads it (JSON or form) instead of FastAPI."""
    schema = model.model_json_schema()
    form = copy.deepcopy(schema)  # a form has no null: an optional field is left out
    for prop in form["properties"].values():
        without_null(prop)
    return {
        "requestBody": {
            "required": required,
            "content": {
                "application/json": {"schema": schema},
                "application/x-www-form-urlencoded": {"schema": form},
            }
        }
    }


@router.post("/Streams.json", response_model=TexmlStream, summary="Start streaming media",
             responses=TEXML_NOT_FOUND,
             openapi_extra=_body_schema(TexmlStreamCreate, required=True))
async def create_stream(svc: Svc, account_sid: AccountSid, call_sid: CallSid,
                        request: Request) -> Response:
    body = await _parse(request, TexmlStreamCreate)
    if isinstance(body, Response):
        return body
    assert isinstance(body, TexmlStreamCreate)
    await check_urls(svc.outbound, {"/Url": body.Url, "/StatusCallback": body.StatusCallback})
    assert svc.streams is not None
    try:
        sid = await svc.streams.texml_start(call_sid, body.to_request(account_sid))
    except (CallNotFound, NoSuchResource):
        return Response(NOT_FOUND, status_code=404, media_type=JSON)
    return texml_object(account_sid, call_sid, sid, "in-progress", name=body.Name)


@router.post("/Streams/{streaming_sid}.json", response_model=TexmlStream,
             summary="Update (stop) a stream", responses=TEXML_NOT_FOUND,
             openapi_extra=_body_schema(TexmlStreamUpdate, required=False))
async def update_stream(svc: Svc, account_sid: AccountSid, call_sid: CallSid,
                        streaming_sid: str, request: Request) -> Response:
    body = await _parse(request, TexmlStreamUpdate)
    if isinstance(body, Response):
        return body
    assert svc.streams is not None
    try:
        await svc.streams.texml_stop(call_sid, streaming_sid)
    except (CallNotFound, NoSuchResource):
        return Response(NOT_FOUND, status_code=404, media_type=JSON)
    return texml_object(account_sid, call_sid, streaming_sid, "stopped")
