"""``kill -9`` a server with live calls, restart it on another SIP port (as a container
restart gets another hostname): every call it left alive ends with exactly one
``call.hangup`` (issue #11, item 5). And one store serves one node at a time."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx

from tests.helpers import ServerProcess, cli, free_port, free_udp_tcp_port, stored_events

CALLS = 6


async def hangups(data_dir: Path) -> Counter[str]:
    events = await asyncio.to_thread(stored_events, data_dir)
    return Counter(e["payload"]["call_control_id"] for e in events
                   if e["event_type"] == "call.hangup")


async def test_calls_alive_at_a_crash_end_once_after_a_restart_elsewhere(
    tmp_path: Path, silent_sip_port: int
) -> None:
    key = (await asyncio.to_thread(cli, "keys", "create", data_dir=tmp_path)).strip()
    first = ServerProcess(tmp_path, free_port(), free_udp_tcp_port(), key)
    await asyncio.to_thread(first.start)
    try:
        async with httpx.AsyncClient(
            base_url=first.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as api:
            ids = []
            for n in range(CALLS):
                r = await api.post("/calls", json={
                    "connection_id": "default", "to": f"sip:nobody{n}@127.0.0.1:{silent_sip_port}",
                    "from": "+15550001111", "timeout_secs": 120})
                assert r.status_code == 200, r.text
                ids.append(r.json()["data"]["call_control_id"])
            live = (await api.get("/calls")).json()["data"]
            assert {c["call_control_id"] for c in live} == set(ids)
    finally:
        await asyncio.to_thread(first.stop, signal.SIGKILL)
    assert await hangups(tmp_path) == Counter()

    # Another node identity: a new SIP port (the owner recorded on the rows changes).
    second = ServerProcess(tmp_path, free_port(), free_udp_tcp_port(), key)
    await asyncio.to_thread(second.start)
    try:
        async with httpx.AsyncClient(
            base_url=second.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as api:
            assert (await api.get("/calls")).json()["data"] == []
            for ccid in ids:
                status = (await api.get(f"/calls/{ccid}")).json()["data"]
                assert status["is_alive"] is False and status["state"] == "hangup", status
                r = await api.post(f"/calls/{ccid}/actions/hangup", json={})
                assert r.status_code == 422 and r.json()["errors"][0]["code"] == "90018"
    finally:
        assert await asyncio.to_thread(second.stop) == 0, second.log()
    assert await hangups(tmp_path) == Counter({ccid: 1 for ccid in ids})

    # Starting again sweeps nothing more.
    await asyncio.to_thread(second.start)
    assert await asyncio.to_thread(second.stop) == 0, second.log()
    assert await hangups(tmp_path) == Counter({ccid: 1 for ccid in ids})


async def test_a_second_server_on_the_same_store_refuses_to_start(tmp_path: Path) -> None:
    key = (await asyncio.to_thread(cli, "keys", "create", data_dir=tmp_path)).strip()
    first = ServerProcess(tmp_path, free_port(), free_udp_tcp_port(), key)
    await asyncio.to_thread(first.start)
    try:
        second = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "callstream", "serve", "--data-dir", str(tmp_path),
             "--http", f"127.0.0.1:{free_port()}", "--sip", f"127.0.0.1:{free_udp_tcp_port()}"],
            capture_output=True, text=True, timeout=60,
        )
        assert second.returncode != 0
        assert "is in use by another callstream serve" in second.stderr, second.stderr
        assert first.proc is not None and first.proc.poll() is None
    finally:
        assert await asyncio.to_thread(first.stop) == 0, first.log()
