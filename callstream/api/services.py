"""What the routes reach through ``request.app.state.services``.

Built once by the composition root (``callstream.server``); a feature that is off (or a
test app that needs none) leaves its field None, and its routes answer "not running".
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from callstream.calls.control import CallControl
from callstream.config import Settings
from callstream.console.feed import ConsoleFeed
from callstream.console.sessions import ConsoleSessions
from callstream.forking.manager import ForkManager
from callstream.outbound.policy import DEFAULT_POLICY, OutboundPolicy
from callstream.store.sql import SqlStore
from callstream.streaming.manager import StreamManager
from callstream.transcription.manager import TranscriptionManager
from callstream.webhooks.worker import WebhookWorker
from callstream.webrtc.gateway import WebRtcGateway


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    store: SqlStore
    calls: CallControl
    outbound: OutboundPolicy = DEFAULT_POLICY  # settings.outbound_policy, built once
    webhooks: WebhookWorker | None = None
    streams: StreamManager | None = None
    forks: ForkManager | None = None
    transcriptions: TranscriptionManager | None = None
    webrtc: WebRtcGateway | None = None
    #: The console (None: off, docs/console.md).
    console_sessions: ConsoleSessions | None = None
    console_feed: ConsoleFeed | None = None


async def services(request: Request) -> Services:
    # async: FastAPI runs a plain ``def`` dependency in a thread pool, a hop to a thread
    # and back on every request (tests/api/test_routes_stay_on_the_loop.py).
    svc: Services = request.app.state.services
    return svc
