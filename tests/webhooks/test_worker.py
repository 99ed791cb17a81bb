"""The delivery worker end to end: a real SQLite outbox, real HTTP receivers, real signatures."""

from __future__ import annotations

import asyncio
import base64
import itertools
import re
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

import orjson
import pytest
from nacl.signing import VerifyKey
from prometheus_client import CollectorRegistry
from telnyx import Telnyx

from callstream.config import Settings
from callstream.store.outbox import DeliveryFilter, Outbox
from callstream.store.records import OutboxStatus
from callstream.store.sql import SqlStore
from callstream.webhooks.events import outbox_event
from callstream.webhooks.exceptions import FailureKind
from callstream.webhooks.metrics import WebhookMetrics
from callstream.webhooks.payloads import BodyFormat, StreamEvent, make_texml_stream_callback
from callstream.webhooks.signing import WebhookSigner
from callstream.webhooks.worker import WebhookWorker
from tests.webhooks.conftest import enqueue, event, new_key, wait_until
from tests.webhooks.receivers import Received, Receiver, Reply, closed_port_url

Start = Callable[..., Awaitable[Receiver]]
StartWorker = Callable[..., Awaitable[WebhookWorker]]


async def status_of(store: SqlStore, event_id: str) -> OutboxStatus:
    record = await Outbox(store).get_delivery(event_id)
    assert record is not None
    return record.status


async def settled(store: SqlStore, *ids: str) -> None:
    async def done() -> bool:
        records, _ = await Outbox(store).list_deliveries(
            DeliveryFilter(event_ids=ids), page_size=250
        )
        return len(records) == len(ids) and all(
            r.status is not OutboxStatus.PENDING for r in records
        )

    await wait_until(done)


def meta(req: Received) -> dict[str, object]:
    return orjson.loads(req.body)["meta"]  # type: ignore[no-any-return]


def fails_first(n: int, failure: Reply = Reply(status=500)) -> Callable[[Received], Reply]:
    seen = 0

    def behaviour(_req: Received) -> Reply:
        nonlocal seen
        seen += 1
        return failure if seen <= n else Reply()

    return behaviour


# -- signing, as the SDK verifies it --------------------------------------------------


async def test_deliveries_verify_with_the_official_sdk(
    store: SqlStore, signer: WebhookSigner, receivers: Start, workers: StartWorker
) -> None:
    r = await receivers()
    ids = await enqueue(
        store,
        event(r.url, "a", event_type="streaming.started",
              payload={"call_control_id": "v3:a", "client_state": None, "stream_id": "s1"}),
        event(r.url, "b", event_type="call.hangup", payload={"hangup_cause": "normal_clearing"}),
    )
    await workers()
    requests = await r.wait_for(2)
    client = Telnyx(api_key="x", public_key=signer.public_key_b64)
    for req in requests:
        body = req.body.decode()
        unwrapped = client.webhooks.unwrap(body, headers=req.headers)
        assert unwrapped.data is not None
        envelope = orjson.loads(body)
        assert envelope["data"]["id"] in ids
        assert envelope["data"]["record_type"] == "event"
        assert envelope["meta"] == {"attempt": 1, "delivered_to": r.url}
        assert req.headers["content-type"] == "application/json"
        # One byte of the body changed: rejected.
        at = body.index("record_type")
        tampered = body[:at] + "R" + body[at + 1 :]
        with pytest.raises(ValueError, match="Signature verification failed"):
            client.webhooks.unwrap(tampered, headers=req.headers)
        # The timestamp changed: rejected.
        ts = int(req.headers["telnyx-timestamp"])
        with pytest.raises(ValueError, match="Signature verification failed"):
            client.webhooks.unwrap(body, headers={**req.headers, "telnyx-timestamp": str(ts - 1)})
    await settled(store, *ids)
    for event_id in ids:
        record = await Outbox(store).get_delivery(event_id)
        assert record is not None and record.status is OutboxStatus.DELIVERED
        assert record.delivered_to == r.url
        assert [a.outcome for a in record.history] == ["delivered"]
        assert record.history[0].status_code == 200


# -- retries, back-off, failover, give-up ---------------------------------------------


async def test_500s_are_retried_with_backoff_until_delivered(
    store: SqlStore, signer: WebhookSigner, receivers: Start, workers: StartWorker
) -> None:
    r = await receivers(fails_first(2, Reply(status=500, body=b"oops")))
    (event_id,) = await enqueue(store, event(r.url))
    await workers()
    reqs = await r.wait_for(3)
    await settled(store, event_id)
    assert [meta(q)["attempt"] for q in reqs] == [1, 2, 3]
    gaps = [b.at - a.at for a, b in itertools.pairwise(reqs)]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1  # the schedule, no jitter
    assert gaps[1] < 2.0
    client = Telnyx(api_key="x", public_key=signer.public_key_b64)
    for q in reqs:  # each attempt is signed over its own body (meta changes)
        client.webhooks.unwrap(q.body.decode(), headers=q.headers)
    record = await Outbox(store).get_delivery(event_id)
    assert record is not None
    assert record.status is OutboxStatus.DELIVERED and record.attempts == 3
    assert [(a.attempt, a.outcome, a.status_code) for a in record.history] == [
        (3, "delivered", 200), (2, "failed", 500), (1, "failed", 500)]
    assert record.history[-1].response_body is None  # no body kept by default (#11)
    assert record.history[-1].error_code == FailureKind.HTTP_STATUS


async def test_after_the_last_attempt_the_event_is_failed_and_kept(
    store: SqlStore, receivers: Start, workers: StartWorker
) -> None:
    r = await receivers(Reply(status=503))
    (event_id,) = await enqueue(store, event(r.url))
    metrics = WebhookMetrics(CollectorRegistry())
    await workers(metrics=metrics)
    await settled(store, event_id)
    await asyncio.sleep(0.3)
    assert len(r.requests) == 3  # 1 + len(delays)
    record = await Outbox(store).get_delivery(event_id)
    assert record is not None and record.status is OutboxStatus.FAILED
    assert record.last_status == 503 and record.finished_at is not None
    assert len(record.history) == 3
    assert metrics.failed._value.get() == 1
    assert metrics.retried._value.get() == 2
    assert metrics.attempts_failed._value.get() == 3


async def test_connection_refused_is_retried_then_given_up(
    store: SqlStore, workers: StartWorker
) -> None:
    (event_id,) = await enqueue(store, event(closed_port_url()))
    await workers()
    await settled(store, event_id)
    record = await Outbox(store).get_delivery(event_id)
    assert record is not None and record.status is OutboxStatus.FAILED
    assert [a.error_code for a in record.history] == [FailureKind.CONNECT] * 3


async def test_timeouts_are_retried(
    store: SqlStore, receivers: Start, workers: StartWorker
) -> None:
    r = await receivers(fails_first(1, Reply(hang=True)))
    (event_id,) = await enqueue(store, event(r.url, timeout_secs=0.3))
    await workers()
    await settled(store, event_id)
    record = await Outbox(store).get_delivery(event_id)
    assert record is not None and record.status is OutboxStatus.DELIVERED
    first = record.history[-1]
    assert first.error_code == FailureKind.TIMEOUT and 250 <= first.latency_ms < 1500


async def test_slow_body_after_2xx_counts_as_delivered(
    store: SqlStore, receivers: Start, workers: StartWorker
) -> None:
    r = await receivers(Reply(body=b"accepted-slowly", trickle=0.1))
    (event_id,) = await enqueue(store, event(r.url, timeout_secs=0.3))
    await workers()
    await settled(store, event_id)
    assert await status_of(store, event_id) is OutboxStatus.DELIVERED
    assert len(r.requests) == 1


async def test_failover_is_tried_at_once_when_the_primary_fails(
    store: SqlStore, receivers: Start, workers: StartWorker
) -> None:
    failover = await receivers()
    primary = closed_port_url()
    (event_id,) = await enqueue(store, event(primary, failover_url=failover.url))
    await workers()
    (req,) = await failover.wait_for(1)
    assert meta(req) == {"attempt": 2, "delivered_to": failover.url}
    await settled(store, event_id)
    record = await Outbox(store).get_delivery(event_id)
    assert record is not None and record.delivered_to == failover.url
    assert [(a.url, a.outcome) for a in reversed(record.history)] == [
        (primary, "failed"), (failover.url, "delivered")]
    gap = record.history[0].at - record.history[1].at
    assert gap < 0.05  # no back-off between primary and failover


async def test_primary_and_failover_alternate_until_given_up(
    store: SqlStore, receivers: Start, workers: StartWorker
) -> None:
    primary = await receivers(Reply(status=500))
    failover = await receivers(Reply(status=502))
    (event_id,) = await enqueue(store, event(primary.url, failover_url=failover.url))
    await workers()
    await settled(store, event_id)
    record = await Outbox(store).get_delivery(event_id)
    assert record is not None and record.status is OutboxStatus.FAILED
    urls = [a.url for a in reversed(record.history)]
    assert urls == [primary.url, failover.url] * 3
    assert len(primary.requests) == 3 and len(failover.requests) == 3


