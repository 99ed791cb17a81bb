"""One process per node: a file lock beside a SQLite database, a PostgreSQL advisory lock
on the node id for a shared database.

A starting node ends every call its store still has alive (they were left by a crash,
see :meth:`CallControl.close_orphans`). That is only right when no other live process
serves the same store, so ``callstream serve`` holds an ``flock`` on
``<database>.node-lock`` while it runs. The kernel drops the lock when the process
dies, ``kill -9`` included, so it needs no clean-up and no timeout.

Several nodes share a PostgreSQL database, each ending at start only the calls it owns
(its node id). Two live processes with one node id would end each other's calls, so the
node holds ``pg_advisory_lock`` on its id (:class:`NodeIdLock`) on a connection of its
own while it runs; PostgreSQL drops it when that connection closes, which a dead process's
kernel does at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from callstream.store.exceptions import StoreInUse

log = logging.getLogger(__name__)

SUFFIX = ".node-lock"


class NodeLock:
    def __init__(self, database: Path) -> None:
        self.database = database
        self.path = database.with_name(database.name + SUFFIX)
        self._fd: int | None = None

    @classmethod
    def for_database(cls, url: str) -> NodeLock | None:
        """The lock for a SQLite file database; ``None`` for any other database."""
        parsed = make_url(url)
        database = parsed.database
        if not parsed.drivername.startswith("sqlite") or not database or database == ":memory:":
            return None
        return cls(Path(database))

    def acquire(self) -> None:
        """Take the lock or fail at once.

        Raises:
            StoreInUse: another live process holds it (its pid is in the message).
        """
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StoreInUse(
                f"{self.database} is in use by another callstream "
                f"serve (pid {holder}); one store serves one node"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        log.debug("holding %s", self.path)

    def holder(self) -> int | None:
        """The pid of the live process holding the lock, or ``None`` when none does
        (``callstream drain`` finds its node this way, and sees it gone)."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = os.pread(fd, 32, 0).decode(errors="replace").strip()
                if not text.isdigit():
                    raise StoreInUse(f"{self.path} is locked but names no pid") from None
                return int(text)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


class NodeIdLock:
    """Held by the one live process of a node id on a shared PostgreSQL database."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        # Advisory lock keys are one bigint: the id's first 8 hash bytes, signed.
        digest = hashlib.blake2b(f"callstream-node:{node_id}".encode(), digest_size=8)
        self.key = int.from_bytes(digest.digest(), "big", signed=True)
        self._conn: AsyncConnection | None = None

    async def acquire(self, engine: AsyncEngine) -> None:
        """Take the lock or fail at once.

        Raises:
            StoreInUse: another live process runs as this node id.
        """
        conn = await engine.connect()
        try:
            taken = (await conn.execute(text("SELECT pg_try_advisory_lock(:key)"),
                                        {"key": self.key})).scalar()
            await conn.commit()  # the lock is the session's; end the autobegun transaction
        except BaseException:
            await conn.invalidate()  # its session may hold the lock: never back to the pool
            raise
        if not taken:
            await conn.close()
            raise StoreInUse(
                f"node id {self.node_id!r} is in use by another running callstream on this "
                "database; give each node its own CALLSTREAM_NODE_ID (docs/cluster.md)")
        self._conn = conn
        log.debug("holding node id %s", self.node_id)

    async def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):  # ending the session drops the lock
                await self._conn.invalidate()
                await self._conn.close()
            self._conn = None
