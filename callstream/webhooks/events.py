"""Outbox rows for webhook events: an event's ``data`` plus where and how it is sent.

The one place a row is made: Call Control events (:func:`callstream.calls.events.call_event`
adds the call's URLs) and TeXML status callbacks (form-encoded, their own URL and
method) both come here. The row's id is ``data.id``, which the Standard Webhooks
``webhook-id`` header carries.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from callstream.store.records import OutboxEvent
from callstream.webhooks.payloads import BodyFormat

DEFAULT_TIMEOUT_SECS = 10.0


def outbox_event(
    data: Mapping[str, Any],
    *,
    ordering_key: str,
    url: str | None,
    failover_url: str | None = None,
    timeout_secs: float = DEFAULT_TIMEOUT_SECS,
    method: str = "POST",
    body_format: BodyFormat = BodyFormat.JSON,
    call_control_id: str | None = None,
) -> OutboxEvent:
    """The outbox row for ``data`` (from :func:`~callstream.webhooks.payloads.make_event` or
    :func:`~callstream.webhooks.payloads.make_texml_stream_callback`).

    Args:
        ordering_key: events with the same key are delivered one after another, in
            commit order; use the call session id.
        url: the primary URL; ``None`` falls back to the ``webhook_url`` setting at
            delivery time.
        failover_url: tried when the primary fails (see :mod:`callstream.webhooks.retry`).
        method: ``POST``, or ``GET`` for a form callback sent as a query string.
    """
    method = method.upper()
    if method not in ("POST", "GET"):
        raise ValueError(f"webhook method must be POST or GET, got {method!r}")
    return OutboxEvent(
        id=str(data["id"]),
        event_type=str(data["event_type"]),
        ordering_key=ordering_key,
        data=dict(data),
        url=url,
        failover_url=failover_url,
        timeout_secs=timeout_secs,
        method=method,
        content_type=body_format.value,
        call_control_id=call_control_id,
    )
