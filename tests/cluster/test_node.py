"""A node's failover scan frees the webhook leases of dead nodes only, and ends their
calls, with one Redis script and no database statement while every node is alive:
against a real redis-server and a real PostgreSQL store (docs/cluster.md, "Failover")."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from callstream.calls.model import new_record
from callstream.calls.state import CallState
from callstream.cluster.leases import NODES_KEY, Leases, call_key, node_key
from callstream.cluster.node import ClusterNode
from callstream.config import Settings
from callstream.store.outbox import Outbox
from callstream.store.records import CallRecord, Change
from callstream.store.sql import SqlStore
from callstream.webhooks.signing import WebhookSigner
from callstream.webhooks.worker import WebhookWorker
from tests.calls.fakes import NOW_ISO, control_with, sqlite_store
from tests.store.postgres import PostgresServer
from tests.webhooks.conftest import enqueue, event

URL = "http://127.0.0.1:9/hooks"
LEASE = 30.0  # Redis liveness: the test deletes the key instead of waiting


@pytest.fixture
async def store(postgres: PostgresServer) -> AsyncIterator[SqlStore]:
    s = SqlStore(postgres.new_database())
    await s.open()
    yield s
    await s.close()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


def _released_total() -> float:
    return REGISTRY.get_sample_value("callstream_failover_webhooks_released_total") or 0.0


class _Wakes:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


async def test_the_scan_releases_a_dead_nodes_webhook_leases_not_a_live_ones(
    store: SqlStore, redis: Redis, tmp_path: Path, caplog: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await enqueue(store, *(event(URL, "a-call") for _ in range(3)),
                  *(event(URL, "c-call") for _ in range(2)))
    now = time.time()
    a_held = await Outbox(store).claim("node-a", now, lease_secs=60, max_keys=1,
                                       max_events=10)
    c_held = await Outbox(store).claim("node-c", now, lease_secs=60, max_keys=1,
                                       max_events=10)
    assert len(a_held) == 3 and len(c_held) == 2
    for name in ("node-a", "node-c"):  # both alive
        await Leases(redis, name, f"http://{name}:8080", LEASE).renew([])
    webhooks = WebhookWorker(store, Settings(data_dir=tmp_path),
                             WebhookSigner(os.urandom(32)), worker_id="node-b")
    wakes = _Wakes()
    monkeypatch.setattr(webhooks, "wake", wakes)  # count the scan's wake-ups
    node = ClusterNode(redis, Leases(redis, "node-b", "http://node-b:8080", LEASE),
                       control_with(store), webhooks, LEASE, 1.0)
    before = _released_total()

    assert await node.scan() == 0  # nobody is dead
    assert await Outbox(store).lease_holders(time.time()) == ["node-a", "node-c"]
    await redis.delete(node_key("node-a"))  # node A's liveness expired
    assert await node.scan() == 0  # no calls: its webhooks only
    assert wakes.count == 1
    assert _released_total() - before == 3
    assert "node node-a is gone" in caplog.text and "released 3 webhook events" in caplog.text
    # A's events are free for any node's next claim, in order; C's stay C's.
    assert await Outbox(store).lease_holders(time.time()) == ["node-c"]
    taken = await Outbox(store).claim("node-b", time.time(), lease_secs=60, max_keys=4,
                                      max_events=10)
    assert [i.seq for i in taken] == [i.seq for i in a_held]
    # Nothing more of A's: it leaves the nodes set; B's own leases are never released.
    assert await node.scan() == 0
    assert await redis.smembers(NODES_KEY) == {b"node-c"}  # (B has not renewed here)
    assert await node.release_webhooks("node-c") == 2 and wakes.count == 2  # if it were dead
    assert _released_total() - before == 5


class _Statements:
    """Counts the store's transactions, reads and writes: each is at least a statement."""

    def __init__(self, store: SqlStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        for name in ("reading", "writing"):
            opened = getattr(store, name)

            def counted(*args: Any, _opened: Any = opened, **kwargs: Any) -> Any:
                self.count += 1
                return _opened(*args, **kwargs)

            monkeypatch.setattr(store, name, counted)


class _Sent:
    """The commands a Redis client sends (a pipeline's not counted: the scan has none)."""

    def __init__(self, redis: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
        self.commands: list[object] = []
        execute = redis.execute_command

        async def counted(*args: Any, **options: Any) -> Any:
            self.commands.append(args[0])
            return await execute(*args, **options)

        monkeypatch.setattr(redis, "execute_command", counted)


def _calls(owner: str, count: int) -> list[CallRecord]:
    return [new_record(direction="incoming", connection_id="default", from_="+15550001",
                       to="+15550002", state=CallState.ANSWERED, start_time=NOW_ISO,
                       owner=owner) for _ in range(count)]


async def test_the_scan_reads_nothing_of_live_nodes_and_a_dead_nodes_calls_by_owner(
    store: SqlStore, redis: Redis, redis_url: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a_calls, c_calls = _calls("node-a", 5), _calls("node-c", 7)
    await store.commit(Change(calls=a_calls + c_calls))
    a_ids = [r.call_control_id for r in a_calls]
    await Leases(redis, "node-a", "http://node-a:8080", LEASE).renew(a_ids[:3])  # 2 unleased
    await Leases(redis, "node-c", "http://node-c:8080", LEASE).renew(
        [r.call_control_id for r in c_calls])
    async with Redis.from_url(redis_url) as b_redis:  # node B's own client: counted
        webhooks = WebhookWorker(store, Settings(data_dir=tmp_path),
                                 WebhookSigner(os.urandom(32)), worker_id="node-b")
        node = ClusterNode(b_redis, Leases(b_redis, "node-b", "http://node-b:8080", LEASE),
                           control_with(store), webhooks, LEASE, 1.0)
        await node.renew()
        await node.leases.dead_nodes()  # the script loaded into Redis
        statements, sent = _Statements(store, monkeypatch), _Sent(b_redis, monkeypatch)

        # A and C alive: one Redis script, however many calls they have; no statement.
        for _ in range(3):
            assert await node.scan() == 0
        assert sent.commands == ["EVALSHA"] * 3
        assert statements.count == 0

        # A's liveness and leases expired: B reads A's calls (not C's) and ends each,
        # the two whose lease Redis never had too.
        await redis.delete(node_key("node-a"), *(call_key(c) for c in a_ids))
        listed: list[str | None] = []
        list_calls = store.list_calls

        async def by_owner(*, alive: bool | None = True,
                           owner: str | None = None) -> list[CallRecord]:
            listed.append(owner)
            return await list_calls(alive=alive, owner=owner)

        monkeypatch.setattr(store, "list_calls", by_owner)
        assert await node.scan() == 5
        assert listed == ["node-a"]
        assert {r.owner for r in await list_calls(alive=True)} == {"node-c"}
        # The next scan finds nothing of A's left and drops it from the nodes set; then
        # scans are back to one script and no statement.
        assert await node.scan() == 0
        assert b"node-a" not in await redis.smembers(NODES_KEY)
        sent.commands.clear()
        statements.count = 0
        assert await node.scan() == 0
        assert (sent.commands, statements.count) == (["EVALSHA"], 0)


async def test_a_dead_node_is_found_in_the_database_after_redis_lost_the_nodes_set(
    store: SqlStore, redis: Redis, tmp_path: Path,
) -> None:
    records = _calls("node-a", 3)
    await store.commit(Change(calls=records))
    await Leases(redis, "node-a", "http://node-a:8080", LEASE).renew(
        [r.call_control_id for r in records])
    webhooks = WebhookWorker(store, Settings(data_dir=tmp_path),
                             WebhookSigner(os.urandom(32)), worker_id="node-b")
    refill = 0.3  # the node's lease time: how long it waits before reading the database
    node = ClusterNode(redis, Leases(redis, "node-b", "http://node-b:8080", LEASE),
                       control_with(store), webhooks, refill, 1.0)
    await node.renew()
    await asyncio.sleep(refill)
    assert await node.scan() == 0  # the start's refill: node A is alive
    assert await redis.smembers(NODES_KEY) == {b"node-a", b"node-b"}

    await redis.flushall()  # Redis restarted empty; node A died meanwhile
    await node.renew()  # B finds itself missing from the set
    assert await node.scan() == 0  # not yet: live nodes get a lease time to renew
    await asyncio.sleep(refill)
    assert await node.scan() == 3
    assert await store.list_calls(alive=True) == []


async def test_a_new_call_is_leased_before_it_is_stored_and_found_in_one_look_up(
    redis: Redis, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Node B's own client: its commands are counted.
    async with sqlite_store(tmp_path) as store, Redis.from_url(redis_url) as b_redis:
        owner, other = control_with(store), control_with(store)
        webhooks = WebhookWorker(store, Settings(data_dir=tmp_path),
                                 WebhookSigner(os.urandom(32)), worker_id="node-a")
        a = ClusterNode(redis, Leases(redis, "node-a", "http://node-a:8080", LEASE),
                        owner, webhooks, LEASE, 1.0)
        b = ClusterNode(b_redis, Leases(b_redis, "node-b", "http://node-b:8080", LEASE),
                        other, webhooks, LEASE, 1.0)
        await a.renew()  # node A alive; its renewals are not running
        owner.lease_new = a.lease_new
        leased_at_commit: list[bytes | None] = []
        commit = store.commit

        async def leased_then_commit(change: Change) -> None:
            leased_at_commit.extend([await redis.get(call_key(r.call_control_id))
                                     for r in change.calls])
            await commit(change)

        monkeypatch.setattr(store, "commit", leased_then_commit)
        call = await owner.incoming_call(from_="+15550001111", to="+15550002222",
                                         connection_id="default", details={})
        assert call is not None
        assert leased_at_commit == [b"node-a"]  # leased when call.initiated was stored
        assert 0 < await redis.pttl(call_key(call.id)) <= LEASE * 1000

        # A command for it on node B: the owner's address in one Redis round trip (the
        # script that reads the lease and the owner's record), no database read.
        assert await b.leases.owner("v3:warm") is None  # the script loaded into Redis
        sent: list[object] = []
        execute = b.redis.execute_command

        async def counted(*args: Any, **options: Any) -> Any:
            sent.append(args[0])
            return await execute(*args, **options)

        async def no_read(call_control_id: str) -> None:
            raise AssertionError(f"the database was read for {call_control_id}")

        monkeypatch.setattr(b.redis, "execute_command", counted)
        monkeypatch.setattr(store, "get_call", no_read)
        assert await b.route(call.id) == "http://node-a:8080"
        assert sent == ["EVALSHA"]

        # Ended before A's next renewal: that renewal drops its lease.
        del owner.calls[call.id]
        await a.renew()
        assert await redis.exists(call_key(call.id)) == 0
