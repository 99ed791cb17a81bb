"""The delivery worker: takes due events from the outbox and delivers them, in order per call.

Theory of operation
-------------------

Events reach the outbox in the transaction of the change that caused them
(:meth:`SqlStore.commit`); the call layer then calls :meth:`WebhookWorker.wake`.

* The **store loop** is the worker's only writer. Each cycle is one transaction
  (:meth:`Outbox.settle_and_claim`): it writes the verdicts reached since the last cycle
  (status, attempt log), then leases due work: for each call whose oldest pending event
  is due, that event and the ones queued behind it. Batching every verdict and the claim
  into one transaction is what keeps SQLite from costing a transaction per event. The
  loop runs when woken, when a lane reaches a verdict, when a scheduled retry falls due,
  and at least every ``poll_interval`` (which notices events committed elsewhere).
* Each call's leased events become a **lane**: a task that sends them one after another,
  so a call's next event waits until the previous one is delivered or given up; lanes of
  different calls run in parallel, bounded by the deliverer's connection limit. For each
  attempt the lane builds the body (``meta.attempt``, ``meta.delivered_to``), signs exactly
  those bytes, sends them, and records the verdict: delivered, given up, or retry at a time
  from :class:`RetryPolicy`. A retry ends the lane and releases its other events; the
  call's order holds because a key whose head waits is not claimed until the head is due.
* **Destinations share fairly.** A lane belongs to the destination (host:port) of its
  head's primary URL. A destination holds at most ``LANES_PER_CONNECTION`` times its
  connection share in lanes; a claimed call beyond that is put back unsent (counted as
  *deferred*) and its URL is left out of the claims until the destination is down to half
  its lanes, and each claim takes a bounded number of calls per URL. So a hung receiver
  holds its share of lanes and connections, never the whole worker, and the other
  applications' events keep flowing.

A lane may send a call's next event before the previous verdict is written. If the process
dies in that window both are sent again on restart (at-least-once: receivers dedupe on
``data.id``), still in order.

Crash safety: a row is ``delivered`` only once its verdict is written. Rows a dead process
held stay ``pending`` with a lease; the next start clears the leases (SQLite: all;
PostgreSQL: this worker's id, other leases expire) and sends them again. An attempt cut off
by the crash is not counted, so its retry reuses the ``meta.attempt`` number.

A housekeeping task renews leases, samples the queue depth for ``/metrics`` and purges
delivered and failed events older than ``webhook_retention_days``.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import logging
import os
import signal
import socket
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import orjson

from callstream.config import Settings, load_settings
from callstream.node_id import node_identity
from callstream.store.exceptions import StoreError
from callstream.store.outbox import AttemptRecord, DeliveryRecord, Outbox, OutboxItem, Settlement
from callstream.store.records import OutboxStatus
from callstream.store.sql import SqlStore
from callstream.webhooks.delivery import HttpDeliverer
from callstream.webhooks.exceptions import DeliveryFailed, FailureKind
from callstream.webhooks.failure_log import FailureLog
from callstream.webhooks.metrics import WebhookMetrics
from callstream.webhooks.payloads import (
    FORM_CONTENT_TYPE,
    JSON_CONTENT_TYPE,
    BodyFormat,
    form_body,
    json_body,
)
from callstream.webhooks.retry import RetryPolicy
from callstream.webhooks.signing import WebhookSigner, load_signer

log = logging.getLogger(__name__)

#: A lease outlives any renewal gap many times over.
LEASE_SECS = 60.0
HOUSEKEEPING_SECS = 5.0
PURGE_EVERY_SECS = 3600.0
POLL_SECS = 1.0
#: Events leased per claim; a claim finding this many claims again at once.
CLAIM_MAX_EVENTS = 1000
#: Lanes (calls) held at once, per allowed connection: enough to keep connections busy.
LANES_PER_CONNECTION = 4
#: URLs a claim is told to skip at most (a longer list costs more than a wasted claim).
MAX_SKIPPED_URLS = 500
#: The destination name of an event with no usable URL (it fails at once).
NO_DESTINATION = "-"
STORE_RETRY_SECS = 0.5
_DELIVERED = "delivered"
_FAILED = "failed"


class _Lane:
    """A call's leased events, sent one after another by one task."""

    __slots__ = ("destination", "items", "key", "task")

    def __init__(self, key: str, destination: str) -> None:
        self.key = key
        self.destination = destination  # host:port of the head's primary URL
        self.items: deque[OutboxItem] = deque()
        self.task: asyncio.Task[None] | None = None


