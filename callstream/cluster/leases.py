"""What the nodes keep in Redis, and the atomic operations on it.

Keys (``PREFIX`` first, so one Redis can serve other things too):

* ``node:<node id>`` — the node is alive: a JSON object ``{"address": URL}`` (where other
  nodes send its calls' REST commands), expiring after the lease time unless renewed;
* ``call:<call_control_id>`` — the id of the node that owns the call (holds its SIP
  dialog and media), same expiry: written as the call is created, before its row is
  stored (:meth:`Leases.lease`), then renewed with the node's record;
* ``takeover:<call_control_id>`` — the survivor that ends a dead node's call: set once
  (``NX``) by the script that also checks both leases above are gone, so exactly one
  node ends each call;
* ``nodes`` — a set of the node ids that renewed: where the failover scan looks for dead
  nodes (one script per scan, whatever the number of calls). A node adds itself at each
  renewal and is removed, once dead, when nothing of it is left to end or release.

Renewal is one pipelined round trip per renewal period for the node and all its calls.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import orjson
from redis.asyncio import Redis

PREFIX = "callstream:"
#: The set of nodes that renewed (alive, or dead and not yet swept).
NODES_KEY = f"{PREFIX}nodes"
#: How long a takeover key is kept: far longer than any scan, so a call is never
#: ended twice; it only guards the moment the survivors race.
TAKEOVER_KEEP_SECS = 24 * 3600

# KEYS: call lease, takeover key. Returns [owner, node record] or [owner] or {}.
_OWNER = """
local owner = redis.call('GET', KEYS[1])
if not owner then return {} end
return {owner, redis.call('GET', ARGV[1] .. owner)}
"""
# KEYS: the nodes set; ARGV: node key prefix, me. Returns the ids of the set's other
# nodes whose liveness record has expired.
_DEAD_NODES = """
local dead = {}
for _, node in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if node ~= ARGV[2] and redis.call('EXISTS', ARGV[1] .. node) == 0 then
    dead[#dead + 1] = node
  end
end
return dead
"""
# KEYS: the nodes set, the node's key; ARGV: node id. Removes it only while it is dead.
_FORGET = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
return redis.call('SREM', KEYS[1], ARGV[1])
"""
# KEYS: call lease, owner's node key, takeover key; ARGV: me, keep secs.
_TAKE_OVER = """
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
if redis.call('SET', KEYS[3], ARGV[1], 'NX', 'EX', ARGV[2]) then return 1 end
return 0
"""


def node_key(node_id: str) -> str:
    return f"{PREFIX}node:{node_id}"


def call_key(call_control_id: str) -> str:
    return f"{PREFIX}call:{call_control_id}"


def takeover_key(call_control_id: str) -> str:
    return f"{PREFIX}takeover:{call_control_id}"


@dataclass(frozen=True, slots=True)
class Owner:
    """Who a call's lease names, and that node's address if it is alive."""

    node_id: str
    address: str | None


class Leases:
    """One node's view of the shared keys."""

    def __init__(self, redis: Redis, node_id: str, address: str, lease_secs: float) -> None:
        self.redis = redis
        self.node_id = node_id
        self.lease_ms = max(1, round(lease_secs * 1000))
        self._record = orjson.dumps({"address": address})
        self._owner = redis.register_script(_OWNER)
        self._take_over = redis.register_script(_TAKE_OVER)
        self._dead_nodes = redis.register_script(_DEAD_NODES)
        self._forget = redis.register_script(_FORGET)

    async def renew(self, calls: Iterable[str], ended: Iterable[str] = ()) -> bool:
        """Say this node and ``calls`` are alive for one more lease time; drop the
        leases of ``ended`` calls at once (their owner is no longer anybody). Return
        whether this node was missing from the nodes set (its first renewal, or Redis
        lost its keys, or survivors swept it while it could not renew)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(node_key(self.node_id), self._record, px=self.lease_ms)
        pipe.sadd(NODES_KEY, self.node_id)  # after the record: never swept as dead
        for call in calls:
            pipe.set(call_key(call), self.node_id, px=self.lease_ms)
        gone = [call_key(call) for call in ended]
        if gone:
            pipe.delete(*gone)
        return bool((await pipe.execute())[1])

    async def lease(self, call_control_id: str) -> None:
        """Say this node owns a call it is creating, for one lease time."""
        await self.redis.set(call_key(call_control_id), self.node_id, px=self.lease_ms)

    async def withdraw(self) -> None:
        """A clean stop: this node and its calls' leases are gone now, not at expiry."""
        await self.redis.delete(node_key(self.node_id))

    async def owner(self, call_control_id: str) -> Owner | None:
        """The node a call's lease names (one round trip), or ``None`` if no lease."""
        found = await self._owner(keys=[call_key(call_control_id)], args=[node_key("")])
        if not found:
            return None
        node_id = found[0].decode()
        address = orjson.loads(found[1])["address"] if len(found) > 1 and found[1] else None
        return Owner(node_id, address)

    async def dead_nodes(self) -> list[str]:
        """The other nodes of the nodes set whose liveness record has expired (one
        round trip)."""
        found = await self._dead_nodes(keys=[NODES_KEY], args=[node_key(""), self.node_id])
        return sorted(node.decode() for node in found)

    async def know(self, node_ids: Iterable[str]) -> None:
        """Add nodes found in the database to the nodes set (after Redis lost it)."""
        nodes = list(node_ids)
        if nodes:
            await self.redis.sadd(NODES_KEY, *nodes)

    async def forget(self, node_id: str) -> bool:
        """Remove a dead node from the nodes set, unless it is alive again."""
        return bool(await self._forget(keys=[NODES_KEY, node_key(node_id)], args=[node_id]))

    async def address_of(self, node_id: str) -> str | None:
        """A node's address, or ``None`` if its liveness record has expired."""
        record = await self.redis.get(node_key(node_id))
        return None if record is None else str(orjson.loads(record)["address"])

    async def claim(self, call_control_id: str) -> bool:
        """Whether this node may end its own call left alive by its last process: false
        if a survivor already took it over (:meth:`take_over` sets the same key)."""
        return bool(await self.redis.set(takeover_key(call_control_id), self.node_id,
                                          nx=True, ex=TAKEOVER_KEEP_SECS))

    async def take_over(self, call_control_id: str, owner: str) -> bool:
        """Whether this node is the one to end ``owner``'s call: true for exactly one
        caller, and only once the call's lease and ``owner``'s liveness have expired."""
        won = await self._take_over(
            keys=[call_key(call_control_id), node_key(owner), takeover_key(call_control_id)],
            args=[self.node_id, TAKEOVER_KEEP_SECS])
        return bool(won)
