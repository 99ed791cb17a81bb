"""kill -9 ``callstream serve`` with webhooks in flight; start it again: nothing is lost.

Events come from real API commands (dials to a SIP port nobody answers; half are hung
up, half are still ringing at the kill and are closed as orphans on the restart), so
they are written by the call layer in the same transactions as the call state; the
receiver is slow so that deliveries are in flight at the kill.
"""

from __future__ import annotations

import asyncio
import signal
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import orjson
import pytest

from tests.helpers import ServerProcess, cli, free_port, free_udp_tcp_port, stored_events
from tests.webhooks.receivers import Receiver, Reply

pytestmark = pytest.mark.slow

CALLS = 8


async def until(predicate: Callable[[], bool], within: float) -> None:
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - watching another process's effects
            await asyncio.sleep(0.01)


def arrivals(receiver: Receiver) -> tuple[dict[str, list[tuple[str, str]]], dict[str, int]]:
    """Per call: (event id, type) in order of first arrival; and copies per event id."""
    order: dict[str, list[tuple[str, str]]] = defaultdict(list)
    counts: dict[str, int] = defaultdict(int)
    for q in receiver.requests:
        data = orjson.loads(q.body)["data"]
        counts[data["id"]] += 1
        key = data["payload"]["call_control_id"]
        if counts[data["id"]] == 1:
            order[key].append((data["id"], data["event_type"]))
    return order, counts


async def test_kill_9_serve_mid_flight_loses_nothing_and_keeps_order(
    tmp_path: Path, receivers: Callable[..., Awaitable[Receiver]]
) -> None:
    receiver = await receivers(Reply(delay=0.25))
    key = (await asyncio.to_thread(cli, "keys", "create", data_dir=tmp_path)).strip()
    env = {
        "CALLSTREAM_WEBHOOK_URL": receiver.url,
        "CALLSTREAM_WEBHOOK_RETRY_DELAYS": "[0.1, 0.2, 0.4]",
        "CALLSTREAM_WEBHOOK_RETRY_JITTER": "0",
    }
    server = ServerProcess(tmp_path, free_port(), free_udp_tcp_port(), key, env=env)
    await asyncio.to_thread(server.start)
    dead_sip = free_udp_tcp_port()
    try:
        async with httpx.AsyncClient(
            base_url=server.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=10
        ) as api:
            for n in range(CALLS):
                r = await api.post("/calls", json={
                    "connection_id": "default", "to": f"sip:nobody{n}@127.0.0.1:{dead_sip}",
                    "from": "+15550001111", "timeout_secs": 30,
                })
                assert r.status_code == 200, r.text
                if n % 2:  # half end now; the rest are alive at the kill (orphans)
                    ccid = r.json()["data"]["call_control_id"]
                    r = await api.post(f"/calls/{ccid}/actions/hangup", json={})
                    assert r.status_code == 200, r.text
        await until(lambda: len(receiver.requests) >= CALLS // 2 and receiver.in_flight > 0,
                    20)
    finally:
        await asyncio.to_thread(server.stop, signal.SIGKILL)
    assert server.proc is not None and server.proc.returncode == -signal.SIGKILL
    stored = await asyncio.to_thread(stored_events, tmp_path)
    stored_ids = {e["id"] for e in stored}
    delivered_before = {orjson.loads(q.body)["data"]["id"] for q in receiver.requests}
    assert len(stored_ids) > len(delivered_before), "nothing was left to deliver at the kill"

    await asyncio.to_thread(server.start)
    try:
        def all_arrived() -> bool:
            order, _ = arrivals(receiver)
            got = {eid for events in order.values() for eid, _ in events}
            kinds = [[t for _, t in events] for events in order.values()]
            return got >= stored_ids and len(order) == CALLS and all(
                k[-1:] == ["call.hangup"] for k in kinds)

        await until(all_arrived, 60)
    finally:
        await asyncio.to_thread(server.stop)

    order, counts = arrivals(receiver)
    assert len(order) == CALLS
    for call_id, events in order.items():
        # No gaps and no reordering: each call announced, then ended, exactly one each.
        assert [t for _, t in events] == ["call.initiated", "call.hangup"], (call_id, events)
    # Every event stored before the crash arrived (duplicates allowed: receivers dedupe
    # on data.id, and only deliveries in flight at the kill may repeat).
    delivered = set(counts)
    assert stored_ids <= delivered
    assert sum(n - 1 for n in counts.values()) <= receiver.max_in_flight
