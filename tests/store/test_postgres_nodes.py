"""Two nodes on one PostgreSQL database: two ``SqlStore`` instances, as two processes have.

The outbox is claimed by both at once (every row delivered exactly once, a call's events
in order, never one while an earlier one of its call is held by the other node);
a ``command_id`` answered on one node is the other's answer; migrations run from empty,
again, and by two nodes starting together.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select, text

from callstream.store import schema as t
from callstream.store.exceptions import CommandAlreadyDone, StoreInUse, StoreUnavailable
from callstream.store.migrations import LATEST_VERSION
from callstream.store.node_lock import NodeIdLock
from callstream.store.outbox import Outbox, Settlement
from callstream.store.records import Change, IdempotencyRecord, OutboxStatus, Receipt
from callstream.store.sql import SqlStore, engine_url
from tests.store.postgres import PostgresServer
from tests.webhooks.conftest import enqueue, event

URL = "http://127.0.0.1:9/hooks"
KEYS = 40
EVENTS_PER_KEY = 25
#: Claim bounds small enough that a node often holds only part of a call's backlog.
MAX_KEYS = 6
MAX_EVENTS = 10


@pytest.fixture
async def two_nodes(postgres: PostgresServer) -> AsyncIterator[tuple[SqlStore, SqlStore]]:
    url = postgres.new_database()
    a, b = SqlStore(url), SqlStore(url)
    await asyncio.gather(a.open(), b.open())  # both migrate the empty database at once
    yield a, b
    await a.close()
    await b.close()


def _delivered(seq: int, now: float) -> Settlement:
    return Settlement(seq=seq, status=OutboxStatus.DELIVERED, attempts=1, next_attempt_at=now,
                      started_at=now, finished_at=now, delivered_at=now, delivered_to=URL,
                      last_status=200)


async def test_two_nodes_claim_every_row_once_in_each_calls_order(
    two_nodes: tuple[SqlStore, SqlStore],
) -> None:
    a, b = two_nodes
    ids = await enqueue(a, *(event(URL, f"call{k}") for _ in range(EVENTS_PER_KEY)
                             for k in range(KEYS)))
    total = len(ids)
    sent: list[tuple[str, str, int]] = []  # (node, key, seq), in the order sent
    in_flight: dict[str, dict[int, str]] = {}  # key -> {seq sent, not yet settled: node}
    settled: set[int] = set()
    violations: list[str] = []

    async def node(name: str, store: SqlStore) -> int:
        outbox = Outbox(store)
        rng = random.Random(name)
        done = 0
        for _ in range(10_000):  # bounded: ends long before on success
            if len(settled) == total:
                return done
            items = await outbox.claim(name, time.time(), lease_secs=60,
                                       max_keys=MAX_KEYS, max_events=MAX_EVENTS)
            if not items:
                await asyncio.sleep(0.001)
                continue
            for item in items:  # a worker sends a key's rows one after another
                held = in_flight.setdefault(item.ordering_key, {})
                earlier = [s for s, by in held.items() if s < item.seq and by != name]
                if earlier:
                    violations.append(f"{name} sent {item.seq} of {item.ordering_key} while "
                                      f"{earlier} were in flight")
                held[item.seq] = name
                sent.append((name, item.ordering_key, item.seq))
                if rng.random() < 0.3:
                    await asyncio.sleep(0)  # let the other node claim meanwhile
            now = time.time()
            await outbox.settle(name, now, [_delivered(i.seq, now) for i in items], [])
            for item in items:
                del in_flight[item.ordering_key][item.seq]
                settled.add(item.seq)
            done += len(items)
        raise AssertionError(f"{name}: {len(settled)} of {total} settled")

    counts = await asyncio.wait_for(asyncio.gather(node("A", a), node("B", b)), 120)

    assert violations == []
    seqs = [seq for _, _, seq in sent]
    assert len(seqs) == total and len(set(seqs)) == total  # each row exactly once
    for k in range(KEYS):
        key_seqs = [seq for _, key, seq in sent if key == f"call{k}"]
        assert key_seqs == sorted(key_seqs), f"call{k} out of order"
    assert all(counts), f"one node delivered nothing: {counts}"
    assert await Outbox(a).count_pending() == 0


async def test_a_command_answered_on_one_node_is_the_answer_on_the_other(
    two_nodes: tuple[SqlStore, SqlStore],
) -> None:
    a, b = two_nodes
    first = IdempotencyRecord("", "dial-1", Receipt(200, b'{"first":true}'), "2026-01-01")
    second = IdempotencyRecord("", "dial-1", Receipt(200, b'{"second":true}'), "2026-01-01")
    await a.commit(Change(idempotency=[first], events=[event(URL, "x")]))
    with pytest.raises(CommandAlreadyDone) as raised:
        await b.commit(Change(idempotency=[second], events=[event(URL, "y")]))
    assert raised.value.stored.receipt == first.receipt
    assert (await b.get_idempotency("", "dial-1")) == first
    # The losing change was rolled back whole: its webhook was never stored.
    assert await Outbox(b).count_pending() == 1


async def test_the_same_command_on_two_nodes_at_once_stores_one_answer(
    two_nodes: tuple[SqlStore, SqlStore],
) -> None:
    a, b = two_nodes
    for n in range(20):
        recs = [IdempotencyRecord("v3:c", f"cmd-{n}", Receipt(200, node), "2026-01-01")
                for node in (b"A", b"B")]
        results = await asyncio.gather(
            a.commit(Change(idempotency=[recs[0]], events=[event(URL, f"k{n}")])),
            b.commit(Change(idempotency=[recs[1]], events=[event(URL, f"k{n}")])),
            return_exceptions=True,
        )
        losers = [r for r in results if isinstance(r, CommandAlreadyDone)]
        assert len(losers) == 1 and results.count(None) == 1, results
        stored = await a.get_idempotency("v3:c", f"cmd-{n}")
        assert stored is not None and losers[0].stored == stored
    assert await Outbox(a).count_pending() == 20


async def test_migrations_from_empty_and_again(postgres: PostgresServer) -> None:
    url = postgres.new_database()
    for _ in range(2):  # the second open finds the schema current and changes nothing
        store = SqlStore(url)
        await store.open()
        async with store.reading() as conn:
            version = (await conn.execute(select(t.schema_version.c.version))).scalar_one()
            rows = (await conn.execute(select(t.schema_version))).all()
            tables = set((await conn.execute(text(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))).scalars())
        await store.close()
        assert version == LATEST_VERSION and len(rows) == 1
        assert tables == {table.name for table in t.metadata.sorted_tables}


def test_postgresql_urls_mean_asyncpg() -> None:
    assert engine_url("postgresql://u@h/db") == "postgresql+asyncpg://u@h/db"
    assert engine_url("postgres://u@h:5433/db") == "postgresql+asyncpg://u@h:5433/db"
    assert engine_url("postgresql+asyncpg://u@h/db") == "postgresql+asyncpg://u@h/db"
    assert engine_url("sqlite+aiosqlite:///x.db") == "sqlite+aiosqlite:///x.db"
    with pytest.raises(Exception, match="psycopg2"):
        engine_url("postgresql+psycopg2://u@h/db")


async def test_an_unreachable_database_is_a_precise_error_without_the_password() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        store = SqlStore(f"postgresql://callstream:secret@127.0.0.1:{port}/none")
        with pytest.raises(StoreUnavailable, match=f"cannot open database .*:{port}/none") as e:
            await store.open()
    assert "secret" not in str(e.value)


async def test_one_node_id_runs_in_one_process_at_a_time(
    two_nodes: tuple[SqlStore, SqlStore],
) -> None:
    a, b = two_nodes
    first, same, other = NodeIdLock("node-a"), NodeIdLock("node-a"), NodeIdLock("node-b")
    await first.acquire(a.engine)
    with pytest.raises(StoreInUse, match="'node-a' is in use"):
        await same.acquire(b.engine)
    await other.acquire(b.engine)
    await first.release()  # as a process's exit does
    await same.acquire(b.engine)
    await same.release()
    await other.release()


async def test_a_dead_nodes_leased_events_are_delivered_by_the_other(
    two_nodes: tuple[SqlStore, SqlStore],
) -> None:
    """Node A leases a call's events and dies (never settles nor renews): once the lease
    runs out, node B claims them all, in order; before that, none (docs/cluster.md)."""
    a, b = two_nodes
    ids = await enqueue(a, *(event(URL, "orphan-call") for _ in range(3)))
    now = time.time()
    held = await Outbox(a).claim("A", now, lease_secs=30, max_keys=4, max_events=10)
    assert [i.seq for i in held] == sorted(i.seq for i in held) and len(held) == len(ids)
    assert await Outbox(b).claim("B", now + 29, lease_secs=30, max_keys=4, max_events=10) == []
    taken = await Outbox(b).claim("B", now + 31, lease_secs=30, max_keys=4, max_events=10)
    assert [i.seq for i in taken] == [i.seq for i in held]


async def test_a_dead_nodes_leases_released_are_claimed_at_once_in_order(
    two_nodes: tuple[SqlStore, SqlStore],
) -> None:
    """A survivor that finds node A dead releases A's leases (``ending_by``: those A had
    before it was found dead): node B claims the call's events at once, in order, without
    waiting out the lease. Leases ending later (a restarted A's) are kept."""
    a, b = two_nodes
    await enqueue(a, *(event(URL, "orphan-call") for _ in range(3)))
    await enqueue(a, event(URL, "restarted-call"))
    now = time.time()
    held = await Outbox(a).claim("A", now, lease_secs=60, max_keys=1, max_events=10)
    assert {i.ordering_key for i in held} == {"orphan-call"}
    survivor = Outbox(b)
    assert await survivor.lease_holders(now) == ["A"]
    found_dead = now + 1
    # A restarted after it was found dead: its new lease ends after found_dead + 60.
    again = await Outbox(a).claim("A", found_dead + 0.5, lease_secs=60, max_keys=1,
                                  max_events=10)
    assert {i.ordering_key for i in again} == {"restarted-call"}
    assert await survivor.claim("B", found_dead, lease_secs=60, max_keys=4,
                                max_events=10) == []
    assert await survivor.release_leases("B", ending_by=found_dead + 60) == 0
    assert await survivor.release_leases("A", ending_by=found_dead + 60) == len(held)
    taken = await survivor.claim("B", found_dead, lease_secs=60, max_keys=4, max_events=10)
    assert [i.seq for i in taken] == [i.seq for i in held]
    assert await survivor.lease_holders(found_dead) == ["A", "B"]
