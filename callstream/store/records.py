"""The typed rows the store reads and writes. Callers never see SQL rows."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    prefix: str  # first characters of the key, shown by `keys list`
    key_hash: str  # sha256 hex of the whole key
    label: str
    created_at: str
    revoked_at: str | None = None


#: The application inbound calls belong to; it always exists (created at start).
DEFAULT_APP_ID = "default"


@dataclass(frozen=True, slots=True)
class Application:
    """A Call Control Application: where a call's webhooks go."""

    id: str
    application_name: str
    webhook_event_url: str | None
    webhook_event_failover_url: str | None
    webhook_timeout_secs: int | None
    active: bool
    created_at: str
    updated_at: str
    extra: dict[str, Any] = field(default_factory=dict)  # Telnyx fields we keep but don't act on


@dataclass(frozen=True, slots=True)
class CallRecord:
    """A call leg's durable state; the owner process keeps the live objects."""

    call_control_id: str
    call_leg_id: str
    call_session_id: str
    connection_id: str
    direction: str  # "incoming" | "outgoing"
    from_: str
    to: str
    state: str
    is_alive: bool
    start_time: str
    owner: str
    client_state: str | None = None
    answer_time: str | None = None
    end_time: str | None = None
    hangup_cause: str | None = None
    hangup_source: str | None = None
    sip_hangup_cause: str | None = None
    webhook_url: str | None = None
    webhook_failover_url: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CallResource:
    """A stream, fork or transcription attached to a call."""

    id: str
    call_control_id: str
    kind: str  # "stream" | "fork" | "transcription"
    status: str
    params: dict[str, Any]
    created_at: str
    updated_at: str


@dataclass(frozen=True, slots=True)
class Receipt:
    """What the API answered a command, kept so a repeat of its ``command_id`` gets the
    same bytes. ``api/`` renders it; Call Control stores it and hands it back unread."""

    status_code: int
    body: bytes


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """The answer given to ``command_id`` on a call (``call_control_id`` is "" for dial)."""

    call_control_id: str
    command_id: str
    receipt: Receipt
    created_at: str


class OutboxStatus(enum.StrEnum):
    """Values are the strings stored in ``webhook_outbox.status``."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """A webhook to send, written in the same transaction as the change that caused it.

    ``data`` is the event object (``event_type``, ``id``, ``occurred_at``, ``payload``,
    ``record_type``); the delivery worker adds ``meta`` and signs each attempt.
    ``ordering_key`` (the call session) serialises delivery per call.
    """

    id: str
    event_type: str
    ordering_key: str
    data: dict[str, Any]
    url: str | None
    failover_url: str | None = None
    timeout_secs: float = 10.0
    method: str = "POST"
    content_type: str = "json"  # "json" | "form" (TeXML status callbacks)
    call_control_id: str | None = None


@dataclass(slots=True)
class Change:
    """Everything one command or call event changes, committed in one transaction."""

    calls: list[CallRecord] = field(default_factory=list)
    resources: list[CallResource] = field(default_factory=list)
    idempotency: list[IdempotencyRecord] = field(default_factory=list)
    events: list[OutboxEvent] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.calls or self.resources or self.idempotency or self.events)
