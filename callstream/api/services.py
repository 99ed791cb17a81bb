"""What the routes reach through ``request.app.state.services``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request

from callstream.calls.control import CallControl
from callstream.config import Settings
from callstream.outbound.policy import DEFAULT_POLICY, OutboundPolicy
from callstream.store.sql import SqlStore


@dataclass(slots=True)
class Services:
    settings: Settings
    store: SqlStore
    calls: CallControl
    outbound: OutboundPolicy = DEFAULT_POLICY  # settings.outbound_policy, built once
    webhooks: Any = None  # callstream.webhooks.worker.WebhookWorker once started
    # Feature managers, built in server.Server._start_features (None: not running).
    streams: Any = None  # callstream.streaming
    forks: Any = None  # callstream.forking
    transcriptions: Any = None  # callstream.transcription
    # The console (None: off): callstream.console.sessions.ConsoleSessions, .feed.ConsoleFeed.
    webrtc: Any = None  # callstream.webrtc.gateway.WebRtcGateway
    console_sessions: Any = None
    console_feed: Any = None


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc
