"""One node per store: an exclusive lock on a file beside the SQLite database.

A starting node ends every call its store still has alive (they were left by a crash,
see :meth:`CallControl.close_orphans`). That is only right when no other live process
serves the same store, so ``callstream serve`` holds an ``flock`` on
``<database>.node-lock`` while it runs. The kernel drops the lock when the process
dies, ``kill -9`` included, so it needs no clean-up and no timeout. Databases that are
not a local SQLite file are not locked here: several nodes on one PostgreSQL need
owner leases (a later issue).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path

from sqlalchemy.engine import make_url

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
