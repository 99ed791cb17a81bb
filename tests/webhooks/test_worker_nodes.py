"""Two nodes' delivery workers on one PostgreSQL outbox, sending to one real receiver:
every event arrives once, each call's in order, and both nodes deliver."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson
from prometheus_client import CollectorRegistry

from callstream.config import Settings
from callstream.store.sql import SqlStore
from callstream.webhooks.metrics import WebhookMetrics
from callstream.webhooks.retry import RetryPolicy
from callstream.webhooks.signing import WebhookSigner
from callstream.webhooks.worker import WebhookWorker
from tests.store.postgres import PostgresServer
from tests.webhooks.conftest import enqueue, event, wait_until
from tests.webhooks.receivers import Receiver, Reply

CALLS = 80  # more than one worker's lanes (32 with 8 connections), so both get calls
EVENTS_PER_CALL = 8


async def test_two_nodes_deliver_one_outbox_once_and_in_each_calls_order(
    postgres: PostgresServer, receivers: Callable[..., Awaitable[Receiver]],
    settings: Settings, signer: WebhookSigner,
) -> None:
    url = postgres.new_database()
    stores = [SqlStore(url), SqlStore(url)]
    workers: list[WebhookWorker] = []
    for store in stores:
        await store.open()
    try:
        r = await receivers(Reply(delay=0.002))
        for name, store in zip(("node-a", "node-b"), stores, strict=True):
            worker = WebhookWorker(
                store, settings, signer, WebhookMetrics(CollectorRegistry()),
                policy=RetryPolicy(delays=(0.05, 0.1), jitter=0.0, budget_secs=0.0),
                # A node polls as well as waking on its own commits: here only node A
                # commits, so node B finds work by polling.
                worker_id=name, poll_interval=0.05)
            await worker.start()
            workers.append(worker)
        keys = [f"call{k}" for _ in range(EVENTS_PER_CALL) for k in range(CALLS)]
        ids = await enqueue(stores[0], *(event(r.url, key) for key in keys))
        for worker in workers:  # both nodes claim at once, as after their own commits
            worker.wake()
        reqs = await r.wait_for(len(ids), within=120)
        got = [orjson.loads(q.body)["data"]["id"] for q in reqs]
        assert sorted(got) == sorted(ids)  # each exactly once
        for key in set(keys):
            expected = [i for i, k in zip(ids, keys, strict=True) if k == key]
            assert [i for i in got if i in set(expected)] == expected, f"{key} out of order"
        await wait_until(lambda: _all_settled(workers, len(ids)), within=30)
        delivered = [w.metrics.delivered._value.get() for w in workers]
        assert all(delivered), f"one node delivered nothing: {delivered}"
    finally:
        for worker in workers:
            await worker.stop(grace=1.0)
        for store in stores:
            await store.close()


async def _all_settled(workers: list[WebhookWorker], total: int) -> bool:
    return sum(w.metrics.delivered._value.get() for w in workers) == total
