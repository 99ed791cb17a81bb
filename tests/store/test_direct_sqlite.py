"""The hot writes on their own stdlib connection write what the engine's statements write.

An SQLite store with inline statements (the default) commits changes and claims and settles
webhooks on :class:`DirectSqlite`; with ``inline_sqlite=False`` the same methods go through
SQLAlchemy's engine, as on PostgreSQL. The same operations on both must leave the same rows.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import bindparam, select

from callstream.store import schema as t
from callstream.store.direct_sqlite import Statement
from callstream.store.exceptions import CommandAlreadyDone, StoreError
from callstream.store.outbox import AttemptRecord, Outbox, Settlement
from callstream.store.records import (
    Application,
    CallRecord,
    CallResource,
    Change,
    IdempotencyRecord,
    OutboxEvent,
    OutboxStatus,
    Receipt,
)
from callstream.store.sql import SqlStore

URL = "http://127.0.0.1:9/hooks"
NOW = 1_800_000_000.0
APP = Application("app-1", "bot", URL, None, 7, True, "2027-01-15T08:00:00Z",
                  "2027-01-15T08:00:00Z", {"anchorsite_override": "Latency"})


def call(n: int, state: str = "parked", alive: bool = True) -> CallRecord:
    return CallRecord(f"v3:c{n}", f"leg{n}", f"s{n}", "conn", "incoming", "+1", "+2", state,
                      alive, "2027-01-15T08:00:00Z", "node", client_state="YQ==",
                      details={"n": n, "codec": "PCMU"})


def hook(n: int, key: str, url: str | None = URL) -> OutboxEvent:
    return OutboxEvent(f"e{n}", "call.initiated", key, {"data": {"n": n}}, url,
                       timeout_secs=7, call_control_id=key)


def answer(n: int, command: str) -> IdempotencyRecord:
    return IdempotencyRecord(f"v3:c{n}", command, Receipt(200, b'{"data":{"result":"ok"}}'),
                             "2027-01-15T08:00:01Z")


async def script(store: SqlStore) -> None:
    """Every hot write: calls, resources, events, answers, claims (with skips), verdicts."""
    ob = Outbox(store)
    await store.commit(Change(calls=[call(2), call(1)], events=[hook(1, "v3:c1"),
                                                                hook(2, "v3:c2")]))
    await store.commit(Change(
        calls=[call(1, "active")],
        resources=[CallResource("r1", "v3:c1", "stream", "started", {"url": "wss://x"},
                                "2027-01-15T08:00:02Z", "2027-01-15T08:00:02Z")],
        events=[hook(3, "v3:c1"), hook(4, "v3:c3", None)],
        idempotency=[answer(1, "cmd-1")],
    ))
    with pytest.raises(CommandAlreadyDone) as done:
        await store.commit(Change(calls=[call(1, "hangup", False)], events=[hook(5, "v3:c1")],
                                  idempotency=[answer(1, "cmd-1")]))
    assert done.value.stored.receipt.body == b'{"data":{"result":"ok"}}'
    skipped = await ob.claim("w", NOW, lease_secs=30, max_keys=10, max_events=10,
                             skip_urls=[""])
    assert [i.id for i in skipped] == ["e1", "e2", "e3"]
    settled = [
        Settlement(seq=skipped[0].seq, status=OutboxStatus.DELIVERED, attempts=1,
                   next_attempt_at=NOW, started_at=NOW, finished_at=NOW + 1,
                   delivered_at=NOW + 1, delivered_to=URL, last_status=200),
        Settlement(seq=skipped[1].seq, status=OutboxStatus.PENDING, attempts=1,
                   next_attempt_at=NOW + 5, started_at=NOW, last_status=500,
                   last_error="HTTP 500"),
    ]
    tried = [AttemptRecord("e1", 1, URL, "delivered", NOW, 12.5, 200),
             AttemptRecord("e2", 1, URL, "failed", NOW, 3.0, 500, error="HTTP 500",
                           response_body="no")]
    rest = await ob.settle_and_claim("w", NOW + 1, settled, tried, [skipped[2].seq],
                                     lease_secs=30, max_keys=10, max_events=10)
    assert [i.id for i in rest] == ["e3", "e4"]
    await ob.settle("w", NOW + 2, [], [], [i.seq for i in rest])


def rows(path: Path) -> dict[str, list[tuple[object, ...]]]:
    db = sqlite3.connect(path)
    try:
        return {table: db.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
                for table in ("calls", "call_resources", "idempotency", "webhook_outbox",
                              "webhook_attempts")}
    finally:
        db.close()


async def test_the_direct_path_writes_what_the_engine_writes(tmp_path: Path) -> None:
    written = {}
    for inline in (True, False):
        path = tmp_path / f"inline-{inline}.db"
        store = SqlStore(f"sqlite+aiosqlite:///{path}", clock=lambda: NOW,
                         inline_sqlite=inline)
        await store.open()
        try:
            assert (store.direct is not None) is inline
            await script(store)
            await store.put_application(APP)
            assert await store.get_application(APP.id) == APP
            assert await store.get_application("missing") is None
        finally:
            await store.close()
        written[inline] = rows(path)
    assert written[True]["webhook_attempts"]  # the script wrote every table
    assert written[True] == written[False]


async def test_a_direct_write_waits_for_an_engine_write_of_the_process(
    tmp_path: Path,
) -> None:
    """An engine transaction holds SQLite's write lock across awaits; a direct one queues
    behind it on the store's lock instead of waiting for SQLite's on the loop thread."""
    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path / 'db'}", clock=lambda: NOW)
    await store.open()
    try:
        order = []

        async def engine_write() -> None:
            async with store.writing() as conn:
                await conn.execute(t.calls.delete())
                order.append("engine begun")
                await asyncio.sleep(0.2)
            order.append("engine done")

        async def direct_write() -> None:
            await asyncio.sleep(0.05)
            await store.commit(Change(calls=[call(1)]))
            order.append("direct done")

        await asyncio.wait_for(asyncio.gather(engine_write(), direct_write()), 5)
        assert order == ["engine begun", "engine done", "direct done"]
        assert (await store.get_call("v3:c1")) == call(1)
    finally:
        await store.close()


async def test_a_failed_direct_write_rolls_back_and_says_why(tmp_path: Path) -> None:
    store = SqlStore(f"sqlite+aiosqlite:///{tmp_path / 'db'}", clock=lambda: NOW)
    await store.open()
    try:
        await store.commit(Change(events=[hook(1, "v3:c1")]))
        with pytest.raises(StoreError, match="write failed: UNIQUE constraint failed"):
            # the second event reuses the first's id: nothing of this change stays
            await store.commit(Change(calls=[call(7)], events=[hook(2, "k"), hook(1, "k")]))
        assert await store.get_call("v3:c7") is None
        await store.commit(Change(calls=[call(8)]))  # the connection is usable again
        assert await store.get_call("v3:c8") == call(8)
    finally:
        await store.close()


def test_a_statement_with_an_expanding_list_is_refused() -> None:
    listed = select(t.calls).where(t.calls.c.state.in_(bindparam("states", expanding=True)))
    with pytest.raises(ValueError, match="expanding"):
        Statement.compile(listed)
    fixed = Statement.compile(select(t.calls).where(t.calls.c.state == "parked"))
    assert fixed.fixed == {"state_1": "parked"}
    assert fixed.bind({"x": 1}) == {"state_1": "parked", "x": 1}
