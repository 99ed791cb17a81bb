"""SQLite runs on the event loop thread: no aiosqlite worker threads, same results."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy import select, text

from callstream.store import schema as t
from callstream.store.exceptions import StoreError
from callstream.store.inline_sqlite import InlineConnection
from callstream.store.records import Application
from callstream.store.sql import SqlStore


def _app(name: str) -> Application:
    return Application(id="default", application_name=name, webhook_event_url=None,
                       webhook_event_failover_url=None, webhook_timeout_secs=10,
                       active=True, created_at="2026-01-01T00:00:00Z",
                       updated_at="2026-01-01T00:00:00Z")


def test_store_uses_no_worker_thread_and_keeps_its_semantics(tmp_path: Path) -> None:
    async def main() -> None:
        threads = threading.active_count()
        store = SqlStore(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
        await store.open()
        try:
            await store.put_application(_app("one"))
            await store.put_application(_app("two"))  # the cached upsert updates
            got = await store.get_application("default")
            assert got is not None and got.application_name == "two"
            async with store.reading() as conn:
                raw = await conn.get_raw_connection()
                assert isinstance(raw.driver_connection, InlineConnection)
                rows = (await conn.execute(select(t.applications.c.id))).all()
                assert [r.id for r in rows] == ["default"]
            assert threading.active_count() == threads
            # A failed write rolls back and raises the store's error, as before.
            with pytest.raises(StoreError):
                async with store.writing() as conn:
                    await conn.execute(text("UPDATE applications SET application_name='x'"))
                    await conn.execute(text("INSERT INTO no_such_table VALUES (1)"))
            got = await store.get_application("default")
            assert got is not None and got.application_name == "two"
        finally:
            await store.close()

    asyncio.run(main())


def test_thread_mode_is_still_available(tmp_path: Path) -> None:
    async def main() -> None:
        store = SqlStore(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}", inline_sqlite=False)
        await store.open()
        try:
            await store.put_application(_app("one"))
            async with store.reading() as conn:
                raw = await conn.get_raw_connection()
                assert not isinstance(raw.driver_connection, InlineConnection)
        finally:
            await store.close()

    asyncio.run(main())


def test_wal_is_checkpointed_off_the_loop(tmp_path: Path) -> None:
    """Commits never checkpoint (no fsync on the loop); the Checkpointer empties the WAL."""

    async def main() -> None:
        db = tmp_path / "db.sqlite"
        store = SqlStore(f"sqlite+aiosqlite:///{db}")
        await store.open()
        try:
            checkpointer = store._checkpointer
            assert checkpointer is not None
            checkpointer.interval = 0.05
            async with store.reading() as conn:
                auto = (await conn.execute(text("PRAGMA wal_autocheckpoint"))).scalar()
            assert auto == 0
            for n in range(300):
                await store.put_application(_app(f"name-{n}" + "x" * 2000))
            wal = Path(f"{db}-wal")
            await asyncio.sleep(0.3)
            # Every frame is back in the database file: a reader without the WAL sees it.
            ro = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                _busy, frames, done = ro.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            finally:
                ro.close()
            assert wal.exists() and frames > 0 and done == frames  # noqa: ASYNC240
        finally:
            await store.close()

    asyncio.run(main())
