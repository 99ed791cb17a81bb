"""Store errors.

StoreError
 ├── StoreUnavailable   the database could not be opened or reached
 │    └── StoreInUse    another node serves this store (SQLite)
 └── SchemaTooNew       the database was written by a newer callstream
"""

from __future__ import annotations


class StoreError(Exception):
    """A persistence operation failed; the message names the operation."""


class StoreUnavailable(StoreError):
    """The database could not be opened or reached."""


class StoreInUse(StoreUnavailable):
    """Another live ``callstream serve`` holds this store's node lock."""


class SchemaTooNew(StoreError):
    """The database was migrated by a newer callstream."""
