"""Persistence: one async interface, SQLite by default, PostgreSQL by URL."""

from __future__ import annotations

from callstream.store.base import Store
from callstream.store.sql import SqlStore

__all__ = ["SqlStore", "Store", "open_store"]


async def open_store(url: str) -> SqlStore:
    store = SqlStore(url)
    await store.open()
    return store
