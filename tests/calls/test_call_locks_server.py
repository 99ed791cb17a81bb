"""Actions on unknown call ids leave no lock behind in a real server (issue #11, item 13):
``callstream_call_locks`` on /metrics comes back to zero."""

from __future__ import annotations

import asyncio
import re

import httpx

from tests.helpers import ServerProcess

REQUESTS = 2000
AT_ONCE = 50


async def call_locks(api: httpx.AsyncClient) -> float:
    text = (await api.get("/metrics")).text
    found = re.search(r"^callstream_call_locks (\S+)$", text, re.MULTILINE)
    assert found, "callstream_call_locks is missing from /metrics"
    return float(found.group(1))


async def test_actions_on_unknown_ids_leave_no_lock(
    server: ServerProcess, silent_sip_port: int
) -> None:
    async with httpx.AsyncClient(
        base_url=server.base_url, headers={"Authorization": f"Bearer {server.api_key}"},
        timeout=30, limits=httpx.Limits(keepalive_expiry=1.0),  # under uvicorn's 5 s
    ) as api:
        # One live call (ringing a port nobody answers), so the table isn't trivially empty.
        r = await api.post("/v2/calls", json={
            "connection_id": "default", "from": "+15550001111", "timeout_secs": 60,
            "to": f"sip:nobody@127.0.0.1:{silent_sip_port}"})
        assert r.status_code == 200, r.text
        live = r.json()["data"]["call_control_id"]

        async def hangup(n: int) -> httpx.Response:
            return await api.post(f"/v2/calls/v3:{'u' * 200}{n}/actions/hangup", json={})

        for start in range(0, REQUESTS, AT_ONCE):
            replies = await asyncio.gather(*(hangup(n) for n in range(start, start + AT_ONCE)))
            for reply in replies:
                assert reply.status_code == 422, reply.text
                assert reply.json()["errors"][0]["code"] == "90015"
        assert await call_locks(api) == 0

        r = await api.post(f"/v2/calls/{live}/actions/hangup", json={})
        assert r.status_code == 200, r.text
        # The call's end (CANCEL, call.hangup) runs after the answer, under its lock.
        async with asyncio.timeout(20):
            while await call_locks(api) != 0:  # noqa: ASYNC110 - another process's state
                await asyncio.sleep(0.05)
