"""The lease and takeover operations against a real redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from callstream.cluster.leases import NODES_KEY, Leases, Owner, call_key, node_key

LEASE = 0.3  # seconds: short, so expiry is seen quickly


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


def _node(redis: Redis, name: str, lease: float = LEASE) -> Leases:
    return Leases(redis, name, f"http://{name}.example:8080", lease)


async def test_owner_names_the_node_and_its_address(redis: Redis) -> None:
    a = _node(redis, "a")
    await a.renew(["c1", "c2"])
    assert await a.owner("c1") == Owner("a", "http://a.example:8080")
    assert await a.owner("nope") is None
    assert await a.address_of("a") == "http://a.example:8080"
    assert await redis.pttl(call_key("c1")) <= 300


async def test_ended_calls_lose_their_lease_at_once(redis: Redis) -> None:
    a = _node(redis, "a", lease=30)
    await a.renew(["c1", "c2"])
    await a.renew(["c2"], ended=["c1"])
    assert await a.owner("c1") is None
    assert await a.owner("c2") == Owner("a", "http://a.example:8080")


async def test_leases_expire_unless_renewed(redis: Redis) -> None:
    a = _node(redis, "a")
    await a.renew(["c1"])
    for _ in range(4):  # renewed at a third of the lease, it stays
        await asyncio.sleep(LEASE / 3)
        await a.renew(["c1"])
    assert await a.owner("c1") is not None
    await asyncio.sleep(LEASE + 0.1)
    assert await a.owner("c1") is None
    assert await a.address_of("a") is None


async def test_a_live_call_or_node_is_never_taken_over(redis: Redis) -> None:
    a, b = _node(redis, "a", lease=30), _node(redis, "b")
    await a.renew(["c1"])
    assert not await b.take_over("c1", "a")
    await redis.delete(call_key("c1"))  # the lease gone, the node still alive
    assert not await b.take_over("c1", "a")
    await a.renew(["c1"])
    await redis.delete(node_key("a"))  # the node record gone, the lease still there
    assert not await b.take_over("c1", "a")


async def test_exactly_one_survivor_wins_each_call(redis: Redis, redis_url: str) -> None:
    dead = _node(redis, "dead")
    calls = [f"c{i}" for i in range(50)]
    await dead.renew(calls)
    clients = [Redis.from_url(redis_url) for _ in range(4)]  # one per survivor node
    try:
        survivors = [_node(client, f"s{i}") for i, client in enumerate(clients)]
        await asyncio.sleep(LEASE + 0.1)

        async def scan(node: Leases) -> list[str]:
            return [c for c in calls if await node.take_over(c, "dead")]

        won = await asyncio.gather(*(scan(s) for s in survivors))
        assert sorted(c for w in won for c in w) == sorted(calls)
        # And not again, later, by anyone.
        assert not any([await s.take_over("c0", "dead") for s in survivors])
    finally:
        for client in clients:
            await client.aclose()


async def test_a_clean_stop_withdraws_the_node_at_once(redis: Redis) -> None:
    a = _node(redis, "a", lease=30)
    await a.renew([])
    await a.withdraw()
    assert await a.address_of("a") is None


async def test_a_restarted_owner_and_a_survivor_never_both_end_a_call(redis: Redis) -> None:
    dead = _node(redis, "a")
    await dead.renew(["c1", "c2"])
    survivor = _node(redis, "b")
    await asyncio.sleep(LEASE + 0.1)
    assert await survivor.take_over("c1", "a")
    restarted = _node(redis, "a")
    assert not await restarted.claim("c1")  # the survivor ended it already
    assert await restarted.claim("c2")  # its own to end
    assert not await survivor.take_over("c2", "a")


async def test_the_nodes_set_names_the_dead_and_keeps_a_node_that_lives(redis: Redis) -> None:
    a, b, c = _node(redis, "a", lease=30), _node(redis, "b", lease=30), _node(redis, "c")
    assert await a.renew([]) is True  # first renewal: a joins the set
    assert await a.renew([]) is False
    await b.renew([])
    await c.renew([])
    assert await a.dead_nodes() == []
    await asyncio.sleep(LEASE + 0.1)  # c's record expired
    assert await a.dead_nodes() == ["c"]
    assert await b.forget("a") is False  # a is alive: it stays
    assert await a.forget("c") is True
    assert await redis.smembers(NODES_KEY) == {b"a", b"b"}
    # Redis lost everything: a finds itself missing; nodes found in the database come back.
    await redis.flushall()
    assert await a.renew([]) is True
    await a.know(["b", "c"])
    assert await a.dead_nodes() == ["b", "c"]  # (b renews within a lease time)
