"""/v2/call_control_applications: where each connection_id's webhooks go."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Depends, Query
from starlette.responses import Response

from callstream.api.destinations import check_urls
from callstream.api.errors import JSON, ApiError
from callstream.api.schemas.applications import (
    ApplicationCreate,
    ApplicationListResponse,
    ApplicationResponse,
    ApplicationUpdate,
)
from callstream.api.services import Services, services
from callstream.store.records import DEFAULT_APP_ID, Application
from callstream.timefmt import iso_now

router = APIRouter(prefix="/v2/call_control_applications", tags=["applications"])
Svc = Annotated[Services, Depends(services)]
#: Beyond this a page number only names an empty page (and overflows 64-bit JSON).
MAX_PAGE_NUMBER = 1_000_000
MAX_PAGE_SIZE = 250
OWN_FIELDS = {
    "application_name", "webhook_event_url", "webhook_event_failover_url",
    "webhook_timeout_secs", "active",
}


def render(app: Application) -> dict[str, Any]:
    return {
        "id": app.id,
        "record_type": "call_control_application",
        "application_name": app.application_name,
        "webhook_event_url": app.webhook_event_url,
        "webhook_event_failover_url": app.webhook_event_failover_url,
        "webhook_timeout_secs": app.webhook_timeout_secs,
        "active": app.active,
        "webhook_api_version": "2",
        "dtmf_type": "RFC 2833",
        "first_command_timeout": False,
        "first_command_timeout_secs": 30,
        "tags": [],
        # Nulls stored by older versions fall back to the defaults above.
        **{k: v for k, v in app.extra.items() if v is not None},
        "created_at": app.created_at,
        "updated_at": app.updated_at,
    }


def _one(app: Application, status: int = 200) -> Response:
    return Response(orjson.dumps({"data": render(app)}), status_code=status, media_type=JSON)


async def _get(svc: Services, app_id: str) -> Application:
    app = await svc.store.get_application(app_id)
    if app is None:
        raise ApiError(404, "10005", "Resource not found", f"No application with id {app_id!r}.")
    return app


async def _check_urls(svc: Services, values: dict[str, Any]) -> None:
    await check_urls(svc.outbound, {
        f"/{name}": values.get(name)
        for name in ("webhook_event_url", "webhook_event_failover_url")})


@router.post("", response_model=ApplicationResponse, status_code=201)
async def create(svc: Svc, body: Annotated[ApplicationCreate, Body()]) -> Response:
    values = body.model_dump()
    await _check_urls(svc, values)
    now = iso_now()
    app = Application(
        id=str(uuid.uuid4()),
        application_name=values["application_name"],
        webhook_event_url=values["webhook_event_url"],
        webhook_event_failover_url=values["webhook_event_failover_url"],
        webhook_timeout_secs=values["webhook_timeout_secs"],
        active=values["active"],
        created_at=now,
        updated_at=now,
        extra={k: v for k, v in values.items() if k not in OWN_FIELDS},
    )
    await svc.store.put_application(app)
    return _one(app, 201)


@router.get("", response_model=ApplicationListResponse)
async def list_(
    svc: Svc,
    page_number: Annotated[int, Query(alias="page[number]", ge=1, le=MAX_PAGE_NUMBER)] = 1,
    page_size: Annotated[int, Query(alias="page[size]", ge=1, le=MAX_PAGE_SIZE)] = 20,
) -> Response:
    apps = await svc.store.list_applications()
    start = (page_number - 1) * page_size
    page = apps[start : start + page_size]
    meta = {
        "page_number": page_number,
        "page_size": page_size,
        "total_results": len(apps),
        "total_pages": max(1, -(-len(apps) // page_size)),
    }
    return Response(
        orjson.dumps({"data": [render(a) for a in page], "meta": meta}), media_type=JSON
    )


@router.get("/{app_id}", response_model=ApplicationResponse)
async def retrieve(svc: Svc, app_id: str) -> Response:
    return _one(await _get(svc, app_id))


@router.patch("/{app_id}", response_model=ApplicationResponse)
async def update(svc: Svc, app_id: str, body: Annotated[ApplicationUpdate, Body()]) -> Response:
    app = await _get(svc, app_id)
    values = body.model_dump(exclude_unset=True)
    await _check_urls(svc, values)
    own = {k: v for k, v in values.items() if k in OWN_FIELDS}
    extra = {**app.extra, **{k: v for k, v in values.items() if k not in OWN_FIELDS}}
    app = replace(app, **own, extra=extra, updated_at=iso_now())
    await svc.store.put_application(app)
    return _one(app)


@router.delete("/{app_id}", response_model=ApplicationResponse)
async def delete(svc: Svc, app_id: str) -> Response:
    if app_id == DEFAULT_APP_ID:
        # Inbound calls belong to it: without it every one would get 480, every dial 422.
        raise ApiError(
            422,
            "10015",
            "Invalid value",
            "The 'default' application cannot be deleted: inbound calls use it. "
            "PATCH it instead (its URLs come from CALLSTREAM_WEBHOOK_URL).",
        )
    app = await _get(svc, app_id)
    await svc.store.delete_application(app_id)
    return _one(app)
