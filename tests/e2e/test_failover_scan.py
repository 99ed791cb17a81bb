"""The failover scan of a real ``callstream serve`` node on a private PostgreSQL and Redis
reads no call rows while the other nodes live, however many calls they have, and still
ends a dead node's calls within the bound, each with exactly one ``call.hangup`` — those
whose lease Redis never had, and those of a node that died while Redis lost everything
(docs/cluster.md, "Failover: a node that dies").

The other nodes are the test's: call rows owned by ``node-x`` / ``node-y`` in the shared
database and their keys in Redis, written as a node's renewal writes them
(:class:`callstream.cluster.leases.Leases`). The call-row reads are PostgreSQL's own
count (``pg_stat_user_tables``: rows read by sequential and index scans of ``calls``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from callstream.calls.model import new_record
from callstream.calls.state import CallState
from callstream.cluster.leases import NODES_KEY, call_key, node_key
from callstream.store.records import CallRecord, Change
from callstream.store.sql import SqlStore
from tests.e2e.test_postgres import _owners
from tests.helpers import running_server
from tests.receiver import Receiver, webhook_receiver
from tests.store.postgres import PostgresServer

pytestmark = pytest.mark.slow

LEASE_SECS = 2.0
SCAN_SECS = 0.5
#: The live calls of the other (test-held) node, and how long the scans are watched:
#: a scan that read every live call would read CALLS rows WATCH_SECS / SCAN_SECS times.
CALLS = 200
WATCH_SECS = 6.0
#: The issue's bound on ending a dead node's calls (here lease 2 s + scan 0.5 s).
ENDED_WITHIN_SECS = 15.0
#: PostgreSQL publishes a backend's table counts within PGSTAT_IDLE_INTERVAL (10 s).
STATS_FLUSH_SECS = 11.0


@pytest.fixture
def hooks() -> Iterator[Receiver]:
    with webhook_receiver() as receiver:
        yield receiver


def _insert_calls(db: str, owner: str, count: int, hooks: Receiver) -> list[str]:
    records = [new_record(direction="incoming", connection_id="default", from_="+15550001",
                          to="+15550002", state=CallState.ANSWERED,
                          start_time="2026-01-01T00:00:00Z", owner=owner,
                          webhook_url=hooks.url) for _ in range(count)]

    async def insert(records: list[CallRecord]) -> None:
        store = SqlStore(db)
        await store.open()
        try:
            await store.commit(Change(calls=records))
        finally:
            await store.close()

    asyncio.run(insert(records))
    return [r.call_control_id for r in records]


def _alive(redis: Redis, node: str, calls: list[str]) -> None:
    """What a node's renewal writes: its record, its calls' leases, its place in the set
    (kept for a minute: the test decides when the node dies)."""
    pipe = redis.pipeline(transaction=False)
    pipe.set(node_key(node), b'{"address": "http://127.0.0.1:9"}', px=60_000)
    pipe.sadd(NODES_KEY, node)
    for call in calls:
        pipe.set(call_key(call), node, px=60_000)
    pipe.execute()


def _calls_rows_read(postgres: PostgresServer, db: str) -> int:
    name = db.rsplit("/", 1)[1]
    return int(postgres.psql(
        "SELECT seq_tup_read + coalesce(idx_tup_fetch, 0) FROM pg_stat_user_tables "
        "WHERE relname = 'calls'", database=name))


def _wait_hangups(hooks: Receiver, calls: list[str], started: float) -> float:
    """Seconds from ``started`` until every call of ``calls`` had its call.hangup."""
    wanted = set(calls)
    deadline = started + ENDED_WITHIN_SECS + 30  # a failure says how late, not "timeout"
    while time.monotonic() < deadline:
        hung_up = {d.payload.get("call_control_id") for d in hooks.events("call.hangup")}
        if wanted <= hung_up:
            return time.monotonic() - started
        time.sleep(0.05)
    missing = wanted - {d.payload.get("call_control_id") for d in hooks.events("call.hangup")}
    raise AssertionError(f"{len(missing)} calls of {len(wanted)} had no call.hangup")


def test_the_scan_reads_no_calls_of_live_nodes_and_ends_a_dead_nodes_calls_once(
    postgres: PostgresServer, redis_url: str, hooks: Receiver, tmp_path: Path
) -> None:
    db = postgres.new_database()
    redis = Redis.from_url(redis_url)
    env = {"CALLSTREAM_DATABASE_URL": db, "CALLSTREAM_REDIS_URL": redis_url,
           "CALLSTREAM_NODE_ID": "node-b", "CALLSTREAM_WEBHOOK_URL": hooks.url,
           "CALLSTREAM_CALL_LEASE_SECS": str(LEASE_SECS),
           "CALLSTREAM_FAILOVER_SCAN_SECS": str(SCAN_SECS)}
    try:
        with running_server(tmp_path / "b", env=env) as node_b:
            # Past node B's one read of the live calls' owners (a lease time after its
            # start), made while there were none: what B read so far is no call row,
            # published or not.
            time.sleep(LEASE_SECS + 2 * SCAN_SECS + 1.0)
            x_calls = _insert_calls(db, "node-x", CALLS, hooks)
            _alive(redis, "node-x", x_calls[: CALLS // 2])  # half never leased
            before = _calls_rows_read(postgres, db)
            time.sleep(WATCH_SECS)
            time.sleep(STATS_FLUSH_SECS)  # the last scans' counts published
            read = _calls_rows_read(postgres, db) - before
            scans = WATCH_SECS / SCAN_SECS
            print(f"\nnode B's scans read {read} call rows in {WATCH_SECS:g} s "
                  f"({scans:g} scans, {CALLS} live calls of node-x)")
            # Reading every live call per scan: 12 x 200 = 2,400 rows.
            assert read < CALLS, f"{read} call rows read while node-x lived"
            assert not hooks.events("call.hangup")

            # node-x dies: its record and leases go. B ends every call, once.
            redis.delete(node_key("node-x"), *(call_key(c) for c in x_calls))
            took = _wait_hangups(hooks, x_calls, time.monotonic())
            print(f"node-x's {CALLS} calls had their call.hangup {took:.2f} s after its "
                  f"liveness went")
            assert took < ENDED_WITHIN_SECS
            assert "node node-x is gone" in node_b.log()

            # Redis loses everything while node-y, with live calls, dies: B finds itself
            # missing from the nodes set, reads the owners from the database, ends them.
            y_calls = _insert_calls(db, "node-y", 10, hooks)
            _alive(redis, "node-y", y_calls)
            time.sleep(SCAN_SECS * 2)
            redis.flushall()
            took = _wait_hangups(hooks, y_calls, time.monotonic())
            print(f"node-y's calls, after Redis lost its keys: call.hangup {took:.2f} s after")
            assert took < ENDED_WITHIN_SECS
            assert "missing from the nodes set" in node_b.log()
            time.sleep(SCAN_SECS * 4)  # a second call.hangup would be sent by now
    finally:
        redis.close()

    owners = _owners(db)
    assert all(owners[c] == ("node-x", False) for c in x_calls)
    assert all(owners[c] == ("node-y", False) for c in y_calls)
    hangups = [d.payload for d in hooks.events("call.hangup")]
    assert sorted(h["call_control_id"] for h in hangups) == sorted(x_calls + y_calls)
    assert {(h["hangup_cause"], h["hangup_source"]) for h in hangups} == \
        {("unspecified", "unknown")}