async def test_without_any_url_the_event_fails_at_once(
    store: SqlStore, workers: StartWorker
) -> None:
    (event_id,) = await enqueue(store, event(None))
    await workers()
    await settled(store, event_id)
    record = await Outbox(store).get_delivery(event_id)
    assert record is not None and record.status is OutboxStatus.FAILED
    assert record.history[0].error_code == FailureKind.NO_URL


async def test_settings_urls_are_the_fallback(
    store: SqlStore, settings: Settings, receivers: Start, workers: StartWorker
) -> None:
    r = await receivers()
    configured = settings.model_copy(update={"webhook_url": r.url})
    (event_id,) = await enqueue(store, event(None))
    await workers(settings=configured)
    await settled(store, event_id)
    assert await status_of(store, event_id) is OutboxStatus.DELIVERED
    assert len(r.requests) == 1


# -- order and parallelism -----------------------------------------------------------


async def test_order_per_call_while_calls_run_in_parallel(
    store: SqlStore, receivers: Start, workers: StartWorker
) -> None:
    busy: dict[str, int] = defaultdict(int)
    overlap: list[str] = []

    def behaviour(req: Received) -> Reply:
        key = orjson.loads(req.body)["data"]["payload"]["call_session_id"]
        busy[key] += 1
        if busy[key] > 1:
            overlap.append(key)
        asyncio.get_running_loop().call_later(0.03, lambda: busy.__setitem__(key, busy[key] - 1))
        return Reply(delay=0.03)

    r = await receivers(behaviour)
    keys = [new_key() for _ in range(5)]
    sent: dict[str, list[str]] = defaultdict(list)
    for round_ in range(6):
        for key in keys:
            (eid,) = await enqueue(store, event(r.url, key, event_type=f"e{round_}"))
            sent[key].append(eid)
    await workers()
    reqs = await r.wait_for(30)
    got: dict[str, list[str]] = defaultdict(list)
    for q in reqs:
        data = orjson.loads(q.body)["data"]
        got[data["payload"]["call_session_id"]].append(data["id"])
    assert got == sent
    assert not overlap
    assert r.max_in_flight >= 3  # different calls went in parallel


async def test_connections_bound_the_parallelism(
    store: SqlStore, settings: Settings, receivers: Start, workers: StartWorker
) -> None:
    r = await receivers(Reply(delay=0.05))
    ids = await enqueue(store, *(event(r.url, new_key()) for _ in range(12)))
    await workers(settings=settings.model_copy(update={"webhook_max_connections": 2}))
    await settled(store, *ids)
    assert r.max_in_flight == 2


async def test_a_hung_destinations_backlog_does_not_starve_another(
    store: SqlStore, settings: Settings, receivers: Start, workers: StartWorker
) -> None:
    """Issue #11: a hung receiver's older backlog (more calls than the worker has lanes)
    must neither fill the claims nor hold the pool; the other destination's events go."""
    hung = await receivers(Reply(hang=True))
    fast = await receivers()
    await enqueue(store, *(event(hung.url, new_key(), timeout_secs=30) for _ in range(40)))
    fast_ids = await enqueue(store, *(event(fast.url, new_key()) for _ in range(5)))
    start = time.monotonic()
    worker = await workers(settings=settings.model_copy(update={
        "webhook_max_connections": 2, "webhook_max_connections_per_destination": 1}))
    await fast.wait_for(5, within=10)  # before: behind 30 s timeouts
    await settled(store, *fast_ids)
    assert time.monotonic() - start < 10
    assert hung.max_in_flight == 1  # its share of the pool
    assert worker.in_flight <= 2 * 4  # lanes: hung's 4 (its share) and fast's


async def test_a_calls_next_event_waits_until_the_previous_is_given_up(
    store: SqlStore, receivers: Start, workers: StartWorker
) -> None:
    bad = await receivers(Reply(status=500))
    good = await receivers()
    first, second = await enqueue(store, event(bad.url, "a"), event(good.url, "a"))
    other = await enqueue(store, event(good.url, "b"))
    await workers()
    await settled(store, first, second, *other)
    assert await status_of(store, first) is OutboxStatus.FAILED
    # The other call was not held up; this call's next event came after the give-up.
    at = {orjson.loads(q.body)["data"]["id"]: q.at for q in good.requests}
    assert at[other[0]] < bad.requests[-1].at < at[second]


# -- wake-ups, restarts, redelivery -------------------------------------------------


