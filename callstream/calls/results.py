"""What a call command returns, and how its answer is kept for ``command_id`` repeats.

A command ends in a :data:`CommandResult` (or raises a
:class:`~callstream.calls.exceptions.CommandError`). Its answer must be stored in the
same transaction as the change it made, so that a repeat of its ``command_id`` — even
after a restart — gets the very same bytes; but how a result reads on the wire is the
API's business. So Call Control is given a :class:`Receipts` (``api/receipts.py``
renders results as the API answers them), stores what it returns, and returns the
stored :class:`~callstream.store.records.Receipt` unread: freshly made, or the first
one for a repeat.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from callstream.store.records import CallRecord, Receipt


@dataclass(frozen=True, slots=True)
class Done:
    """An action ran (answer, hangup, streaming_start...)."""


@dataclass(frozen=True, slots=True)
class Dialled:
    """A dial was accepted: the call as it was stored with its ``call.initiated``."""

    call: CallRecord


CommandResult = Done | Dialled


class Receipts(Protocol):
    def receipt(self, result: CommandResult) -> Receipt:
        """The answer for ``result``, as a repeat of its command will get it."""
        ...
