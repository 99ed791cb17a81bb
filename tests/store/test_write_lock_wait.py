"""A store transaction waits for another connection's write lock in short steps first.

With ``--workers`` several processes write one SQLite file. SQLite's own busy handler
sleeps 1 ms, then 2, 5, 10 … between tries; :class:`DirectSqlite` tries ``BEGIN
IMMEDIATE`` at once, then after 0.05 to 1.6 ms, and only then leaves it to that handler.
Here a second connection (another process, as far as SQLite can tell) holds the lock.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from callstream.store import direct_sqlite
from callstream.store.direct_sqlite import BUSY_TIMEOUT, RETRY_DELAYS, DirectSqlite


def waits(kind: str) -> float:
    value = REGISTRY.get_sample_value("callstream_store_write_lock_waits_total", {"wait": kind})
    return value or 0.0


@pytest.fixture
def database(tmp_path: Path) -> Iterator[tuple[DirectSqlite, sqlite3.Connection]]:
    path = str(tmp_path / "store.db")
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("PRAGMA journal_mode=WAL")
    other.execute("CREATE TABLE rows (n INTEGER)")
    direct = DirectSqlite(path)
    yield direct, other
    direct.close()
    other.close()


def busy_timeout(direct: DirectSqlite) -> int:
    with direct.transaction() as db:
        return int(db.execute("PRAGMA busy_timeout").fetchone()[0])


def rows(other: sqlite3.Connection) -> list[int]:
    return [n for (n,) in other.execute("SELECT n FROM rows ORDER BY n")]


def test_an_uncontended_transaction_waits_for_nothing(
    database: tuple[DirectSqlite, sqlite3.Connection],
) -> None:
    direct, other = database
    short, long = waits("short"), waits("long")
    with direct.transaction() as db:
        db.execute("INSERT INTO rows VALUES (1)")
    assert rows(other) == [1]
    assert (waits("short"), waits("long")) == (short, long)
    assert busy_timeout(direct) == int(BUSY_TIMEOUT * 1000)  # reads and COMMIT keep it


def test_a_lock_released_during_the_short_retries_is_taken_then(
    database: tuple[DirectSqlite, sqlite3.Connection], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The other connection commits during the first short sleep: the next try gets the
    lock, without SQLite's handler (whose first sleep alone is 1 ms)."""
    direct, other = database
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO rows VALUES (1)")
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        if not slept:
            other.execute("COMMIT")
        slept.append(seconds)

    monkeypatch.setattr(direct_sqlite.time, "sleep", sleep)
    short, long = waits("short"), waits("long")
    with direct.transaction() as db:
        db.execute("INSERT INTO rows VALUES (2)")
    assert slept == [RETRY_DELAYS[0]]
    assert rows(other) == [1, 2]
    assert (waits("short"), waits("long")) == (short + 1, long)
    monkeypatch.undo()
    assert busy_timeout(direct) == int(BUSY_TIMEOUT * 1000)


def test_a_lock_held_longer_is_waited_for_by_sqlites_handler(
    database: tuple[DirectSqlite, sqlite3.Connection],
) -> None:
    """Held 0.3 s, past every short retry (3.15 ms in all): SQLite's busy handler waits
    for it, and the transaction commits after the other one's."""
    direct, other = database
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO rows VALUES (1)")
    release = threading.Timer(0.3, lambda: other.execute("COMMIT"))
    short, long = waits("short"), waits("long")
    started = time.monotonic()
    release.start()
    try:
        with direct.transaction() as db:
            db.execute("INSERT INTO rows VALUES (2)")
    finally:
        release.join()
    assert time.monotonic() - started >= 0.3
    assert rows(other) == [1, 2]
    assert (waits("short"), waits("long")) == (short, long + 1)
    assert busy_timeout(direct) == int(BUSY_TIMEOUT * 1000)


def test_an_error_other_than_busy_is_raised_at_once(
    database: tuple[DirectSqlite, sqlite3.Connection], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A ``BEGIN`` that fails for another reason (here: a transaction already open on the
    connection) is not retried, and the busy handler is set back all the same."""
    direct, _ = database
    monkeypatch.setattr(direct_sqlite.time, "sleep", lambda _: pytest.fail("retried"))
    conn = direct._conn
    conn.execute("BEGIN")
    with pytest.raises(sqlite3.OperationalError, match="within a transaction"):
        direct._begin(conn)
    conn.execute("ROLLBACK")
    monkeypatch.undo()
    assert busy_timeout(direct) == int(BUSY_TIMEOUT * 1000)
