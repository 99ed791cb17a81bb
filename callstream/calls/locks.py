"""Locks by key (a call id, a dial's command_id) that exist only while in use.

A table of ``asyncio.Lock`` per key that is never emptied grows with every key ever
asked for, including unknown call ids an API client makes up (issue #11: 20,000
actions on made-up ids kept 84 MB). Here an entry counts the tasks holding or waiting
for it, and the last one out removes it, so the table holds only keys in use and a
later user of the same key gets a fresh lock. Waiters still queue in order on the one
lock of their key.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


@dataclass(slots=True)
class _Entry:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0  # holding or waiting


class KeyedLocks:
    """``async with locks.hold(key):`` serializes the tasks that use the same key."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def __len__(self) -> int:
        """Keys held or waited for now."""
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            # Also on cancellation while waiting: the entry must not outlive its users.
            entry.users -= 1
            if entry.users == 0:
                del self._entries[key]
