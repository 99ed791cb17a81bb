"""This node's part in the cluster: it keeps its liveness and its calls' leases alive,
routes commands for other nodes' calls, and ends the calls of nodes that died.

Failover: a node killed (SIGKILL, power loss) stops renewing; after at most
``call_lease_secs`` its node record and call leases expire. Every node, every
``failover_scan_secs``, asks Redis which nodes of the nodes set have no liveness record
(one script, whatever the number of calls), and reads the database only for such a
node: its live calls, by owner. For each, :meth:`Leases.take_over` lets exactly one node
win it, and the winner ends it like a restarted node ends its own orphans (one
``call.hangup``, ``hangup_cause`` ``unspecified``, ``hangup_source`` ``unknown``). A call
whose lease Redis lost is found all the same (its row names its owner). If Redis loses
the nodes set itself (restarted empty, flushed), a node finds itself missing from it at
its next renewal, and a lease time later (every live node has renewed by then) adds the
owners of every live call (and of every webhook lease) from the database again.

A dead node's webhook events are in the PostgreSQL outbox, where any node delivers
them; those it had leased for delivery (named
by its node id) are released by the same scan as soon as its liveness has expired, not
when the outbox lease runs out, and the next claim of any node takes them, each call's
in order. So an event the dead node had already sent may be sent twice: webhooks are
at least once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from callstream.calls.control import CallControl
from callstream.cluster.exceptions import RedisUnavailable
from callstream.cluster.leases import Leases
from callstream.metrics import FAILOVER_ENDED, FAILOVER_WEBHOOKS_RELEASED
from callstream.webhooks.worker import LEASE_SECS as WEBHOOK_LEASE_SECS
from callstream.webhooks.worker import WebhookWorker

log = logging.getLogger(__name__)

#: Renewals per lease time: two may be lost (a slow Redis, a long loop stall) before
#: the lease expires.
RENEWALS_PER_LEASE = 3


class ClusterNode:
    def __init__(self, redis: Redis, leases: Leases, calls: CallControl,
                 webhooks: WebhookWorker, lease_secs: float, scan_secs: float) -> None:
        self.redis = redis
        self.leases = leases
        self.calls = calls
        self.webhooks = webhooks
        self.renew_secs = lease_secs / RENEWALS_PER_LEASE
        self.scan_secs = scan_secs
        self._leased: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self.lease_secs = lease_secs
        # When to read the database's owners into the nodes set: a lease time after the
        # start (nodes that died while Redis was empty) or after Redis was found to have
        # lost the set. Not sooner: by then every live node has renewed its record, so
        # none is taken for dead because Redis forgot it.
        self._refill_at: float | None = time.monotonic() + lease_secs
        self._renewed = False

    @classmethod
    async def connect(cls, url: str, node_id: str, address: str, calls: CallControl,
                      webhooks: WebhookWorker, lease_secs: float,
                      scan_secs: float) -> ClusterNode:
        """Reach Redis and say this node is alive; raises :class:`RedisUnavailable`."""
        redis = Redis.from_url(url, socket_timeout=lease_secs / RENEWALS_PER_LEASE,
                               socket_connect_timeout=lease_secs)
        node = cls(redis, Leases(redis, node_id, address, lease_secs), calls, webhooks,
                   lease_secs, scan_secs)
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
        ended = self._leased - live
        missing = await self.leases.renew(live, ended)
        # Calls leased while the renewal was on its way stay in the set.
        self._leased = (self._leased - ended) | live
        if missing and self._renewed:
            log.warning("cluster: this node was missing from the nodes set in Redis "
                        "(Redis restarted empty or flushed, or this node could not renew "
                        "for a lease time): the next scan reads the nodes that own live "
                        "calls from the database in %.0f s", self.lease_secs)
            if self._refill_at is None:
                self._refill_at = time.monotonic() + self.lease_secs
        self._renewed = True

    async def lease_new(self, call_control_id: str) -> None:
        """Lease a call this node is creating, before it is stored and announced: a
        command for it that reaches another node finds its owner in one look-up. If
        Redis cannot take it now, the next renewal will (logged; the call goes on)."""
        try:
            await self.leases.lease(call_control_id)
        except (RedisError, OSError) as exc:
            log.warning("cluster: cannot lease new call %s in Redis (the next renewal "
                        "will): %s", call_control_id, exc)
            return
        self._leased.add(call_control_id)

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
            # Leased as it was created, unless Redis failed its owner then (the owner's
            # next renewal leases it): such a call is found by its row's owner.
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
        """Free the webhook leases and end the live calls of dead nodes (those this node
        wins); return how many calls. Nodes alive cost one Redis script, whatever their
        number of calls, and no database read."""
        if self._refill_at is not None and time.monotonic() >= self._refill_at:
            owners = set(await self.calls.store.live_call_owners())
            owners.update(await self.webhooks.outbox.lease_holders(0.0))
            owners.discard(self.leases.node_id)
            await self.leases.know(owners)
            self._refill_at = None
        ended = 0
        for node in await self.leases.dead_nodes():
            released = await self.release_webhooks(node)
            left, won = await self.take_over_calls(node)
            ended += won
            if not released and not left:
                # Nothing of it left to end or release: scans no longer look at it.
                await self.leases.forget(node)
        return ended

    async def release_webhooks(self, node: str) -> int:
        """Release the webhook events that ``node``, found dead, had leased for
        delivery, so that the next claim (of this node or another) sends them; return
        how many."""
        now = time.time()  # the outbox's leases are in Unix time (every node's clock)
        # A process of that node started since it was found dead says so in Redis first;
        # leases it takes from then on end later than these and stay its own. (The dead
        # node took or renewed its leases before it died, seconds before its liveness
        # expired: clocks a little apart still tell the two apart.)
        count = await self.webhooks.outbox.release_leases(
            node, ending_by=now + WEBHOOK_LEASE_SECS)
        if count:
            log.warning("cluster: node %s is gone (no liveness for %.0f s): released %d "
                        "webhook events it was delivering", node,
                        self.leases.lease_ms / 1000, count)
            FAILOVER_WEBHOOKS_RELEASED.inc(count)
            self.webhooks.wake()
        return count

    async def take_over_calls(self, node: str) -> tuple[int, int]:
        """End the live calls of ``node``, found dead, that this node wins; return how
        many it had alive and how many this node ended."""
        records = [rec for rec in await self.calls.store.list_calls(alive=True, owner=node)
                   if rec.call_control_id not in self.calls.calls]
        won = [rec for rec in records
               if await self.leases.take_over(rec.call_control_id, node)]
        if won:
            log.warning("cluster: node %s is gone (no liveness for %.0f s): ending %d of its "
                        "calls (call.hangup sent)", node, self.leases.lease_ms / 1000,
                        len(won))
            await self.calls.end_lost(won)
            FAILOVER_ENDED.inc(len(won))
        return len(records), len(won)
