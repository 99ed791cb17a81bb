"""aiosqlite's connection API, run inline on the event loop thread (SQLite only).

Why: aiosqlite sends every DB-API call (cursor, execute, fetch, close, commit,
rollback) to its own thread and back. A small store transaction is 8 to 13 such
round trips, and each one waits for the event loop to come round again. While the
loop is busy with RTP and SIP (under load, a few ms per iteration), one
``call.initiated`` took tens of ms to store, and the switch, which handles SIP events
one at a time, could set up only ~50 calls/s (docs/benchmarks.md, "SIP load").

The statements themselves are short: SQLite in WAL mode with ``synchronous=NORMAL``
commits without an fsync (only checkpoints sync), so running them on the loop thread
costs tens of µs each, less than one hop to a thread and back.

Checkpoints are the one slow part (they fsync): SQLite would run one inside the commit
that fills the WAL past 1,000 pages, a 4 to 5 ms stall on the loop every few hundred
commits. Inline connections turn automatic checkpoints off, and :class:`Checkpointer`
runs a PASSIVE checkpoint every second on its own connection in a worker thread
(PASSIVE never blocks writers or readers).

The cost: a statement blocks the loop while it runs. That is safe because every write
goes through :meth:`SqlStore.writing`'s lock, so two writers of this process never
wait on each other's SQLite lock; WAL readers never wait for writers. Another
*process* holding the write lock (the CLI writing a key) makes a write here wait, on
the loop, for at most the busy timeout; such transactions take milliseconds.
PostgreSQL is unaffected (asyncpg is asynchronous already).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable
from functools import partial
from typing import Any

import aiosqlite

log = logging.getLogger(__name__)

__all__ = ["CHECKPOINT_INTERVAL", "Checkpointer", "InlineConnection", "connect_inline"]

#: How often the WAL is copied back into the database file, off the loop thread.
CHECKPOINT_INTERVAL = 1.0


class _InlineQueue:
    """Stands in for aiosqlite's queue to its thread: runs the function at once.

    SQLAlchemy's aiosqlite adapter puts ``(future, function)`` here directly to set
    the isolation level.
    """

    def put_nowait(self, item: tuple[Any, Callable[[], Any]]) -> None:
        future, function = item
        try:
            result = function()
        except BaseException as exc:  # handed to the awaiting caller
            if future is not None and not future.done():
                future.set_exception(exc)
            return
        if future is not None and not future.done():
            future.set_result(result)


class InlineConnection(aiosqlite.Connection):
    """An ``aiosqlite.Connection`` whose calls run on the caller's thread; no worker thread."""

    def __init__(self, connector: Callable[[], sqlite3.Connection], iter_chunk_size: int = 64):
        super().__init__(connector, iter_chunk_size)  # makes, never starts, a Thread
        self._tx = _InlineQueue()  # type: ignore[assignment]

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self._running or not self._connection:
            raise ValueError("Connection closed")
        return fn(*args, **kwargs)

    async def _connect(self) -> InlineConnection:
        if self._connection is None:
            self._connection = self._connector()
        return self

    def __await__(self) -> Any:
        return self._connect().__await__()

    def stop(self) -> None:
        self._running = False
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    async def close(self) -> None:
        self.stop()


def connect_inline(database: str, **kwargs: Any) -> InlineConnection:
    """Like ``aiosqlite.connect``: ``kwargs`` go to ``sqlite3.connect``."""
    return InlineConnection(partial(sqlite3.connect, database, check_same_thread=False, **kwargs))


class Checkpointer:
    """Checkpoints a WAL database from a worker thread every ``interval`` seconds."""

    def __init__(self, database: str, interval: float = CHECKPOINT_INTERVAL) -> None:
        self.database = database
        self.interval = interval
        self._conn: sqlite3.Connection | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="wal-checkpoint")

    async def stop(self) -> None:
        """Stop, after one last checkpoint."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await asyncio.to_thread(self._checkpoint)
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await asyncio.to_thread(self._checkpoint)
            except sqlite3.Error as exc:  # retried next interval; the WAL only grows
                log.warning("WAL checkpoint failed: %s", exc)

    def _checkpoint(self) -> None:
        if self._conn is None:
            self._conn = sqlite3.connect(self.database, check_same_thread=False, timeout=5)
        self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
