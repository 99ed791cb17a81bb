"""This node's part in the cluster: it keeps its liveness and its calls' leases alive,
routes commands for other nodes' calls, and ends the calls of nodes that died.

Failover: a node killed (SIGKILL, power loss) stops renewing; after at most
``call_lease_secs`` its node record and call leases expire. Every node scans the store's
live calls every ``failover_scan_secs``; for each call of another node it does not see
alive, :meth:`Leases.take_over` lets exactly one node win it, and the winner ends it
like a restarted node ends its own orphans (one ``call.hangup``, ``hangup_cause``
``unspecified``, ``hangup_source`` ``unknown``). Its webhook events, like every event
in the PostgreSQL outbox, are delivered by any node once its delivery lease expires.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from callstream.calls.control import CallControl
from callstream.cluster.exceptions import RedisUnavailable
from callstream.cluster.leases import Leases
from callstream.metrics import FAILOVER_ENDED
from callstream.store.records import CallRecord

log = logging.getLogger(__name__)

#: Renewals per lease time: two may be lost (a slow Redis, a long loop stall) before
#: the lease expires.
RENEWALS_PER_LEASE = 3


class ClusterNode:
    def __init__(self, redis: Redis, leases: Leases, calls: CallControl,
                 lease_secs: float, scan_secs: float) -> None:
        self.redis = redis
        self.leases = leases
        self.calls = calls
        self.renew_secs = lease_secs / RENEWALS_PER_LEASE
        self.scan_secs = scan_secs
        self._leased: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    async def connect(cls, url: str, node_id: str, address: str, calls: CallControl,
                      lease_secs: float, scan_secs: float) -> ClusterNode:
        """Reach Redis and say this node is alive; raises :class:`RedisUnavailable`."""
        redis = Redis.from_url(url, socket_timeout=lease_secs / RENEWALS_PER_LEASE,
                               socket_connect_timeout=lease_secs)
        node = cls(redis, Leases(redis, node_id, address, lease_secs), calls, lease_secs,
                   scan_secs)
        try:
            await node.renew()
        except (RedisError, OSError) as exc:
            await redis.aclose()
            host = url.partition("@")[2] or url.partition("://")[2]
            raise RedisUnavailable(f"cannot reach Redis at {host.split('/')[0]}: {exc}") from exc
        return node

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._every(self.renew_secs, self.renew),
                                           name="cluster-renew"),
                       asyncio.create_task(self._every(self.scan_secs, self.scan),
                                           name="cluster-failover-scan")]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self.renew()  # drops the leases of the calls hung up since the last
            await self.leases.withdraw()
        except (RedisError, OSError) as exc:
            log.warning("cluster: could not withdraw this node from Redis: %s", exc)
        await self.redis.aclose()

    async def _every(self, period: float, job: Callable[[], Awaitable[object]]) -> None:
        while True:
            await asyncio.sleep(period)
            try:
                await job()
            except (RedisError, OSError) as exc:
                # Redis down: leases lapse and survivors may take this node's calls over
                # (docs/cluster.md); keep trying.
                log.warning("cluster: Redis: %s", exc)
            except Exception:  # a store error: the next period tries again
                log.exception("cluster: %s failed", getattr(job, "__name__", job))

    async def renew(self) -> None:
        live = set(self.calls.calls)
        await self.leases.renew(live, self._leased - live)
        self._leased = live

    async def route(self, call_control_id: str) -> str | None:
        """The address of the node a command for this call goes to, or ``None`` to
        answer it here (the call is ours, ended, unknown, its owner is dead, or Redis
        cannot say)."""
        if call_control_id in self.calls.calls:
            return None
        try:
            return await self._owner_address(call_control_id)
        except (RedisError, OSError) as exc:
            log.warning("cluster: cannot look up the owner of call %s in Redis: %s",
                        call_control_id, exc)
            return None

    async def _owner_address(self, call_control_id: str) -> str | None:
        owner = await self.leases.owner(call_control_id)
        if owner is None:
            # Leases are written on the next renewal: a call younger than that is
            # found by its row's owner.
            record = await self.calls.store.get_call(call_control_id)
            if record is None or not record.is_alive or not record.owner:
                return None
            if record.owner == self.leases.node_id:
                return None
            return await self.leases.address_of(record.owner)
        if owner.node_id == self.leases.node_id:
            return None
        return owner.address

    async def scan(self) -> int:
        """End the live calls of dead nodes that this node wins; return how many."""
        me = self.leases.node_id
        foreign: dict[str, list[CallRecord]] = defaultdict(list)
        for rec in await self.calls.store.list_calls(alive=True):
            if rec.owner and rec.owner != me and rec.call_control_id not in self.calls.calls:
                foreign[rec.owner].append(rec)
        ended = 0
        for owner, records in foreign.items():
            won = [rec for rec in records
                   if await self.leases.take_over(rec.call_control_id, owner)]
            if not won:
                continue
            log.warning("cluster: node %s is gone (no liveness for %.0f s): ending %d of its "
                        "calls (call.hangup sent)", owner, self.leases.lease_ms / 1000,
                        len(won))
            await self.calls.end_lost(won)
            FAILOVER_ENDED.inc(len(won))
            ended += len(won)
        return ended
