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
supervisor all write one file) is waited for by SQLite's busy handler, on the loop
thread. Measured at 100 set-ups/s on two workers: ``BEGIN`` p50 20 µs, but one in ten
waits over 1 ms and one in a hundred ~10 ms. Polling for the lock from the loop instead
(``timeout=0`` and ``asyncio.sleep``) kept the loop free but left the supervisor's claims
losing the race: webhook latency p50 3 → 10 to 400 ms at the same set-up rate, so it was
not adopted.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy.dialects import sqlite

__all__ = ["DirectSqlite", "Statement"]

#: A writer waits this long for another process's write lock (as the engine's connections).
BUSY_TIMEOUT = 30.0

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
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.rollback()
            raise
        conn.execute("COMMIT")

    def read(self, stmt: Statement, params: dict[str, Any]) -> list[sqlite3.Row]:
        """Rows of one SELECT, from the latest committed state (WAL readers never wait)."""
        return self._conn.execute(stmt.sql, stmt.bind(params)).fetchall()

    def close(self) -> None:
        self._conn.close()