class WebhookWorker:
    """Delivers the outbox.

    Args:
        store: the open store the events are committed to.
        settings: ``webhook_*`` settings (fallback URLs, retry schedule and budget,
            connections and their share per destination, response bodies, retention).
        signer: signs each attempt.
        metrics: where to count; the process-wide series if omitted.
        policy: retry policy; built from the settings if omitted.
        deliverer: the HTTP sender; built from the settings if omitted.
        clock: Unix time source (the store's rows use the same).
        worker_id: lease owner name; give a stable one per node on PostgreSQL so a
            restart reclaims its own leases at once.
        poll_interval: the longest the claim loop sleeps without a wake-up.
    """

    def __init__(
        self,
        store: SqlStore,
        settings: Settings,
        signer: WebhookSigner,
        metrics: WebhookMetrics | None = None,
        *,
        policy: RetryPolicy | None = None,
        deliverer: HttpDeliverer | None = None,
        clock: Callable[[], float] = time.time,
        worker_id: str | None = None,
        poll_interval: float = POLL_SECS,
    ) -> None:
        self.store = store
        self.outbox = Outbox(store)
        self.settings = settings
        self.signer = signer
        self.metrics = metrics or WebhookMetrics.default()
        self.policy = policy or RetryPolicy.from_settings(
            settings.webhook_retry_delays,
            settings.webhook_retry_jitter,
            settings.webhook_retry_budget_secs,
            settings.webhook_retry_max_delay_secs,
        )
        self.deliverer = deliverer or HttpDeliverer(
            settings.webhook_max_connections,
            max_per_destination=settings.webhook_max_connections_per_destination,
            keep_body_bytes=(
                settings.webhook_response_body_max_bytes
                if settings.webhook_keep_response_body else 0
            ),
            policy=settings.outbound_policy,
        )
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._clock = clock
        self._poll = poll_interval
        self._max_lanes = self.deliverer.max_connections * LANES_PER_CONNECTION
        self._max_destination_lanes = self.deliverer.max_per_destination * LANES_PER_CONNECTION
        self._lanes: dict[str, _Lane] = {}
        self._destination_lanes: dict[str, int] = {}
        self._skipped: dict[str, set[str]] = {}  # destination -> URLs claims leave out
        self._kick = asyncio.Event()  # the store loop has work
        self._want_claim = False
        self._settled: list[Settlement] = []
        self._attempts: list[AttemptRecord] = []
        self._released: list[int] = []
        self._due: list[float] = []  # heap of retry times already written
        self._tasks: list[asyncio.Task[None]] = []
        self._store_task: asyncio.Task[None] | None = None
        self._closing = False
        self._started = False
        self._failure_log = FailureLog()

    # -- public API ----------------------------------------------------------

    def wake(self) -> None:
        """Look for due events now (call after committing events). Cheap; never blocks."""
        self._want_claim = True
        self._kick.set()

    async def start(self) -> None:
        """Reclaim what a previous run left leased, then start delivering."""
        if self._started:
            return
        owner = None if self.store.is_sqlite else self.worker_id
        released = await self.outbox.release_leases(owner)
        if released:
            log.info("resuming %d webhook events left in flight by the last run", released)
        self._started = True
        self._closing = False
        self._tasks = [
            asyncio.create_task(
                self._supervise(self._housekeeping_loop, "housekeeping"), name="webhooks-house"
            ),
        ]
        self._store_task = asyncio.create_task(self._store_loop(), name="webhooks-store")
        self.wake()

    async def stop(self, grace: float | None = None) -> None:
        """Stop claiming, let in-flight attempts finish (up to ``grace`` seconds, by
        default ``webhook_stop_grace_secs``), write every verdict, close connections. What
        was not sent stays pending for the next start.
        """
        if not self._started:
            return
        if grace is None:
            grace = self.settings.webhook_stop_grace_secs
        self._started = False
        self._closing = True  # no more claims
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        lanes = [lane.task for lane in self._lanes.values() if lane.task is not None]
        if lanes:
            _, late = await asyncio.wait(lanes, timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*lanes, return_exceptions=True)
        self._kick.set()
        if self._store_task is not None:
            await self._store_task
            self._store_task = None
        await self.deliverer.aclose()

    async def redeliver(self, event_id: str) -> DeliveryRecord | None:
        """Queue an event again (a fresh round of retries); ``None`` if unknown."""
        record = await self.outbox.redeliver(event_id, self._clock())
        if record is not None:
            self.wake()
        return record

    @property
    def in_flight(self) -> int:
        """Calls (lanes) being delivered right now."""
        return len(self._lanes)

    # -- the store loop ---------------------------------------------------------

    async def _supervise(self, loop: Callable[[], Awaitable[None]], name: str) -> None:
        while True:
            try:
                await loop()
                return
            except asyncio.CancelledError:
                raise
            except StoreError as exc:
                log.warning("webhook %s: store error, retrying: %s", name, exc)
            except Exception:
                log.exception("webhook %s loop failed; restarting it", name)
            await asyncio.sleep(STORE_RETRY_SECS)

    def _sleep_time(self) -> float:
        now = self._clock()
        while self._due and self._due[0] <= now:
            heapq.heappop(self._due)
            self._want_claim = True
        if self._kick.is_set() or self._want_claim:
            return 0.0
        if self._due:
            return min(self._poll, self._due[0] - now)
        return self._poll

    async def _store_loop(self) -> None:
        failures = 0
        while True:
            delay = self._sleep_time()
            if delay > 0:
                try:
                    async with asyncio.timeout(delay):
                        await self._kick.wait()
                except TimeoutError:
                    self._want_claim = True  # poll: events may come from elsewhere
            self._kick.clear()
            settled, attempts, released = self._settled, self._attempts, self._released
            self._settled, self._attempts, self._released = [], [], []
            # A verdict may have freed a call's next event, so claim after one too.
            claim = not self._closing and bool(self._want_claim or settled or released)
            self._want_claim = False
            room = self._max_lanes - len(self._lanes) if claim else 0
            try:
                items = await self.outbox.settle_and_claim(
                    self.worker_id,
                    self._clock(),
                    settled,
                    attempts,
                    released,
                    lease_secs=LEASE_SECS,
                    max_keys=room,
                    max_events=CLAIM_MAX_EVENTS,
                    per_url=self._max_destination_lanes,
                    skip_urls=self._skip_urls(),
                )
            except BaseException as exc:
                # Keep the verdicts, older first, and try again.
                self._settled[:0] = settled
                self._attempts[:0] = attempts
                self._released[:0] = released
                if not isinstance(exc, Exception):
                    raise
                failures += 1
                log.warning(
                    "webhook store cycle failed (try %d): %s", failures, exc,
                    exc_info=not isinstance(exc, StoreError),
                )
                if self._closing and failures >= 3:
                    log.error("giving up writing %d webhook verdicts; those events will be "
                              "sent again on the next start", len(self._settled))
                    return
                self._want_claim = self._want_claim or claim
                await asyncio.sleep(STORE_RETRY_SECS)
                continue
            failures = 0
            self._schedule(settled)
            if items:
                self._start_lanes(items)
                if len(items) >= CLAIM_MAX_EVENTS:
                    self._want_claim = True
            if self._closing and not (self._settled or self._attempts or self._released):
                return

    def _start_lanes(self, items: Sequence[OutboxItem]) -> None:
        started: list[_Lane] = []
        deferred: set[str] = set()
        for item in items:
            key = item.ordering_key
            if key in deferred:
                self._released.append(item.seq)
                continue
            lane = self._lanes.get(key)
            if lane is None:
                destination = self._destination(item)
                url = item.url or ""  # as the claim sees it: '' is the settings' URL
                if self._destination_lanes.get(destination, 0) >= self._max_destination_lanes:
                    deferred.add(key)
                    self._released.append(item.seq)
                    self._skip(destination, url)
                    self.metrics.destination(destination).deferred.inc()
                    continue
                lane = self._lanes[key] = _Lane(key, destination)
                count = self._destination_lanes.get(destination, 0) + 1
                self._destination_lanes[destination] = count
                if count >= self._max_destination_lanes:
                    self._skip(destination, url)
                started.append(lane)
            lane.items.append(item)
        if deferred:
            log.info("webhook destinations at their lane limit (%d calls each): %d calls put "
                     "back for later", self._max_destination_lanes, len(deferred))
        for lane in started:
            lane.task = asyncio.create_task(self._run_lane(lane))

    def _destination(self, item: OutboxItem) -> str:
        primary, _ = self._targets(item)
        return NO_DESTINATION if primary is None else self._destination_of(primary)

    def _skip(self, destination: str, url: str) -> None:
        urls = self._skipped.setdefault(destination, set())
        if url not in urls and sum(map(len, self._skipped.values())) < MAX_SKIPPED_URLS:
            urls.add(url)
            self._want_claim = True  # what the claim passed over for this URL may be due

    def _skip_urls(self) -> list[str]:
        return [url for urls in self._skipped.values() for url in urls]

    def _lane_ended(self, lane: _Lane) -> None:
        del self._lanes[lane.key]
        count = self._destination_lanes[lane.destination] - 1
        if count:
            self._destination_lanes[lane.destination] = count
        else:
            del self._destination_lanes[lane.destination]
        # Hysteresis: claim for it again only once half its lanes are free, so a busy
        # destination is not claimed (and put back) at every verdict.
        if count <= self._max_destination_lanes // 2:
            self._skipped.pop(lane.destination, None)

    def _schedule(self, settled: Sequence[Settlement]) -> None:
        for s in settled:
            if s.status is OutboxStatus.PENDING:
                heapq.heappush(self._due, s.next_attempt_at)

    # -- delivering ------------------------------------------------------------

    async def _run_lane(self, lane: _Lane) -> None:
        retrying: int | None = None
        try:
            while lane.items:
                item = lane.items[0]
                if item.next_attempt_at > self._clock():
                    break  # e.g. a redelivered event queued behind: claimed again when due
                if not await self._deliver(item):
                    retrying = item.seq
                    break
                lane.items.popleft()
        finally:
            self._lane_ended(lane)
            self._released.extend(i.seq for i in lane.items if i.seq != retrying)
            self._kick.set()

    def _targets(self, item: OutboxItem) -> tuple[str | None, str | None]:
        primary, failover = item.url, item.failover_url
        if primary is None:
            primary = self.settings.webhook_url
            failover = failover or self.settings.webhook_failover_url
        if primary is None:
            primary, failover = failover, None
        if failover == primary:
            failover = None
        return primary, failover

    def _request(
        self, item: OutboxItem, attempt: int, url: str
    ) -> tuple[str, bytes, dict[str, str]]:
        """URL, body and headers of one attempt; the signature covers the exact bytes sent."""
        timestamp = int(self._clock())
        if item.content_type == BodyFormat.FORM:
            form = form_body(orjson.loads(item.data))
            headers = self.signer.headers(form, timestamp, event_id=item.id)
            if item.method == "GET":
                sep = "&" if "?" in url else "?"
                return f"{url}{sep}{form.decode('ascii')}", b"", headers
            headers["content-type"] = FORM_CONTENT_TYPE
            return url, form, headers
        body = json_body(item.data.encode(), attempt=attempt, delivered_to=url)
        headers = self.signer.headers(body, timestamp, event_id=item.id)
        headers["content-type"] = JSON_CONTENT_TYPE
        return url, body, headers

    async def _deliver(self, item: OutboxItem) -> bool:
        """Attempt ``item`` until delivered, given up, or a retry is scheduled (→ False)."""
        primary, failover = self._targets(item)
        has_failover = failover is not None
        attempts, round_attempts = item.attempts, item.round_attempts
        started_at = item.started_at
        metrics = self.metrics
        while True:
            round_attempts += 1
            attempts += 1
            to_failover = self.policy.uses_failover(round_attempts, has_failover=has_failover)
            url = failover if to_failover else primary
            began = self._clock()
            if started_at is None:
                started_at = began
            t0 = time.perf_counter()
            error: DeliveryFailed
            if url is None:
                error = DeliveryFailed(
                    FailureKind.NO_URL, "no webhook URL configured", retryable=False
                )
            else:
                send_url, body, headers = self._request(item, attempts, url)
                dest = metrics.destination(self._destination_of(url))
                dest.in_flight.inc()
                try:
                    response = await self.deliverer.send(
                        send_url,
                        method=item.method,
                        body=body,
                        headers=headers,
                        timeout_secs=item.timeout_secs,
                    )
                except DeliveryFailed as exc:
                    error = exc
                    dest.failed.inc()
                    dest.duration.observe(time.perf_counter() - t0)
                else:
                    elapsed = time.perf_counter() - t0
                    dest.delivered.inc()
                    dest.duration.observe(elapsed)
                    now = self._clock()
                    self._attempts.append(
                        AttemptRecord(
                            event_id=item.id,
                            attempt=attempts,
                            url=url,
                            outcome=_DELIVERED,
                            at=began,
                            latency_ms=elapsed * 1000.0,
                            status_code=response.status_code,
                            response_body=response.body,
                        )
                    )
                    self._settled.append(
                        Settlement(
                            seq=item.seq,
                            status=OutboxStatus.DELIVERED,
                            attempts=attempts,
                            next_attempt_at=item.next_attempt_at,
                            started_at=started_at,
                            finished_at=now,
                            delivered_at=now,
                            delivered_to=url,
                            last_status=response.status_code,
                        )
                    )
                    self._kick.set()
                    if failures := self._failure_log.delivered(url):
                        log.info("webhooks to %s delivered again after %d failed attempts; "
                                 "this %s is %.0f s old", url, failures, item.event_type,
                                 max(0.0, now - item.created_at),
                                 extra={"url": url, "call_control_id": item.call_control_id})
                    metrics.delivered.inc()
                    metrics.attempts_delivered.inc()
                    metrics.attempt_duration.observe(elapsed)
                    if item.round_start == 0:
                        metrics.latency.observe(max(0.0, now - item.created_at))
                    return True
                finally:
                    dest.in_flight.dec()
            elapsed = time.perf_counter() - t0
            now = self._clock()
            reason = str(error)
            self._attempts.append(
                AttemptRecord(
                    event_id=item.id,
                    attempt=attempts,
                    url=url or "",
                    outcome=_FAILED,
                    at=began,
                    latency_ms=elapsed * 1000.0,
                    status_code=error.status_code,
                    error_code=int(error.kind),
                    error=reason,
                    response_body=error.body,
                )
            )
            metrics.attempts_failed.inc()
            if url is not None:
                metrics.attempt_duration.observe(elapsed)
            delay = self.policy.next_delay(
                round_attempts, error, has_failover=has_failover, elapsed=now - started_at
            )
            self._log_failure(item, attempts, url, reason, now, delay)
            if delay is None:
                log.warning(
                    "webhook %s (%s of call %s) to %s given up after %d attempts: %s",
                    item.id, item.event_type, item.call_control_id or "-", url or "(no URL)",
                    attempts, reason,
                    extra={"url": url, "call_control_id": item.call_control_id},
                )
                self._settled.append(
                    Settlement(
                        seq=item.seq,
                        status=OutboxStatus.FAILED,
                        attempts=attempts,
                        next_attempt_at=item.next_attempt_at,
                        started_at=started_at,
                        finished_at=now,
                        last_status=error.status_code,
                        last_error=reason,
                    )
                )
                self._kick.set()
                metrics.failed.inc()
                return True
            metrics.retried.inc()
            if delay <= 0:
                continue
            self._settled.append(
                Settlement(
                    seq=item.seq,
                    status=OutboxStatus.PENDING,
                    attempts=attempts,
                    next_attempt_at=now + delay,
                    started_at=started_at,
                    last_status=error.status_code,
                    last_error=reason,
                )
            )
            self._kick.set()
            return False

    def _log_failure(self, item: OutboxItem, attempts: int, url: str | None, reason: str,
                     now: float, delay: float | None) -> None:
        """One info line per failed attempt, at most one a second per URL (FailureLog)."""
        if url is None or delay is None:
            return  # no URL at all, or given up: the warning says it
        count = self._failure_log.failed(url, now)
        if count is None:
            log.debug("webhook %s attempt %d to %s failed: %s", item.id, attempts, url, reason)
            return
        more = f" ({count - 1} more failures to this URL since the last line)" if count > 1 \
            else ""
        when = f"next try in {delay:.{1 if delay >= 1 else 2}f} s" if delay > 0 \
            else "retrying now"
        log.info("webhook %s (%s of call %s) attempt %d to %s failed: %s; %s%s",
                 item.id, item.event_type, item.call_control_id or "-", attempts, url, reason,
                 when, more, extra={"url": url, "call_control_id": item.call_control_id})

    def _destination_of(self, url: str) -> str:
        try:
            return self.deliverer.destination(url)
        except DeliveryFailed:
            return NO_DESTINATION

    # -- housekeeping ------------------------------------------------------------

    async def _housekeeping_loop(self) -> None:
        next_purge = 0.0
        while True:
            now = self._clock()
            if self._lanes:
                await self.outbox.renew_leases(self.worker_id, now + LEASE_SECS)
            self.metrics.queued.set(await self.outbox.count_pending())
            if now >= next_purge:
                cutoff = now - self.settings.webhook_retention_days * 86400.0
                purged = await self.outbox.purge(cutoff)
                if purged:
                    log.info("purged %d webhook events older than %g days",
                             purged, self.settings.webhook_retention_days)
                next_purge = now + PURGE_EVERY_SECS
            await asyncio.sleep(HOUSEKEEPING_SECS)


# -- a standalone delivery process --------------------------------------------------


async def run_standalone(settings: Settings, *, ready: Callable[[], None] | None = None) -> None:
    """Deliver the outbox of ``settings``' store until SIGINT/SIGTERM."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = SqlStore(settings.effective_database_url, inline_sqlite=settings.sqlite_inline)
    await store.open()
    # Named after the node, so a restart on a shared store resumes its own leases at once.
    node_id = node_identity(settings.node_id, settings.data_dir)
    worker = WebhookWorker(store, settings, load_signer(settings),
                           worker_id=f"{node_id}:webhooks")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await worker.start()
        if ready is not None:
            ready()
        await stop.wait()
    finally:
        await worker.stop()
        await store.close()


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m callstream.webhooks.worker --data-dir D``: only the webhook worker."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = load_settings(data_dir=args.data_dir, database_url=args.database_url)

    def ready() -> None:
        print("webhook worker ready", flush=True)

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        asyncio.run(run_standalone(settings, ready=ready))
    else:
        uvloop.run(run_standalone(settings, ready=ready))


if __name__ == "__main__":
    main()
