"""Webhook delivery benchmark: signed deliveries per second and enqueue→2xx latency.

Runs the real pipeline — events committed to a SQLite outbox with ``SqlStore.commit``,
the :class:`~callstream.webhooks.worker.WebhookWorker` claiming, signing (Ed25519),
POSTing over keep-alive connections and writing verdicts — against a minimal HTTP/1.1
receiver in a separate process on 127.0.0.1 (so the receiver's CPU is not the worker's).

By default the store is a SQLite file in a temporary directory; ``--database-url`` runs
the same on PostgreSQL (give it an empty database: the bench fills its outbox), and
``--nodes N`` there runs N stores and workers on it at once, as N nodes would (in this one
process, so they share its CPU: the figure is the database's, not N machines').

Two phases:

* **backlog**: N events for C calls are committed first, then the worker starts; the
  rate is N / time until every event is delivered.
* **steady**: a producer commits events at a fixed rate (small batches every 5 ms, each
  followed by ``wake()``, as the call layer does) for a few seconds; latency per event is
  ``delivered_at - created_at`` from the outbox rows, i.e. commit → 2xx received.

Usage::

    python bench/webhooks.py                       # defaults below
    python bench/webhooks.py --rate 1000 --duration 5 --json bench/results/webhooks.json
    python bench/webhooks.py --database-url postgresql://callstream@127.0.0.1/bench --nodes 2

Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from prometheus_client import CollectorRegistry
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.http_framing import take_request
from callstream.config import Settings
from callstream.store import schema as t
from callstream.store.records import Change, OutboxEvent
from callstream.store.sql import SqlStore
from callstream.webhooks.metrics import WebhookMetrics
from callstream.webhooks.payloads import make_event
from callstream.webhooks.signing import WebhookSigner
from callstream.webhooks.worker import WebhookWorker

RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok"


# -- the receiver (child process) ----------------------------------------------------


class _Receiver(asyncio.Protocol):
    """Answers 200 to each request on a keep-alive connection; parses only framing."""

    count = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while (request := take_request(self.buf)) is not None:
            _, self.buf = request
            _Receiver.count += 1
            self.transport.write(RESPONSE)


def receiver_main(port_file: str) -> None:
    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_Receiver, "127.0.0.1", 0, backlog=1024)
        port = server.sockets[0].getsockname()[1]
        Path(port_file).write_text(str(port))  # noqa: ASYNC240 - once, before serving
        await server.serve_forever()

    _run(serve())


def _run(coro: object) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)  # type: ignore[arg-type]
    else:
        uvloop.run(coro)  # type: ignore[arg-type]


# -- the benchmark -----------------------------------------------------------------


def _events(url: str, keys: list[str], n: int, rng: random.Random) -> list[OutboxEvent]:
    now = time.time()
    out = []
    for _ in range(n):
        key = rng.choice(keys)
        data = make_event(
            "call.transcription",
            {
                "call_control_id": f"v3:{key}",
                "call_leg_id": key,
                "call_session_id": key,
                "client_state": None,
                "connection_id": "default",
                "transcription_data": {
                    "transcript": "hello this is a benchmark transcript",
                    "is_final": True,
                    "confidence": 0.97,
                    "transcription_track": "inbound",
                },
            },
            now,
        )
        out.append(
            OutboxEvent(
                id=data["id"],
                event_type=data["event_type"],
                ordering_key=key,
                data=data,
                url=url,
                call_control_id=f"v3:{key}",
            )
        )
    return out


async def _wait_drained(store: SqlStore, deadline: float) -> None:
    c = t.webhook_outbox.c
    while time.monotonic() < deadline:
        async with store.reading() as conn:
            left = (
                await conn.execute(
                    select(c.seq).where(c.status == "pending").limit(1)
                )
            ).first()
        if left is None:
            return
        await asyncio.sleep(0.01)
    raise TimeoutError("events still pending at the deadline")


async def _latencies(store: SqlStore, since: float) -> list[float]:
    c = t.webhook_outbox.c
    async with store.reading() as conn:
        rows = (
            await conn.execute(
                select(c.created_at, c.delivered_at).where(c.created_at >= since)
            )
        ).all()
    return [r.delivered_at - r.created_at for r in rows if r.delivered_at is not None]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def bench(args: argparse.Namespace, url: str) -> dict[str, object]:
    rng = random.Random(7)
    keys = [uuid.uuid4().hex for _ in range(args.calls)]
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=Path(tmp),
            webhook_max_connections=args.connections,
            webhook_max_connections_per_destination=args.per_destination,
            webhook_retry_delays=[0.5, 1.0],
        )
        stores = [SqlStore(args.database_url or settings.effective_database_url)
                  for _ in range(args.nodes)]
        for one in stores:
            await one.open()
        store = stores[0]
        signer = WebhookSigner(os.urandom(32))
        workers = [
            WebhookWorker(one, settings, signer, WebhookMetrics(CollectorRegistry()),
                          worker_id=f"bench-node-{n}")
            for n, one in enumerate(stores)
        ]
        # Backlog phase.
        events = _events(url, keys, args.events, rng)
        for i in range(0, len(events), 500):
            await store.commit(Change(events=events[i : i + 500]))
        t0 = time.perf_counter()
        for worker in workers:
            await worker.start()
        await _wait_drained(store, time.monotonic() + 120)
        backlog_secs = time.perf_counter() - t0
        backlog_rate = args.events / backlog_secs

        # Steady phase.
        tick = 0.005
        per_tick = args.rate * tick
        since = time.time()
        sent = 0
        carry = 0.0
        start = time.perf_counter()
        next_tick = start
        commits: set[asyncio.Task[None]] = set()

        async def commit(batch: list[OutboxEvent], node: int) -> None:
            await stores[node].commit(Change(events=batch))
            workers[node].wake()

        # Commits are concurrent, like API requests: a slow one does not hold back the next.
        while time.perf_counter() - start < args.duration:
            carry += per_tick
            n = int(carry)
            carry -= n
            if n:
                task = asyncio.create_task(commit(_events(url, keys, n, rng),
                                                  sent % args.nodes))
                commits.add(task)
                task.add_done_callback(commits.discard)
                sent += n
            next_tick += tick
            await asyncio.sleep(max(0.0, next_tick - time.perf_counter()))
        await asyncio.gather(*commits)
        produce_secs = time.perf_counter() - start
        await _wait_drained(store, time.monotonic() + 60)
        lat = await _latencies(store, since)
        for worker in workers:
            await worker.stop()
        for one in stores:
            await one.close()
    return {
        "backend": "postgresql" if args.database_url else "sqlite",
        "nodes": args.nodes,
        "backlog_events": args.events,
        "calls": args.calls,
        "connections": args.connections,
        "backlog_secs": round(backlog_secs, 3),
        "backlog_deliveries_per_s": round(backlog_rate),
        "steady_rate_target": args.rate,
        "steady_events": sent,
        "steady_rate_achieved": round(sent / produce_secs),
        "latency_p50_ms": round(statistics.median(lat) * 1000, 2),
        "latency_p99_ms": round(_pct(lat, 0.99) * 1000, 2),
        "latency_max_ms": round(max(lat) * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000, help="backlog events")
    parser.add_argument("--calls", type=int, default=200, help="distinct calls (ordering keys)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--per-destination", type=int, default=32,
                        help="connections to the one receiver (the setting's default)")
    parser.add_argument("--rate", type=int, default=2000, help="steady events/s")
    parser.add_argument("--duration", type=float, default=10.0, help="steady seconds")
    parser.add_argument("--database-url", default=None,
                        help="an empty PostgreSQL database (default: a temporary SQLite file)")
    parser.add_argument("--nodes", type=int, default=1,
                        help="stores and workers sharing the database (PostgreSQL only)")
    parser.add_argument("--json", type=Path, default=None, help="write results here")
    parser.add_argument("--receiver", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.nodes > 1 and not args.database_url:
        parser.error("--nodes > 1 needs --database-url: one node per SQLite file")
    if args.receiver:
        receiver_main(args.receiver)
        return

    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "port"
        child = subprocess.Popen([sys.executable, __file__, "--receiver", str(port_file)])
        try:
            for _ in range(200):
                if port_file.exists() and port_file.read_text():
                    break
                time.sleep(0.02)
            url = f"http://127.0.0.1:{int(port_file.read_text())}/webhooks"
            results: dict[str, object] = {}

            async def go() -> None:
                results.update(await bench(args, url))

            _run(go())
        finally:
            child.terminate()
            child.wait()
    results["machine"] = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    results["python"] = platform.python_version()
    results["host"] = socket.gethostname()
    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"{key:<{width}}  {value}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
