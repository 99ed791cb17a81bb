"""Keys, applications and idempotency records survive a restart (real SQLite file)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from callstream.store.records import IdempotencyRecord
from callstream.store.sql import SqlStore
from tests.helpers import running_server, stored_events


def test_restart_keeps_keys_and_applications(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running_server(data) as srv:
        key = srv.api_key
        with srv.client() as c:
            r = c.post("/v2/call_control_applications", json={
                "application_name": "kept", "webhook_event_url": "https://example.com/k"})
            app_id = r.json()["data"]["id"]
        assert srv.stop() == 0, srv.log()
        srv.start()
        with srv.client(key) as c:
            r = c.get(f"/v2/call_control_applications/{app_id}")
            assert r.status_code == 200
            assert r.json()["data"]["application_name"] == "kept"
            # A dial (to a port nobody answers) with a command_id...
            dial = {"connection_id": "default", "to": "sip:x@127.0.0.1:9", "from": "+15550001111",
                    "command_id": "once"}
            first = c.post("/v2/calls", json=dial)
            assert first.status_code == 200, first.text
        assert srv.stop() == 0, srv.log()
        srv.start()
        with srv.client(key) as c:
            # ...is answered identically after a restart, and places no second call.
            again = c.post("/v2/calls", json=dial)
            assert again.content == first.content
            ccid = first.json()["data"]["call_control_id"]
            assert c.get(f"/v2/calls/{ccid}").json()["data"]["is_alive"] is False
        # Its call.hangup was still emitted: the call was orphaned by the restart.
        ended = [e for e in stored_events(data) if e["event_type"] == "call.hangup"]
        assert [e["payload"]["call_control_id"] for e in ended] == [ccid]

    async def record() -> IdempotencyRecord | None:
        store = SqlStore(f"sqlite+aiosqlite:///{data / 'callstream.db'}")
        await store.open()
        try:
            return await store.get_idempotency("", "once")
        finally:
            await store.close()

    stored = asyncio.run(record())
    assert stored is not None and stored.receipt.body == first.content
