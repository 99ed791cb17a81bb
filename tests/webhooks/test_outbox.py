"""Outbox queries on a real SQLite file: claiming heads, leases, settling, the log, purge."""

from __future__ import annotations

import time

from sqlalchemy import func, select

from callstream.store import schema as t
from callstream.store.outbox import AttemptRecord, DeliveryFilter, Outbox, Settlement
from callstream.store.records import OutboxStatus
from callstream.store.sql import SqlStore
from tests.webhooks.conftest import enqueue, event

URL = "http://127.0.0.1:9/hooks"


def delivered(seq: int, now: float) -> Settlement:
    return Settlement(seq=seq, status=OutboxStatus.DELIVERED, attempts=1, next_attempt_at=now,
                      started_at=now, finished_at=now, delivered_at=now, delivered_to=URL,
                      last_status=200)


async def test_claim_leases_each_due_call_in_order(store: SqlStore) -> None:
    ob = Outbox(store)
    ids = await enqueue(store, event(URL, "a"), event(URL, "b"), event(URL, "a"))
    items = await ob.claim("w1", time.time(), lease_secs=60, max_keys=10, max_events=10)
    assert [i.id for i in items] == ids
    assert await ob.claim("w2", time.time(), lease_secs=60, max_keys=10, max_events=10) == []


async def test_a_head_in_back_off_holds_its_call(store: SqlStore) -> None:
    ob = Outbox(store)
    a1, a2, b1 = await enqueue(store, event(URL, "a"), event(URL, "a"), event(URL, "b"))
    now = time.time()
    items = await ob.claim("w", now, lease_secs=60, max_keys=10, max_events=10)
    head = items[0]
    retry = Settlement(seq=head.seq, status=OutboxStatus.PENDING, attempts=1,
                       next_attempt_at=now + 100, started_at=now, last_status=500)
    await ob.settle("w", now, [retry], [], [i.seq for i in items[1:]])
    again = await ob.claim("w", now + 1, lease_secs=60, max_keys=10, max_events=10)
    assert [i.id for i in again] == [b1]  # a2 waits behind a1
    later = await ob.claim("w", now + 101, lease_secs=60, max_keys=10, max_events=10)
    assert [i.id for i in later] == [a1, a2, b1]  # b1's 60 s lease lapsed too


async def test_max_keys_and_expired_leases(store: SqlStore) -> None:
    ob = Outbox(store)
    await enqueue(store, *(event(URL, k) for k in "abc"))
    now = time.time()
    first = await ob.claim("w1", now, lease_secs=5, max_keys=2, max_events=10)
    assert [i.ordering_key for i in first] == ["a", "b"]
    second = await ob.claim("w2", now, lease_secs=5, max_keys=5, max_events=10)
    assert [i.ordering_key for i in second] == ["c"]
    expired = await ob.claim("w2", now + 6, lease_secs=5, max_keys=5, max_events=10)
    assert [i.ordering_key for i in expired] == ["a", "b", "c"]  # w2's lease lapsed too


async def test_a_claim_is_fair_between_urls(store: SqlStore) -> None:
    """Issue #11: one URL's older backlog cannot fill a claim; skipped URLs are left out."""
    ob = Outbox(store)
    other = "http://127.0.0.1:10/hooks"
    await enqueue(store, *(event(URL, f"busy{n}") for n in range(6)))
    await enqueue(store, event(other, "x"), event(None, "y"))  # None: the settings' URL
    now = time.time()
    items = await ob.claim("w", now, lease_secs=60, max_keys=4, max_events=10, per_url=2)
    assert [i.ordering_key for i in items] == ["busy0", "busy1", "x", "y"]
    await ob.settle("w", now, [], [], [i.seq for i in items])
    skipped = await ob.claim("w", now, lease_secs=60, max_keys=10, max_events=10,
                             skip_urls=[URL, ""])
    assert [i.ordering_key for i in skipped] == ["x"]


async def test_bulk_redeliver_requeues_failed_since(store: SqlStore) -> None:
    ob = Outbox(store)
    ids = await enqueue(store, *(event(URL, k) for k in "abc"))
    now = time.time()
    items = await ob.claim("w", now, lease_secs=60, max_keys=10, max_events=10)
    await ob.settle("w", now, [
        Settlement(seq=i.seq, status=OutboxStatus.FAILED, attempts=3, next_attempt_at=now,
                   started_at=now - 5, finished_at=now - 1 + n, last_error="HTTP 500")
        for n, i in enumerate(items)], [])
    assert await ob.redeliver_failed(now, now + 10, limit=10) == 2  # b and c failed since
    assert await ob.redeliver_failed(now - 10, now + 10, limit=10) == 1  # then a
    record = await ob.get_delivery(ids[0])
    assert record is not None and record.status is OutboxStatus.PENDING
    assert record.started_at is None  # a fresh round: a fresh retry budget


async def test_only_the_lease_holder_settles(store: SqlStore) -> None:
    ob = Outbox(store)
    (event_id,) = await enqueue(store, event(URL))
    now = time.time()
    (item,) = await ob.claim("w1", now, lease_secs=60, max_keys=1, max_events=1)
    await ob.settle("intruder", now, [delivered(item.seq, now)], [])
    record = await ob.get_delivery(event_id)
    assert record is not None and record.status is OutboxStatus.PENDING
    await ob.settle("w1", now, [delivered(item.seq, now)], [])
    record = await ob.get_delivery(event_id)
    assert record is not None and record.status is OutboxStatus.DELIVERED


