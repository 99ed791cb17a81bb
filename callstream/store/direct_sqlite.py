"""The hot writes of an SQLite store, on a stdlib connection of their own (SQLite only).

Why: every call writes its row and its webhooks several times (each event is a commit),
and the delivery worker claims and settles them: about ten transactions per call. Through
SQLAlchemy's async engine a commit of a call row and its event costs ~590 µs (pool
checkout, the statement cache key, a greenlet hop per DB-API call, result metadata);
here ~150 µs (docs/benchmarks.md, "Store writes off SQLAlchemy").

The statements are still SQLAlchemy's: each is compiled once for SQLite, and only its
text and its fixed parameters are kept, so the SQL is the one the engine would run. Bind
processors are not applied: the ones these statements have (``Float`` → ``float()``,
``Boolean`` → ``int()``) are what SQLite's column affinity does with the value anyway.

Transactions run synchronously on the loop thread, as inline statements do
(store/inline_sqlite.py), inside the write lock that :meth:`SqlStore.writing` takes too:
an SQLAlchemy write of this process that spans an ``await`` holds SQLite's write lock
meanwhile, and a ``BEGIN IMMEDIATE`` here would otherwise wait for it on the very thread
it needs.

Another *process* holding the write lock (with ``--workers``, the workers and the
supervisor all write one file) is waited for on the loop thread. SQLite's own busy handler
sleeps 1, 2, 5, 10 … ms between tries, however soon the lock is free again, and another
process's transaction holds it for a few hundred µs: measured at 100 set-ups/s on two
workers, ``BEGIN`` p50 20 µs, but one in ten waited over 1 ms and one in a hundred ~10 ms,
each a stall of the whole loop. So :meth:`DirectSqlite.transaction` first tries ``BEGIN
IMMEDIATE`` with no busy handler, then again after short sleeps (:data:`RETRY_DELAYS`,
0.05 ms doubling, 3 ms in all), and only then leaves the wait to SQLite's handler, up to
:data:`BUSY_TIMEOUT` (docs/benchmarks.md, "The write lock, waited for in short steps").
Polling from the loop instead (``asyncio.sleep`` between tries) kept the loop free but
left the supervisor's claims losing the race: webhook latency p50 3 → 10 to 400 ms at the
same set-up rate, so it was not adopted.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter
from sqlalchemy.dialects import sqlite

__all__ = ["DirectSqlite", "Statement"]

#: A writer waits this long for another process's write lock (as the engine's connections).
BUSY_TIMEOUT = 30.0
_BUSY_PRAGMA = f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}"
#: Seconds slept before each next try of a ``BEGIN IMMEDIATE`` that found the write lock
#: taken, before SQLite's busy handler (which sleeps 1 ms, then 2, 5, 10 …) takes over.
RETRY_DELAYS = (0.00005, 0.0001, 0.0002, 0.0004, 0.0008, 0.0016)

LOCK_WAITS = Counter(
    "callstream_store_write_lock_waits_total",
    "Store transactions that found another process's SQLite write lock taken, by how "
    "they got it: after a short retry (3 ms at most) or through SQLite's busy handler",
    ["wait"],
)
_WAITED_SHORT = LOCK_WAITS.labels("short")
_WAITED_LONG = LOCK_WAITS.labels("long")

_DIALECT = sqlite.dialect(paramstyle="named")


@dataclass(frozen=True, slots=True)
class Statement:
    """One statement compiled for ``sqlite3``: its text and the parameters it fixes."""

    sql: str
    fixed: dict[str, Any]

    @classmethod
    def compile(cls, stmt: Any, column_keys: list[str] | None = None) -> Statement:
        """Compile a SQLAlchemy Core statement whose parameters are all named binds.

        ``column_keys`` picks an INSERT's columns (those of the rows it will be given).
        """
        compiled = stmt.compile(dialect=_DIALECT, column_keys=column_keys)
        if compiled.literal_execute_params or compiled.post_compile_params:
            raise ValueError("expanding parameters cannot be compiled once")
        named = {b.key for b in compiled.binds.values() if not b.unique}
        fixed = {k: v for k, v in compiled.params.items() if k not in named}
        return cls(str(compiled), fixed)

    def bind(self, params: dict[str, Any]) -> dict[str, Any]:
        return {**self.fixed, **params} if self.fixed else params


class DirectSqlite:
    """A stdlib connection for the store's hot transactions, in autocommit mode."""

    def __init__(self, database: str) -> None:
        # isolation_level=None: sqlite3 opens no transaction of its own; ours are explicit.
        self._conn = sqlite3.connect(
            database, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT
        )
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA synchronous=NORMAL")  # per connection, as the engine's
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.execute("PRAGMA wal_autocheckpoint=0")  # the Checkpointer's job

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``; any exception rolls it back and propagates.

        IMMEDIATE takes the write lock up front, so the transaction never has to upgrade
        a read lock (which fails at once with SQLITE_BUSY when another writer got in).
        """
        conn = self._conn
        self._begin(conn)
        try:
            yield conn
        except BaseException:
            conn.rollback()
            raise
        conn.execute("COMMIT")

    def _begin(self, conn: sqlite3.Connection) -> None:
        """``BEGIN IMMEDIATE``: tried at once, then after each of :data:`RETRY_DELAYS`,
        then with SQLite's busy handler (up to :data:`BUSY_TIMEOUT` more)."""
        conn.execute("PRAGMA busy_timeout=0")  # this try and the short ones fail at once
        try:
            for delay in (0.0, *RETRY_DELAYS):
                if delay:
                    time.sleep(delay)
                try:
                    conn.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError as exc:
                    if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:  # any BUSY_*
                        raise
                    continue
                if delay:
                    _WAITED_SHORT.inc()
                return
        finally:
            conn.execute(_BUSY_PRAGMA)  # reads and COMMIT keep SQLite's handler
        _WAITED_LONG.inc()
        conn.execute("BEGIN IMMEDIATE")

    def read(self, stmt: Statement, params: dict[str, Any]) -> list[sqlite3.Row]:
        """Rows of one SELECT, from the latest committed state (WAL readers never wait)."""
        return self._conn.execute(stmt.sql, stmt.bind(params)).fetchall()

    def close(self) -> None:
        self._conn.close()
