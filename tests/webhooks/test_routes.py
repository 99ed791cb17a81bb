"""/v2/webhook_deliveries on a tiny FastAPI app over a real store; also through the Telnyx SDK."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from types import SimpleNamespace

import httpx
import pytest
from fastapi import FastAPI
from telnyx import AsyncTelnyx, NotFoundError

from callstream.api.routes.webhook_deliveries import router
from callstream.config import Settings
from callstream.store.outbox import AttemptRecord, Outbox, Settlement
from callstream.store.records import OutboxStatus
from callstream.store.sql import SqlStore
from tests.webhooks.conftest import enqueue, event

URL = "http://127.0.0.1:9/hooks"


@pytest.fixture
async def client(store: SqlStore, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.state.services = SimpleNamespace(store=store, settings=settings, webhooks=None)
    app.include_router(router)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as c:
        yield c


@pytest.fixture
async def history(store: SqlStore) -> list[str]:
    """Three events: one delivered after a 500, one failed, one pending."""
    ob = Outbox(store)
    ids = await enqueue(
        store,
        event(URL, "a", event_type="call.initiated"),
        event(URL, "b", event_type="call.hangup"),
        event(URL, "c", event_type="call.hangup"),
    )
    now = time.time()
    items = await ob.claim("w", now, lease_secs=60, max_keys=10, max_events=10)
    a, b, c = items
    await ob.settle(
        "w",
        now,
        [
            Settlement(seq=a.seq, status=OutboxStatus.DELIVERED, attempts=2, next_attempt_at=now,
                       started_at=now - 1, finished_at=now, delivered_at=now, delivered_to=URL,
                       last_status=200),
            Settlement(seq=b.seq, status=OutboxStatus.FAILED, attempts=1, next_attempt_at=now,
                       started_at=now, finished_at=now, last_status=500, last_error="HTTP 500"),
        ],
        [
            AttemptRecord(event_id=a.id, attempt=1, url=URL, outcome="failed", at=now - 1,
                          latency_ms=5.0, status_code=500, error_code=75001,
                          error="HTTP 500: Internal Server Error", response_body="oops"),
            AttemptRecord(event_id=a.id, attempt=2, url=URL, outcome="delivered", at=now,
                          latency_ms=2.0, status_code=200, response_body="ok"),
            AttemptRecord(event_id=b.id, attempt=1, url=URL, outcome="failed", at=now,
                          latency_ms=1.0, error_code=75002, error="cannot connect"),
        ],
        [c.seq],
    )
    return ids


async def test_list_in_telnyx_shape(client: httpx.AsyncClient, history: list[str]) -> None:
    response = await client.get("/v2/webhook_deliveries")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["meta"] == {"page_number": 1, "page_size": 20, "total_pages": 1,
                            "total_results": 3}
    assert [d["id"] for d in body["data"]] == history[::-1]
    a = body["data"][2]
    assert a["record_type"] == "webhook_delivery"
    assert a["status"] == "delivered"
    assert a["webhook"]["id"] == history[0]
    assert a["webhook"]["record_type"] == "event"
    assert set(a["webhook"]) == {"event_type", "id", "occurred_at", "payload", "record_type"}
    assert a["started_at"].endswith("Z") and a["finished_at"].endswith("Z")
    latest, first = a["attempts"]
    assert latest["status"] == "delivered"
    assert latest["http"] == {"request": {"url": URL}, "response": {"status": 200, "body": "ok"}}
    assert latest["errors"] == []
    assert first["status"] == "failed" and first["errors"] == [75001]
    assert first["http"]["response"] == {"status": 500, "body": "oops"}
    b = body["data"][1]
    assert b["status"] == "failed" and b["attempts"][0]["http"]["response"] is None
    assert b["attempts"][0]["error_detail"] == "cannot connect"
    assert body["data"][0]["status"] == "pending" and body["data"][0]["attempts"] == []


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("filter[status][eq]=failed", [1]),
        ("filter[status]=delivered,pending", [2, 0]),
        ("filter[event_type]=call.hangup", [2, 1]),
        ("filter[event_type]=call.initiated,call.hangup", [2, 1, 0]),
        ("filter[call_control_id]=v3:b", [1]),
        ("page[size]=1&page[number]=2", [1]),
    ],
)
async def test_filters_and_pages(
    client: httpx.AsyncClient, history: list[str], query: str, expected: list[int]
) -> None:
    body = (await client.get(f"/v2/webhook_deliveries?{query}")).json()
    assert [d["id"] for d in body["data"]] == [history[i] for i in expected]


async def test_page_meta(client: httpx.AsyncClient, history: list[str]) -> None:
    meta = (await client.get("/v2/webhook_deliveries?page[size]=2&page[number]=2")).json()["meta"]
    assert meta == {"page_number": 2, "page_size": 2, "total_pages": 2, "total_results": 3}


@pytest.mark.parametrize(
    ("query", "code", "parameter"),
    [
        ("filter[status][eq]=lost", "10032", "filter[status][eq]"),
        ("page[size]=1000", "10033", "page[size]"),
        ("page[number]=0", "10033", "page[number]"),
        ("page[size]=ten", "10015", "page[size]"),
    ],
)
async def test_bad_parameters_get_the_telnyx_envelope(
    client: httpx.AsyncClient, query: str, code: str, parameter: str
) -> None:
    response = await client.get(f"/v2/webhook_deliveries?{query}")
    assert response.status_code == 422
    (error,) = response.json()["errors"]
    assert error["code"] == code and error["source"] == {"parameter": parameter}


async def test_get_one_and_404(client: httpx.AsyncClient, history: list[str]) -> None:
    one = await client.get(f"/v2/webhook_deliveries/{history[1]}")
    assert one.json()["data"]["status"] == "failed"
    missing = await client.get("/v2/webhook_deliveries/nope")
    assert missing.status_code == 404
    assert missing.json() == {"errors": [{"code": "10005", "title": "Resource not found",
                                          "detail": "No webhook delivery with id nope."}]}


async def test_redeliver_requeues_and_404s(
    client: httpx.AsyncClient, store: SqlStore, history: list[str]
) -> None:
    response = await client.post(f"/v2/webhook_deliveries/{history[1]}/redeliver")
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["status"] == "pending" and data["next_attempt_at"] is not None
    assert len(data["attempts"]) == 1  # history is kept
    record = await Outbox(store).get_delivery(history[1])
    assert record is not None and record.status is OutboxStatus.PENDING
    missing = await client.post("/v2/webhook_deliveries/nope/redeliver")
    assert missing.status_code == 404
    assert missing.json()["errors"][0]["code"] == "10005"


async def test_the_sdk_lists_and_retrieves(
    client: httpx.AsyncClient, history: list[str]
) -> None:
    sdk = AsyncTelnyx(api_key="k", base_url="http://test/v2", http_client=client)
    page = await sdk.webhook_deliveries.list(filter={"status": {"eq": "delivered"}})
    assert [d.id for d in page.data] == [history[0]]
    assert page.data[0].status == "delivered"
    assert page.data[0].attempts is not None and page.data[0].attempts[0].status == "delivered"
    everything = [d.id async for d in sdk.webhook_deliveries.list(page_size=1)]
    assert everything == history[::-1]
    one = await sdk.webhook_deliveries.retrieve(history[2])
    assert one.data is not None and one.data.webhook is not None
    assert one.data.webhook.id == history[2]
    with pytest.raises(NotFoundError):
        await sdk.webhook_deliveries.retrieve("nope")


async def test_bulk_redeliver_requeues_failed_since(
    client: httpx.AsyncClient, store: SqlStore, history: list[str]
) -> None:
    later = await client.post("/v2/webhook_deliveries/actions/redeliver",
                              json={"failed_since": "2999-01-01T00:00:00Z"})
    assert later.json()["data"] == {"record_type": "webhook_redelivery", "redelivered": 0,
                                    "more": False}
    response = await client.post("/v2/webhook_deliveries/actions/redeliver",
                                 json={"failed_since": "2000-01-01T00:00:00+00:00"})
    assert response.status_code == 200
    assert response.json()["data"]["redelivered"] == 1
    statuses = [(await Outbox(store).get_delivery(i)) for i in history]
    assert [r.status.value for r in statuses if r is not None] == [
        "delivered", "pending", "pending"]  # the failed one is back; delivered untouched


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"failed_since": "yesterday"}, 422,
         {"code": "10015", "title": "Invalid value", "source": {"pointer": "/failed_since"}}),
        ({"failed_since": "2026-12-04T20:00:00"}, 422,  # no time zone: ambiguous
         {"code": "10015", "title": "Invalid value", "source": {"pointer": "/failed_since"}}),
        ({}, 422, {"code": "10004", "title": "Missing required parameter",
                   "source": {"pointer": "/failed_since"}}),
        ([1], 400, {"code": "10015", "title": "Bad Request"}),
    ],
)
async def test_bulk_redeliver_bad_bodies_get_the_telnyx_envelope(
    client: httpx.AsyncClient, body: object, status: int, error: dict[str, object]
) -> None:
    response = await client.post("/v2/webhook_deliveries/actions/redeliver", json=body)
    assert response.status_code == status
    (got,) = response.json()["errors"]
    assert {k: got[k] for k in error} == error


async def test_redeliver_routes_are_documented(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    bulk = paths["/v2/webhook_deliveries/actions/redeliver"]["post"]
    schema = bulk["requestBody"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["failed_since"]
    assert {"400", "422"} <= set(bulk["responses"])
    assert "404" in paths["/v2/webhook_deliveries/{event_id}/redeliver"]["post"]["responses"]
