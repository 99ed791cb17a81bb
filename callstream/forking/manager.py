"""``fork_start`` / ``fork_stop``: forks of a call's RTP to UDP destinations (spec §3.3, §3.4, §6).

Two modes:

* ``rx`` + ``tx``: the RTP the call receives goes to ``rx`` and the RTP it sends
  goes to ``tx``, each datagram byte for byte as it was on the wire.
* ``target`` (legacy): both directions to one address, each packet behind a
  24-byte STREP header (:mod:`callstream.forking.strep`) naming the direction and
  the ``call_leg_id``.

Both commands run through :meth:`CallControl.run_command`, so ``command_id``
idempotency, unknown and ended calls behave as for every other action, and
``call.fork.started`` / ``call.fork.stopped`` are stored in the command's own
transaction. A host name is resolved once, here, never per packet, and the address
is checked against the outbound policy (:mod:`callstream.outbound`). A call has at
most one fork; at hangup :meth:`RtpFork.detach` stops it and ``call.fork.stopped``
goes out before ``call.hangup``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from collections.abc import Callable

from callstream.calls.control import CallControl
from callstream.calls.events import call_event, call_payload
from callstream.calls.exceptions import (
    DestinationRefused,
    InvalidCommand,
    InvalidValue,
    MissingParameter,
    NotForked,
)
from callstream.calls.model import Call
from callstream.calls.requests import ForkStart, ForkStop
from callstream.forking.metrics import FORK_STATS
from callstream.forking.sender import ForkStats, PathSpec, RtpFork, SockAddr
from callstream.forking.strep import StrepDirection, StrepHeader, StrepLeg
from callstream.forking.target import ForkTarget, InvalidTarget, parse_target
from callstream.outbound.connect import resolve
from callstream.outbound.metrics import OUTBOUND_DENIED
from callstream.outbound.policy import DEFAULT_POLICY, OutboundDenied, OutboundPolicy
from callstream.store.records import Change, Receipt

__all__ = ["FEATURE_KEY", "RESOLVE_TIMEOUT_SECS", "ForkManager"]

log = logging.getLogger(__name__)

FEATURE_KEY = "fork"
#: How long fork_start waits for a host name to resolve.
RESOLVE_TIMEOUT_SECS = 5.0


class ForkManager:
    """Starts and stops forks; a CallHooks member (forks start only by command).

    Args:
        calls: Call Control, whose ``run_command`` runs both actions.
        stats: process totals for ``/metrics``.
        clock: Unix time for webhook timestamps.
        resolve_timeout: how long a host name may take to resolve.
        outbound: the addresses a fork may send to.
    """

    def __init__(self, calls: CallControl, *, stats: ForkStats = FORK_STATS,
                 clock: Callable[[], float] = time.time,
                 resolve_timeout: float = RESOLVE_TIMEOUT_SECS,
                 outbound: OutboundPolicy = DEFAULT_POLICY) -> None:
        self.calls = calls
        self.outbound = outbound
        self.stats = stats
        self._clock = clock
        self._resolve_timeout = resolve_timeout

    # CallHooks: dial and answer carry no fork parameters.
    async def before_dial(self, call: Call) -> None:
        return None

    async def answered(self, call: Call) -> None:
        return None

    async def start(self, call_control_id: str, req: ForkStart) -> Receipt:
        """Run ``fork_start`` (targets still strings: resolved here)."""
        targets = _targets(req)
        stream_type = req.stream_type or ("raw" if "target" in targets else "decrypted")

        async def action(call: Call, change: Change) -> None:
            media = self.calls.media(call, purpose="forked")
            if FEATURE_KEY in call.features:
                raise InvalidCommand("Call is already forked; stop the fork with fork_stop first.")
            resolved = {name: await self._resolve(name, target)
                        for name, target in targets.items()}
            paths = _paths(call, resolved)
            try:
                fork = RtpFork(media.hub, media.leg, paths, stream_type=stream_type,
                               stats=self.stats, call_control_id=call.id)
            except OSError as exc:
                name = next(iter(targets))
                raise InvalidValue(f"Cannot send to {targets[name]}: {exc}.",
                                   pointer=f"/{name}") from exc
            call.features[FEATURE_KEY] = fork
            change.events.append(call_event(
                call, "call.fork.started", call_payload(call, stream_type=stream_type),
                self._clock()))

        return await self.calls.run_command(call_control_id, req, action)

    async def stop(self, call_control_id: str, req: ForkStop) -> Receipt:
        """Run ``fork_stop``. Its ``stream_type`` is accepted but not matched: forks of
        either type carry the same bytes here (no SRTP), and the SDK's default
        (``raw``) differs from fork_start's (``decrypted``)."""

        async def action(call: Call, change: Change) -> None:
            fork = call.features.get(FEATURE_KEY)
            if not isinstance(fork, RtpFork):
                raise NotForked(f"Call {call.id} has no fork to stop.")
            del call.features[FEATURE_KEY]
            now = self._clock()
            for event_type, extra in fork.stop():
                change.events.append(call_event(call, event_type, call_payload(call, **extra),
                                                now))

        return await self.calls.run_command(call_control_id, req, action)

    async def _resolve(self, name: str, target: ForkTarget) -> tuple[int, SockAddr]:
        """One address for ``target``: the literal, or the first UDP result of DNS.

        Every address is checked against the outbound policy here; packets go to the
        checked address only, for the fork's life, so no later lookup can redirect them.
        """
        try:
            async with asyncio.timeout(self._resolve_timeout):
                found = await resolve(target.host, target.port, self.outbound,
                                      kind=socket.SOCK_DGRAM)
        except OutboundDenied as exc:
            OUTBOUND_DENIED.labels("request").inc()
            log.warning("fork %s %s refused: %s", name, target, exc)
            raise DestinationRefused(f"Refused destination: {exc}.",
                                     pointer=f"/{name}") from exc
        except (OSError, TimeoutError) as exc:
            reason = "timed out" if isinstance(exc, TimeoutError) else str(exc)
            raise InvalidValue(f"Cannot resolve host {target.host!r}: {reason}.",
                               pointer=f"/{name}") from exc
        return found[0].family, found[0].sockaddr


