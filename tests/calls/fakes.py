"""A telephony that records what Call Control asks of it, for unit tests above media/.

:class:`FakeTelephony` implements :class:`callstream.calls.telephony.Telephony` the way
httpx's ``MockTransport`` stands in for the network: no SIP, no sockets; each command
is appended to ``sent``, and a test plays the far side by calling Call Control's report
methods (``leg_answered``, ``leg_ended``...) itself. ``give_media`` attaches a real
:class:`~callstream.media.hub.MediaHub` leg to a call, for feature managers to tap.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import select

from callstream.api.render import ApiReceipts
from callstream.calls.control import CallControl, CallParts
from callstream.calls.features import CallHooks, LegMedia
from callstream.calls.model import Call
from callstream.media.hub import MediaHub
from callstream.store import schema as t
from callstream.store.base import Store
from callstream.store.records import Application
from callstream.store.sql import SqlStore

NOW = 1_796_378_400.0  # 2026-12-04T10:00:00Z
NOW_ISO = "2026-12-04T10:00:00.000000Z"


@contextlib.asynccontextmanager
async def sqlite_store(folder: Path) -> AsyncIterator[SqlStore]:
    """A real SQLite store in ``folder`` with the ``default`` application."""
    store = SqlStore(f"sqlite+aiosqlite:///{folder / 'callstream.db'}")
    await store.open()
    await store.put_application(Application(
        id="default", application_name="default", webhook_event_url="http://127.0.0.1:9/h",
        webhook_event_failover_url=None, webhook_timeout_secs=7, active=True,
        created_at=NOW_ISO, updated_at=NOW_ISO))
    try:
        yield store
    finally:
        await store.close()


async def stored_events(store: SqlStore, call_control_id: str | None = None
                        ) -> list[tuple[str, dict[str, Any]]]:
    """(event_type, payload) of every stored webhook, in the order they were committed."""
    c = t.webhook_outbox.c
    query = select(c.event_type, c.data).order_by(c.seq)
    if call_control_id is not None:
        query = query.where(c.call_control_id == call_control_id)
    async with store.reading() as conn:
        rows = (await conn.execute(query)).all()
    return [(r.event_type, orjson.loads(r.data)["payload"]) for r in rows]


@dataclass(frozen=True, slots=True)
class Sent:
    """One command telephony received: its name, the call and the rest of its arguments."""

    command: str
    call_control_id: str
    args: tuple[Any, ...] = ()


class FakeTelephony:
    def __init__(self) -> None:
        self.sent: list[Sent] = []
        self.legs: dict[str, LegMedia] = {}
        #: Raised by the next dial(), to play a SIP failure.
        self.dial_error: Exception | None = None

    def commands(self) -> list[str]:
        return [s.command for s in self.sent]

    def give_media(self, call: Call, hub: MediaHub | None = None) -> LegMedia:
        """Open a leg for ``call`` on ``hub`` (a new one by default): its media from now."""
        hub = hub or MediaHub(call.id)
        hub.add_leg(call.id, 8000)
        media = LegMedia(hub, call.id, "PCMU", 8000, 0)
        self.legs[call.id] = media
        return media

    # -- the Telephony protocol -------------------------------------------------

    async def dial(self, call: Call, target_uri: str, *, from_uri: str,
                   display_name: str | None, headers: list[tuple[str, str]]) -> None:
        self.sent.append(Sent("dial", call.id, (target_uri, from_uri, display_name, headers)))
        if self.dial_error is not None:
            raise self.dial_error

    def answer(self, call: Call) -> None:
        self.sent.append(Sent("answer", call.id))

    def reject(self, call: Call, status: int, reason: str) -> None:
        self.sent.append(Sent("reject", call.id, (status, reason)))

    def hangup(self, call: Call, headers: list[tuple[str, str]]) -> None:
        self.sent.append(Sent("hangup", call.id, (headers,)))

    def bridge(self, a: Call, b: Call) -> None:
        self.sent.append(Sent("bridge", a.id, (b.id,)))

    def unbridge(self, call: Call) -> None:
        self.sent.append(Sent("unbridge", call.id))

    def media(self, call: Call) -> LegMedia:
        return self.legs[call.id]


def control_with(store: Store, telephony: FakeTelephony | None = None, *,
                 hooks: Sequence[Any] = (), trunk_uri: str | None = None,
                 clock: Any = lambda: NOW) -> CallControl:
    """Call Control over ``store`` driving ``telephony``; ``hooks`` are functions from the
    CallControl to a feature manager (as the composition root builds them)."""
    fake = telephony or FakeTelephony()

    def parts(calls: CallControl) -> CallParts:
        built: tuple[CallHooks, ...] = tuple(make(calls) for make in hooks)
        return CallParts(fake, built)

    return CallControl(store, parts, owner="test", receipts=ApiReceipts(),
                       trunk_uri=trunk_uri, clock=clock)