async def test_release_leases(store: SqlStore) -> None:
    ob = Outbox(store)
    await enqueue(store, event(URL, "a"), event(URL, "b"))
    await ob.claim("w1", time.time(), lease_secs=600, max_keys=1, max_events=5)
    await ob.claim("w2", time.time(), lease_secs=600, max_keys=1, max_events=5)
    assert await ob.release_leases("w1") == 1
    assert await ob.release_leases() == 1
    assert len(await ob.claim("w3", time.time(), lease_secs=60, max_keys=5, max_events=5)) == 2


async def test_list_filters_and_pages_newest_first(store: SqlStore) -> None:
    ob = Outbox(store)
    ids = await enqueue(
        store,
        *(event(URL, f"k{i}", event_type="call.hangup" if i % 2 else "call.initiated")
          for i in range(7)),
    )
    now = time.time()
    items = await ob.claim("w", now, lease_secs=60, max_keys=10, max_events=10)
    await ob.settle("w", now, [delivered(i.seq, now) for i in items[:3]],
                    [AttemptRecord(event_id=items[0].id, attempt=1, url=URL, outcome="delivered",
                                   at=now, latency_ms=3.0, status_code=200)],
                    [i.seq for i in items[3:]])
    page, total = await ob.list_deliveries(DeliveryFilter(), page_number=1, page_size=3)
    assert total == 7 and [r.id for r in page] == ids[::-1][:3]
    page3, _ = await ob.list_deliveries(DeliveryFilter(), page_number=3, page_size=3)
    assert [r.id for r in page3] == [ids[0]]
    assert page3[0].history[0].status_code == 200
    done, total = await ob.list_deliveries(DeliveryFilter(statuses=(OutboxStatus.DELIVERED,)))
    assert total == 3 and {r.id for r in done} == set(ids[:3])
    hangups, total = await ob.list_deliveries(DeliveryFilter(event_types=("call.hangup",)))
    assert total == 3 and all(r.event_type == "call.hangup" for r in hangups)
    one, total = await ob.list_deliveries(DeliveryFilter(call_control_id="v3:k4"))
    assert total == 1 and one[0].id == ids[4]


async def test_redeliver_leaves_an_event_being_sent_alone(store: SqlStore) -> None:
    ob = Outbox(store)
    (event_id,) = await enqueue(store, event(URL))
    now = time.time()
    await ob.claim("w", now, lease_secs=60, max_keys=1, max_events=1)
    record = await ob.redeliver(event_id, now)
    assert record is not None and record.status is OutboxStatus.PENDING
    assert await ob.claim("w2", now, lease_secs=60, max_keys=1, max_events=1) == []
    assert await ob.redeliver("missing", now) is None


async def test_purge_removes_old_finished_events_and_their_attempts(store: SqlStore) -> None:
    ob = Outbox(store)
    old, recent, pending = await enqueue(store, event(URL, "a"), event(URL, "b"),
                                         event(URL, "c"))
    now = time.time()
    items = await ob.claim("w", now, lease_secs=60, max_keys=10, max_events=10)
    by_id = {i.id: i for i in items}
    attempts = [AttemptRecord(event_id=i, attempt=1, url=URL, outcome="delivered", at=now,
                              latency_ms=1.0, status_code=200) for i in (old, recent)]
    await ob.settle("w", now, [delivered(by_id[old].seq, now - 40 * 86400),
                               delivered(by_id[recent].seq, now)],
                    attempts, [by_id[pending].seq])
    assert await ob.purge(now - 30 * 86400, batch=1) == 1
    assert await ob.get_delivery(old) is None
    assert await ob.get_delivery(recent) is not None
    assert await ob.get_delivery(pending) is not None
    async with store.reading() as conn:
        left = (await conn.execute(select(func.count()).select_from(t.webhook_attempts))).scalar()
    assert left == 1
    assert await ob.count_pending() == 1


async def test_pending_by_url_counts_each_urls_backlog_oldest_first(store: SqlStore) -> None:
    """What the start-up warning reads ("N webhooks pending for URL X, oldest Ys old")."""
    ob = Outbox(store)
    other = "http://127.0.0.1:10/hooks"
    assert await ob.pending_by_url() == []
    await enqueue(store, event(URL, "a"), event(URL, "a"), event(other, "b"))
    # Delivered events are not backlog.
    done = await enqueue(store, event(other, "c"))
    now = time.time()
    items = [i for i in await ob.claim("w", now, lease_secs=60, max_keys=10, max_events=10)
             if i.id == done[0]]
    await ob.settle("w", now, [delivered(items[0].seq, now)], [], [])
    backlog = await ob.pending_by_url()
    assert [(b.url, b.count) for b in backlog] == [(URL, 2), (other, 1)]
    assert all(now - 60 < b.oldest_created_at <= now for b in backlog)
    assert [b.url for b in await ob.pending_by_url(limit=1)] == [URL]
