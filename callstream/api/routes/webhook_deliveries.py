"""/v2/webhook_deliveries: the delivery log, in Telnyx's ``webhook_delivery`` shape.

One record per event (its ``id`` is the event's ``data.id``), with every attempt, most
recent first. ``status`` is ``delivered`` or ``failed`` as at Telnyx, plus ``pending`` for
events still queued or waiting for a retry. Filters follow the SDK's query names:
``filter[status][eq]`` (also ``filter[status]``, comma-separated), ``filter[event_type]``
(comma-separated), and ``filter[call_control_id]`` (ours); ``page[number]``, ``page[size]``.
``POST .../{id}/redeliver`` queues an event again with a fresh round of retries (and retry
budget); ``POST .../redeliver`` (ours) does it for every event given up since a time, so
the events a long outage failed can be sent again once the receiver is back.
"""

from __future__ import annotations

import math
import time
from typing import Any

import orjson
from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.responses import Response

from callstream.api.errors import JSON, error_body, error_response, validation_errors
from callstream.api.schemas.errors import ERROR_RESPONSES
from callstream.api.schemas.webhook_deliveries import BulkRedeliver
from callstream.store.outbox import AttemptRecord, DeliveryFilter, DeliveryRecord, Outbox
from callstream.store.records import OutboxStatus
from callstream.timefmt import iso

router = APIRouter(prefix="/v2/webhook_deliveries", tags=["webhooks"])

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 250
#: Events one bulk redelivery queues at most; ``more`` in the answer says to call again.
MAX_BULK_REDELIVER = 1000
class _BadParameter(Exception):
    def __init__(self, parameter: str, code: str, title: str, detail: str) -> None:
        super().__init__(detail)
        self.error = error_body(code, title, detail, parameter=parameter)


def _outbox(request: Request) -> Outbox:
    services = request.app.state.services
    worker = getattr(services, "webhooks", None)
    outbox = getattr(worker, "outbox", None)
    return outbox if isinstance(outbox, Outbox) else Outbox(services.store)


def _user_id(request: Request) -> str | None:
    settings = getattr(request.app.state.services, "settings", None)
    return getattr(settings, "account_id", None)


def _iso(ts: float | None) -> str | None:
    return None if ts is None else iso(ts)


def render_attempt(attempt: AttemptRecord) -> dict[str, Any]:
    response: dict[str, Any] | None = None
    if attempt.status_code is not None:
        response = {"status": attempt.status_code}
        if attempt.response_body is not None:
            response["body"] = attempt.response_body
    out: dict[str, Any] = {
        "status": attempt.outcome,
        "started_at": iso(attempt.at),
        "finished_at": iso(attempt.at + attempt.latency_ms / 1000.0),
        "http": {"request": {"url": attempt.url}, "response": response},
        "errors": [attempt.error_code] if attempt.error_code is not None else [],
        "attempt": attempt.attempt,
    }
    if attempt.error:
        out["error_detail"] = attempt.error
    return out


def render(record: DeliveryRecord, user_id: str | None = None) -> dict[str, Any]:
    """A delivery record as the API shows it (Telnyx fields first, then ours)."""
    return {
        "id": record.id,
        "record_type": "webhook_delivery",
        "user_id": user_id,
        "status": record.status.value,
        "webhook": orjson.loads(record.data),
        "started_at": _iso(record.started_at),
        "finished_at": _iso(record.finished_at),
        "attempts": [render_attempt(a) for a in record.history],
        "call_control_id": record.call_control_id,
        "delivered_to": record.delivered_to,
        "next_attempt_at": (
            _iso(record.next_attempt_at) if record.status is OutboxStatus.PENDING else None
        ),
        "last_error": record.last_error,
    }


