"""CallControl over a real SQLite store: its locks, and the start-up sweep of calls a
crash left alive."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from sqlalchemy import select

from callstream.calls.control import CallControl
from callstream.calls.exceptions import CallNotFound
from callstream.calls.model import new_record
from callstream.calls.state import CallState
from callstream.store import schema as t
from callstream.store.records import Application, Change
from callstream.store.sql import SqlStore

NOW = "2026-12-04T00:00:00.000000Z"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path / 'callstream.db'}")
    await store.open()
    await store.put_application(Application(
        id="default", application_name="default", webhook_event_url="http://127.0.0.1:9/h",
        webhook_event_failover_url=None, webhook_timeout_secs=7, active=True,
        created_at=NOW, updated_at=NOW))
    try:
        yield store
    finally:
        await store.close()


async def test_commands_on_unknown_ids_leave_no_lock(store: SqlStore) -> None:
    control = CallControl(store, owner="test")
    for n in range(500):
        with pytest.raises(CallNotFound):
            await control.hangup(f"v3:{'x' * 200}{n}", {})
    assert len(control.call_locks) == 0


async def test_a_command_waits_for_the_call_lock(store: SqlStore) -> None:
    control = CallControl(store, owner="test")
    async with control.lock("v3:busy"):
        command = asyncio.create_task(control.hangup("v3:busy", {}))
        await asyncio.sleep(0.05)
        assert not command.done()
        assert len(control.call_locks) == 1
    with pytest.raises(CallNotFound):
        await command
    assert len(control.call_locks) == 0


async def _hangups(store: SqlStore) -> list[dict[str, object]]:
    async with store.reading() as conn:
        rows = (await conn.execute(
            select(t.webhook_outbox.c.data, t.webhook_outbox.c.timeout_secs)
            .where(t.webhook_outbox.c.event_type == "call.hangup"))).all()
    return [{**orjson.loads(r.data), "timeout_secs": r.timeout_secs} for r in rows]


async def test_every_call_alive_at_start_ends_once_whoever_owned_it(store: SqlStore) -> None:
    records = [
        new_record(direction="outgoing", connection_id="default", from_="+15550001111",
                   to=f"sip:n{n}@127.0.0.1:9", state=CallState.BRIDGING, start_time=NOW,
                   owner=owner)
        for n, owner in enumerate(["host-a:127.0.0.1:5060", "host-b:127.0.0.1:5070",
                                   "container-1f2e:0.0.0.0:5060"])
    ]
    await store.commit(Change(calls=records))
    control = CallControl(store, owner="host-c:127.0.0.1:5080")

    assert await control.close_orphans() == 3
    assert await store.list_calls(alive=True) == []
    hangups = await _hangups(store)
    assert sorted(h["payload"]["call_control_id"] for h in hangups) == sorted(  # type: ignore[index]
        r.call_control_id for r in records)
    assert {h["timeout_secs"] for h in hangups} == {7.0}
    for rec in records:
        ended = await store.get_call(rec.call_control_id)
        assert ended is not None and not ended.is_alive and ended.state == "hangup"
        assert ended.hangup_source == "unknown" and ended.end_time

    # A second sweep (a restart, or one after a crash midway) finds nothing more to end.
    assert await control.close_orphans() == 0
    assert len(await _hangups(store)) == 3