async def test_wake_delivers_without_waiting_for_the_poll(
    store: SqlStore, receivers: Start, workers: StartWorker
) -> None:
    r = await receivers()
    worker = await workers(poll_interval=30.0)
    await asyncio.sleep(0.1)
    start = time.monotonic()
    await enqueue(store, event(r.url))
    worker.wake()
    await r.wait_for(1, within=5)
    assert time.monotonic() - start < 0.5


async def test_rows_left_leased_by_a_dead_worker_are_resumed(
    store: SqlStore, receivers: Start, workers: StartWorker
) -> None:
    r = await receivers()
    ids = await enqueue(store, *(event(r.url, "k") for _ in range(3)))
    claimed = await Outbox(store).claim(
        "dead-worker", time.time(), lease_secs=3600, max_keys=10, max_events=10
    )
    assert [c.id for c in claimed] == ids
    # SQLite: one node per store, so a start clears every lease. A shared store: a node
    # clears its own (its id is stable across restarts); another's wait to expire.
    await workers(**({} if store.is_sqlite else {"worker_id": "dead-worker"}))
    reqs = await r.wait_for(3)
    assert [orjson.loads(q.body)["data"]["id"] for q in reqs] == ids


async def test_stop_waits_for_in_flight_and_leaves_the_rest_pending(
    store: SqlStore, receivers: Start, workers: StartWorker
) -> None:
    r = await receivers(Reply(delay=0.2))
    ids = await enqueue(store, *(event(r.url, "k") for _ in range(3)))
    worker = await workers()
    await r.wait_for(1)
    await worker.stop(grace=2.0)
    statuses = [await status_of(store, i) for i in ids]
    assert statuses[0] is OutboxStatus.DELIVERED
    assert statuses[2] is OutboxStatus.PENDING
    records, _ = await Outbox(store).list_deliveries(DeliveryFilter(event_ids=tuple(ids)))
    assert all(r.status is not OutboxStatus.PENDING or r.attempts == 0 for r in records)


async def test_the_stop_grace_is_a_setting(
    store: SqlStore, settings: Settings, receivers: Start, workers: StartWorker
) -> None:
    """Without a grace of its own, stop() gives an attempt in flight
    webhook_stop_grace_secs: one that takes longer is cut off and stays pending."""
    r = await receivers(Reply(delay=0.5))
    (event_id,) = await enqueue(store, event(r.url, "k"))
    worker = await workers(settings=settings.model_copy(update={"webhook_stop_grace_secs": 0.1}))
    await r.wait_for(1)
    await worker.stop()
    assert await status_of(store, event_id) is OutboxStatus.PENDING


async def test_redeliver_sends_again_with_the_next_attempt_number(
    store: SqlStore, receivers: Start, workers: StartWorker
) -> None:
    r = await receivers()
    (event_id,) = await enqueue(store, event(r.url))
    worker = await workers()
    await settled(store, event_id)
    record = await worker.redeliver(event_id)
    assert record is not None and record.status is OutboxStatus.PENDING
    reqs = await r.wait_for(2)
    assert meta(reqs[1])["attempt"] == 2
    await settled(store, event_id)
    assert await worker.redeliver("no-such-event") is None


async def test_a_failed_event_redelivered_gets_a_fresh_round(
    store: SqlStore, receivers: Start, workers: StartWorker
) -> None:
    r = await receivers(fails_first(3, Reply(status=500)))
    (event_id,) = await enqueue(store, event(r.url))
    worker = await workers()
    await settled(store, event_id)
    assert await status_of(store, event_id) is OutboxStatus.FAILED
    await worker.redeliver(event_id)
    await r.wait_for(4)
    await settled(store, event_id)
    record = await Outbox(store).get_delivery(event_id)
    assert record is not None and record.status is OutboxStatus.DELIVERED
    assert record.attempts == 4


# -- TeXML status callbacks ------------------------------------------------------------


async def test_texml_status_callback_is_a_signed_form_post(
    store: SqlStore, signer: WebhookSigner, receivers: Start, workers: StartWorker
) -> None:
    r = await receivers()
    data = make_texml_stream_callback(
        account_sid="acct", call_sid="v3:c", stream_event=StreamEvent.STARTED,
        stream_sid="sid", stream_name="n", now=time.time(),
    )
    await enqueue(store, outbox_event(data, ordering_key="c", url=r.url,
                                      body_format=BodyFormat.FORM))
    await workers()
    (req,) = await r.wait_for(1)
    assert req.headers["content-type"] == "application/x-www-form-urlencoded"
    fields = dict(parse_qsl(req.body.decode()))
    assert fields["StreamEvent"] == "stream-started" and fields["StreamSid"] == "sid"
    client = Telnyx(api_key="x", public_key=signer.public_key_b64)
    # unwrap verifies the signature, then fails to parse a form body as JSON.
    with pytest.raises(ValueError) as info:
        client.webhooks.unwrap(req.body.decode(), headers=req.headers)
    assert "Signature" not in str(info.value)
    with pytest.raises(ValueError, match="Signature verification failed"):
        client.webhooks.unwrap(req.body.decode() + "x", headers=req.headers)


