"""Webhook delivery safety (issue #11) against a real ``callstream serve``.

Events come from real API commands: dials to a SIP port nobody answers, so each call
commits ``call.initiated`` (and ``call.hangup`` when hung up) in the call layer's own
transactions; receivers are real HTTP servers on loopback.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.helpers import ServerProcess, create_api_key, free_port, free_udp_tcp_port
from tests.webhooks.receivers import Received, Receiver, Reply

pytestmark = pytest.mark.slow

Start = Callable[..., Awaitable[Receiver]]


@asynccontextmanager
async def serve(tmp_path: Path, env: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    """A server with ``env``; yields an API client (base URL: the server's root)."""
    # In this process (as `callstream keys create` does it), not a 1 s CLI process.
    key = await asyncio.to_thread(create_api_key, tmp_path)
    server = ServerProcess(tmp_path, free_port(), free_udp_tcp_port(), key, env=env)
    await asyncio.to_thread(server.start)
    try:
        async with httpx.AsyncClient(
            base_url=server.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=10
        ) as api:
            yield api
    finally:
        await asyncio.to_thread(server.stop)


async def application(api: httpx.AsyncClient, name: str, url: str, webhook_secs: int = 10) -> str:
    r = await api.post("/v2/call_control_applications", json={
        "application_name": name, "webhook_event_url": url, "webhook_timeout_secs": webhook_secs})
    assert r.status_code == 201, r.text
    return str(r.json()["data"]["id"])


async def dial(api: httpx.AsyncClient, connection_id: str, dead_sip: int) -> str:
    r = await api.post("/v2/calls", json={
        "connection_id": connection_id, "to": f"sip:nobody@127.0.0.1:{dead_sip}",
        "from": "+15550001111", "timeout_secs": 60,
    })
    assert r.status_code == 200, r.text
    return str(r.json()["data"]["call_control_id"])


async def deliveries(api: httpx.AsyncClient, **params: str) -> list[dict[str, Any]]:
    r = await api.get("/v2/webhook_deliveries", params={"page[size]": "250", **params})
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


async def until(predicate: Callable[[], Awaitable[bool]], within: float) -> None:
    async with asyncio.timeout(within):
        while not await predicate():  # noqa: ASYNC110 - watching another process's effects
            await asyncio.sleep(0.05)


def event_of(req: Received) -> dict[str, Any]:
    return orjson.loads(req.body)["data"]  # type: ignore[no-any-return]


# -- 9: one application's hung receiver does not hold up another's ----------------------


async def test_a_hung_application_does_not_hold_up_another(
    tmp_path: Path, receivers: Start
) -> None:
    hung = await receivers(Reply(hang=True))
    fast = await receivers()
    env = {"CALLSTREAM_WEBHOOK_MAX_CONNECTIONS": "8",
           "CALLSTREAM_WEBHOOK_MAX_CONNECTIONS_PER_DESTINATION": "2",
           # The hung attempts never finish: the server's stop cuts them off after this.
           "CALLSTREAM_WEBHOOK_STOP_GRACE_SECS": "0.5"}
    dead_sip = free_udp_tcp_port()
    async with serve(tmp_path, env) as api:
        hung_app = await application(api, "hangs", hung.url, webhook_secs=30)
        fast_app = await application(api, "fast", fast.url)
        for _ in range(12):  # more calls than the whole pool has connections
            await dial(api, hung_app, dead_sip)
        await hung.wait_for(2, within=20)
        await asyncio.sleep(1.0)  # let the hung destination take all it can
        start = time.monotonic()
        for _ in range(4):
            await dial(api, fast_app, dead_sip)
        await fast.wait_for(4, within=10)  # today's code: stuck behind 30 s timeouts
        took = time.monotonic() - start
        print(f"\nfast application: 4 events in {took:.2f} s while the hung one holds "
              f"{hung.in_flight} requests")
        assert hung.in_flight <= 2  # its share, not the pool
        metrics = (await api.get("/metrics")).text
        hung_dest = hung.url.split("/")[2]
        fast_dest = fast.url.split("/")[2]
        assert f'callstream_webhook_destination_in_flight{{destination="{hung_dest}"}}' \
            in metrics
        assert (f'callstream_webhook_destination_attempts_total{{destination="{fast_dest}",'
                f'outcome="delivered"}}') in metrics
        assert f'callstream_webhook_destination_attempt_seconds_bucket{{destination="{fast_dest}"' \
            in metrics


# -- 8 (part): the delivery log does not read back what a receiver answered -------------


async def test_the_delivery_log_keeps_no_answer_body_by_default(
    tmp_path: Path, receivers: Start
) -> None:
    internal = await receivers(Reply(
        status=200, body=b'{"aws_secret": "AKIA-not-for-you"}',
        headers={"content-type": "application/json"}))
    async with serve(tmp_path, {"CALLSTREAM_WEBHOOK_URL": internal.url}) as api:
        await dial(api, "default", free_udp_tcp_port())
        await internal.wait_for(1, within=20)

        async def delivered() -> bool:
            return any(d["status"] == "delivered" for d in await deliveries(api))

        await until(delivered, 20)
        (record,) = [d for d in await deliveries(api) if d["status"] == "delivered"]
        response = record["attempts"][0]["http"]["response"]
        assert response == {"status": 200}  # no "body": nothing to read back
        assert b"AKIA" not in (await api.get("/v2/webhook_deliveries")).content


# -- 10: retried for the budget, then failed, then redelivered --------------------------


async def test_a_down_receiver_is_retried_for_the_budget_then_redelivered(
    tmp_path: Path, receivers: Start
) -> None:
    up = False

    def behaviour(_req: Received) -> Reply:
        return Reply() if up else Reply(status=503, body=b"down")

    receiver = await receivers(behaviour)
    # Seven attempts in 2 s (at 0, 0.1, 0.3, 0.7, 1.2, 1.7 and the budget's end): well
    # past the fast schedule's three.
    budget = 2.0
    env = {
        "CALLSTREAM_WEBHOOK_URL": receiver.url,
        "CALLSTREAM_WEBHOOK_RETRY_DELAYS": "[0.1, 0.2]",  # the fast schedule: 0.3 s in all
        "CALLSTREAM_WEBHOOK_RETRY_JITTER": "0",
        "CALLSTREAM_WEBHOOK_RETRY_BUDGET_SECS": str(budget),
        "CALLSTREAM_WEBHOOK_RETRY_MAX_DELAY_SECS": "0.5",
    }
    async with serve(tmp_path, env) as api:
        before = time.time()
        ccid = await dial(api, "default", free_udp_tcp_port())
        r = await api.post(f"/v2/calls/{ccid}/actions/hangup", json={})
        assert r.status_code == 200, r.text

        async def both_failed() -> bool:
            got = await deliveries(api, **{"filter[call_control_id]": ccid})
            return len(got) == 2 and all(d["status"] == "failed" for d in got)

        await until(both_failed, 60)
        hangup, initiated = await deliveries(api, **{"filter[call_control_id]": ccid})
        assert (initiated["webhook"]["event_type"], hangup["webhook"]["event_type"]) == (
            "call.initiated", "call.hangup")
        # Retried past the fast schedule (3 attempts), for the whole budget.
        assert len(initiated["attempts"]) > 5
        attempts = sorted(initiated["attempts"], key=lambda a: a["attempt"])
        span = (_ts(attempts[-1]["started_at"]) - _ts(attempts[0]["started_at"]))
        assert span >= budget - 0.1
        # Order: the call's next event waited until the first was given up.
        first_hangup = min(_ts(a["started_at"]) for a in hangup["attempts"])
        assert first_hangup >= _ts(attempts[-1]["started_at"])
        print(f"\ncall.initiated: {len(attempts)} attempts over {span:.1f} s before failed")

        up, seen = True, len(receiver.requests)
        one = await api.post(f"/v2/webhook_deliveries/{initiated['id']}/redeliver")
        assert one.status_code == 200 and one.json()["data"]["status"] == "pending"
        bulk = await api.post("/v2/webhook_deliveries/actions/redeliver",
                              json={"failed_since": _iso(before)})
        assert bulk.status_code == 200
        assert bulk.json()["data"]["redelivered"] == 1  # the hang-up; the other is pending

        async def both_delivered() -> bool:
            got = await deliveries(api, **{"filter[call_control_id]": ccid})
            return all(d["status"] == "delivered" for d in got)

        await until(both_delivered, 20)
        after = [event_of(q)["event_type"] for q in receiver.requests[seen:]]
        assert after == ["call.initiated", "call.hangup"]  # in the call's order

        missing = await api.post("/v2/webhook_deliveries/nope/redeliver")
        assert missing.status_code == 404
        assert missing.json()["errors"][0]["code"] == "10005"
        bad = await api.post("/v2/webhook_deliveries/actions/redeliver",
                             json={"failed_since": "soon"})
        assert bad.status_code == 422
        assert bad.json()["errors"][0]["source"] == {"pointer": "/failed_since"}


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()
