"""Keys, applications and idempotency records survive a restart (real SQLite file)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from callstream.store.records import IdempotencyRecord
from callstream.store.sql import SqlStore
from tests.helpers import running_server


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

    async def records() -> IdempotencyRecord | None:
        store = SqlStore(f"sqlite+aiosqlite:///{data / 'callstream.db'}")
        await store.open()
        try:
            return await store.get_idempotency("", "never-used")
        finally:
            await store.close()

    assert asyncio.run(records()) is None