async def test_texml_get_callback_signs_the_query_string(
    store: SqlStore, signer: WebhookSigner, receivers: Start, workers: StartWorker
) -> None:
    r = await receivers()
    data = make_texml_stream_callback(
        account_sid="acct", call_sid="v3:c", stream_event=StreamEvent.STOPPED,
        stream_sid="sid", now=time.time(),
    )
    await enqueue(store, outbox_event(data, ordering_key="c", url=r.url + "?x=1", method="GET",
                                      body_format=BodyFormat.FORM))
    await workers()
    (req,) = await r.wait_for(1)
    assert req.method == "GET" and req.body == b""
    query = req.query
    assert query.startswith("x=1&")
    signed = query.removeprefix("x=1&").encode()
    VerifyKey(signer.public_key).verify(
        req.headers["telnyx-timestamp"].encode() + b"|" + signed,
        base64.b64decode(req.headers["telnyx-signature-ed25519"]),
    )


# -- metrics ---------------------------------------------------------------------


async def test_metrics_count_deliveries_and_latency(
    store: SqlStore, receivers: Start, workers: StartWorker
) -> None:
    r = await receivers(fails_first(1))
    ids = await enqueue(store, *(event(r.url, new_key()) for _ in range(3)))
    registry = CollectorRegistry()
    await workers(metrics=WebhookMetrics(registry))
    await settled(store, *ids)
    value = registry.get_sample_value
    assert value("callstream_webhook_delivered_total") == 3
    assert value("callstream_webhook_retried_total") == 1
    assert value("callstream_webhook_failed_total") == 0
    assert value("callstream_webhook_attempts_total", {"outcome": "failed"}) == 1
    assert value("callstream_webhook_delivery_latency_seconds_count") == 3
    assert value("callstream_webhook_attempt_seconds_count") == 4


# -- what the worker logs (docs/logging.md) -----------------------------------------------


async def test_failed_attempts_and_the_give_up_are_logged_with_url_and_next_try(
    store: SqlStore, receivers: Start, workers: StartWorker, caplog: pytest.LogCaptureFixture
) -> None:
    r = await receivers(lambda _req: Reply(status=500))
    caplog.set_level("DEBUG", logger="callstream.webhooks.worker")
    (event_id,) = await enqueue(store, event(r.url, "a"))
    await workers()
    await settled(store, event_id)
    lines = [(rec.levelname, rec.getMessage()) for rec in caplog.records
             if event_id in rec.getMessage()]
    # Retries 0.05 s then 0.1 s apart: the first failure is told at info, the next one
    # within the second goes to debug, the give-up is a warning naming the URL.
    assert [level for level, _ in lines] == ["INFO", "DEBUG", "WARNING"], lines
    assert lines[0][1] == (f"webhook {event_id} (call.initiated of call v3:a) attempt 1 to "
                           f"{r.url} failed: HTTP 500: Internal Server Error; next try in 0.05 s")
    assert lines[2][1] == (f"webhook {event_id} (call.initiated of call v3:a) to {r.url} given "
                           "up after 3 attempts: HTTP 500: Internal Server Error")
    warning = next(rec for rec in caplog.records if rec.levelname == "WARNING")
    assert warning.url == r.url  # type: ignore[attr-defined]  # a --log-format json field


async def test_a_url_delivering_again_is_logged_once(
    store: SqlStore, receivers: Start, workers: StartWorker, caplog: pytest.LogCaptureFixture
) -> None:
    r = await receivers(fails_first(1))
    caplog.set_level("INFO", logger="callstream.webhooks.worker")
    first, second = await enqueue(store, event(r.url, "a"), event(r.url, "a"))
    await workers()
    await settled(store, first, second)
    again = [rec.getMessage() for rec in caplog.records if "delivered again" in rec.getMessage()]
    assert len(again) == 1, again
    assert re.fullmatch(rf"webhooks to {re.escape(r.url)} delivered again after 1 failed "
                        r"attempts; this call\.initiated is \d+ s old", again[0])