def _csv(value: str | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return tuple(v for v in (part.strip() for part in value.split(",")) if v)


def _int(params: Any, name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _BadParameter(
            name, "10015", "Invalid value", f"{name} must be an integer, got {raw!r}."
        ) from None
    if not low <= value <= high:
        raise _BadParameter(
            name, "10033", "Value outside of range", f"{name} must be between {low} and {high}."
        )
    return value


def _filter(params: Any) -> DeliveryFilter:
    statuses = []
    name = "filter[status][eq]" if "filter[status][eq]" in params else "filter[status]"
    for value in _csv(params.get(name)):
        try:
            statuses.append(OutboxStatus(value))
        except ValueError:
            allowed = ", ".join(s.value for s in OutboxStatus)
            raise _BadParameter(
                name, "10032", "Invalid enumerated value", f"The value must be one of: {allowed}."
            ) from None
    return DeliveryFilter(
        statuses=tuple(statuses),
        event_types=_csv(params.get("filter[event_type]")),
        call_control_id=params.get("filter[call_control_id]") or None,
    )


def _not_found(event_id: str) -> Response:
    return error_response(
        404,
        [error_body("10005", "Resource not found", f"No webhook delivery with id {event_id}.")],
    )


@router.get("", summary="List webhook deliveries (newest first)")
async def list_deliveries(request: Request) -> Response:
    params = request.query_params
    try:
        flt = _filter(params)
        page_number = _int(params, "page[number]", 1, 1, 1_000_000)
        page_size = _int(params, "page[size]", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
    except _BadParameter as exc:
        return error_response(422, [exc.error])
    records, total = await _outbox(request).list_deliveries(
        flt, page_number=page_number, page_size=page_size
    )
    user_id = _user_id(request)
    body = {
        "data": [render(r, user_id) for r in records],
        "meta": {
            "page_number": page_number,
            "page_size": page_size,
            "total_pages": max(1, math.ceil(total / page_size)),
            "total_results": total,
        },
    }
    return Response(orjson.dumps(body), media_type=JSON)


# Under actions/: a plain sibling such as /redeliver is also GET /{event_id}, which would
# make the path answer GET with 404 rather than 405.
@router.post(
    "/actions/redeliver",
    summary="Queue again the webhooks given up since a time",
    description=(
        "Every event whose delivery failed (was given up) at or after `failed_since` is "
        f"queued again with a fresh round of retries, oldest first, at most "
        f"{MAX_BULK_REDELIVER} per request: when `more` is true, call again."
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {JSON: {"schema": BulkRedeliver.model_json_schema()}},
        }
    },
    responses={400: ERROR_RESPONSES[400], 422: ERROR_RESPONSES[422]},
)
async def redeliver_failed(request: Request) -> Response:
    try:
        # strict: a number is not a time (JSON Schema says string, date-time).
        body = BulkRedeliver.model_validate_json(await request.body() or b"{}", strict=True)
    except ValidationError as exc:
        # Located as FastAPI locates body errors, so the envelope is the same as elsewhere.
        status, errors = validation_errors([{**e, "loc": ("body", *e["loc"])}
                                            for e in exc.errors()])
        return error_response(status, errors)
    worker = getattr(request.app.state.services, "webhooks", None)
    count = await _outbox(request).redeliver_failed(
        body.failed_since.timestamp(),
        time.time(),
        limit=MAX_BULK_REDELIVER,
        call_control_id=body.call_control_id,
    )
    if worker is not None and count:
        worker.wake()
    data = {"record_type": "webhook_redelivery", "redelivered": count,
            "more": count >= MAX_BULK_REDELIVER}
    return Response(orjson.dumps({"data": data}), media_type=JSON)


@router.get("/{event_id}", summary="Find a webhook delivery by id",
            responses={404: ERROR_RESPONSES[404]})
async def get_delivery(request: Request, event_id: str) -> Response:
    record = await _outbox(request).get_delivery(event_id)
    if record is None:
        return _not_found(event_id)
    return Response(orjson.dumps({"data": render(record, _user_id(request))}), media_type=JSON)


@router.post(
    "/{event_id}/redeliver",
    summary="Queue a webhook again",
    description="Queue the event again now with a fresh round of retries and retry budget; "
    "its attempt history is kept. An event being attempted right now is left alone.",
    responses={404: ERROR_RESPONSES[404]},
)
async def redeliver(request: Request, event_id: str) -> Response:
    worker = getattr(request.app.state.services, "webhooks", None)
    if worker is not None:
        record = await worker.redeliver(event_id)
    else:
        record = await _outbox(request).redeliver(event_id, time.time())
    if record is None:
        return _not_found(event_id)
    return Response(orjson.dumps({"data": render(record, _user_id(request))}), media_type=JSON)
