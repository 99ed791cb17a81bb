"""Store errors.

StoreError
 ├── StoreUnavailable   the database could not be opened or reached
 │    └── StoreInUse    another process serves this store (SQLite) or node id (PostgreSQL)
 ├── SchemaTooNew       the database was written by a newer callstream
 └── CommandAlreadyDone a command_id's answer was stored first (by another node)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from callstream.store.records import IdempotencyRecord


class StoreError(Exception):
    """A persistence operation failed; the message names the operation."""


class StoreUnavailable(StoreError):
    """The database could not be opened or reached."""


class StoreInUse(StoreUnavailable):
    """Another live ``callstream serve`` holds this store's node lock."""


class SchemaTooNew(StoreError):
    """The database was migrated by a newer callstream."""


class CommandAlreadyDone(StoreError):
    """A change carried a command's answer, but that ``command_id`` already has one.

    The change was rolled back; ``stored`` is the first answer, the one to return.
    """

    def __init__(self, stored: IdempotencyRecord) -> None:
        super().__init__(
            f"command_id {stored.command_id!r} of {stored.call_control_id!r} was answered first"
        )
        self.stored = stored
