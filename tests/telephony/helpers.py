"""Legs on the two-endpoints-on-a-fake-wire helper, and a fake Call Control."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from callstream.calls.locks import KeyedLocks
from callstream.calls.model import Call, new_record
from callstream.calls.state import CallEvent, CallState
from callstream.sip.endpoint import SipEndpoint
from tests.sip.helpers import UacUasPair

#: Seconds a test waits for a report.
REPORT_WAIT = 10.0


@dataclass
class WireSide:
    """One endpoint of a :class:`UacUasPair` as a leg's ``Signaling``: a command runs
    at the pair's clock and the wire is pumped when it ends."""

    pair: UacUasPair
    endpoint: SipEndpoint

    @contextlib.contextmanager
    def command(self) -> Iterator[float]:
        try:
            yield self.pair.now
        finally:
            self.pair.pump()


@dataclass
class FakeCallControl:
    """The domain side of ``TelephonyReports``: parks each call and records every report
    in order, as ``(kind, call_control_id, details)``."""

    reports: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    incoming: asyncio.Queue[Call] = field(default_factory=asyncio.Queue)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    refuse: bool = False
    locks: KeyedLocks = field(default_factory=KeyedLocks)

    async def incoming_call(
        self, *, from_: str, to: str, connection_id: str, details: dict[str, Any]
    ) -> Call | None:
        if self.refuse:
            return None
        record = new_record(direction="incoming", connection_id=connection_id, from_=from_,
                            to=to, state=CallState.PARKED, start_time="", owner="test",
                            details=details)
        call = Call(record=record, state=CallState.PARKED)
        self._report("incoming", call, {"from": from_, "to": to, **details})
        self.incoming.put_nowait(call)
        return call

    async def leg_answered(self, call: Call, media: dict[str, Any]) -> None:
        call.apply(CallEvent.ANSWERED)
        self._report("answered", call, media)

    async def leg_ended(self, call: Call, *, cause: str, source: str, sip_code: int | None,
                        quality: dict[str, Any] | None = None) -> None:
        self._report("ended", call, {"cause": cause, "source": source, "sip_code": sip_code,
                                     "quality": quality})

    async def leg_event(self, call: Call, event_type: str, extra: dict[str, Any]) -> None:
        self._report(event_type, call, extra)

    def lock(self, call_control_id: str) -> contextlib.AbstractAsyncContextManager[None]:
        return self.locks.hold(call_control_id)

    def _report(self, kind: str, call: Call, details: dict[str, Any]) -> None:
        self.reports.append((kind, call.id, details))
        self.changed.set()

    def kinds(self, call: Call) -> list[str]:
        return [kind for kind, ccid, _ in self.reports if ccid == call.id]

    async def wait_for(self, kind: str) -> dict[str, Any]:
        """The details of the first report of ``kind``, waiting for it (bounded)."""
        async with asyncio.timeout(REPORT_WAIT):
            while True:
                for got, _, details in self.reports:
                    if got == kind:
                        return details
                self.changed.clear()
                await self.changed.wait()