def _targets(req: ForkStart) -> dict[str, ForkTarget]:
    """The destinations by field name, or the error for a bad combination."""
    fields = {"target": req.target, "rx": req.rx, "tx": req.tx}
    given = {name: value for name, value in fields.items() if value}
    if "target" in given and ("rx" in given or "tx" in given):
        raise InvalidValue("Give either target or rx and tx, not both.", pointer="/target")
    if "target" not in given:
        for name in ("rx", "tx"):
            if name not in given:
                raise MissingParameter(
                    f"The '{name}' parameter is required (rx and tx, or target).",
                    pointer=f"/{name}")
    out = {}
    for name, value in given.items():
        try:
            out[name] = parse_target(value)
        except InvalidTarget as exc:  # the schema checks this too; keep the core honest
            raise InvalidValue(f"{name} {exc}.", pointer=f"/{name}") from exc
    return out


def _paths(call: Call, resolved: dict[str, tuple[int, SockAddr]]) -> list[PathSpec]:
    if "target" in resolved:
        family, address = resolved["target"]
        leg_id = uuid.UUID(call.record.call_leg_id)
        # A-leg: the call that came in; B-leg: one we placed (dial).
        leg = StrepLeg.A if call.record.direction == "incoming" else StrepLeg.B
        return [
            PathSpec(name, family, address,
                     StrepHeader(leg_id, direction, leg).serialize())
            for name, direction in (("rx", StrepDirection.INBOUND),
                                    ("tx", StrepDirection.OUTBOUND))
        ]
    return [PathSpec(name, *resolved[name]) for name in ("rx", "tx")]
