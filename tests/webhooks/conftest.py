from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from callstream.config import Settings
from callstream.store.records import Change, OutboxEvent
from callstream.store.sql import SqlStore
from callstream.webhooks.metrics import WebhookMetrics
from callstream.webhooks.payloads import make_event
from callstream.webhooks.retry import RetryPolicy
from callstream.webhooks.signing import WebhookSigner
from callstream.webhooks.worker import WebhookWorker
from tests.webhooks.receivers import Behaviour, Receiver


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        webhook_retry_delays=[0.05, 0.1],
        webhook_retry_jitter=0.0,
        webhook_max_connections=8,
    )


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqlStore]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'callstream.db'}"
    else:
        url = request.getfixturevalue("postgres").new_database()
    s = SqlStore(url)
    await s.open()
    yield s
    await s.close()


@pytest.fixture
def signer() -> WebhookSigner:
    return WebhookSigner(os.urandom(32))


@pytest.fixture
async def receivers() -> AsyncIterator[Callable[..., Awaitable[Receiver]]]:
    started: list[Receiver] = []

    async def start(behaviour: Behaviour | None = None, **kw: Any) -> Receiver:
        r = Receiver(behaviour, **kw) if behaviour is not None else Receiver(**kw)
        await r.start()
        started.append(r)
        return r

    yield start
    for r in started:
        await r.close()


@pytest.fixture
async def workers(
    store: SqlStore, settings: Settings, signer: WebhookSigner
) -> AsyncIterator[Callable[..., Awaitable[WebhookWorker]]]:
    started: list[WebhookWorker] = []

    async def start(**kw: Any) -> WebhookWorker:
        kw.setdefault("metrics", WebhookMetrics(CollectorRegistry()))
        kw.setdefault("policy", RetryPolicy(delays=(0.05, 0.1), jitter=0.0, budget_secs=0.0))
        w = WebhookWorker(kw.pop("store", store), kw.pop("settings", settings), signer, **kw)
        await w.start()
        started.append(w)
        return w

    yield start
    for w in started:
        await w.stop(grace=1.0)


def event(
    url: str | None,
    key: str = "call-1",
    *,
    event_type: str = "call.initiated",
    payload: dict[str, Any] | None = None,
    **kw: Any,
) -> OutboxEvent:
    data = make_event(event_type, payload or {"call_session_id": key}, time.time())
    return OutboxEvent(
        id=data["id"],
        event_type=event_type,
        ordering_key=key,
        data=data,
        url=url,
        call_control_id=kw.pop("call_control_id", f"v3:{key}"),
        **kw,
    )


async def enqueue(store: SqlStore, *events: OutboxEvent) -> list[str]:
    await store.commit(Change(events=list(events)))
    return [e.id for e in events]


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], within: float = 10.0, step: float = 0.02
) -> None:
    async with asyncio.timeout(within):
        while not await predicate():  # noqa: ASYNC110 - polling the store is the point
            await asyncio.sleep(step)


def new_key() -> str:
    return uuid.uuid4().hex
