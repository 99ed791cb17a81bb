"""Which worker answers an HTTP request: a pure function of its path.

A call's own resources (``/v2/calls/{id}`` and ``/v2/calls/{id}/actions/...``) go to the
worker that owns the call, named by the ``owner`` of its row in the shared store. Every
other request (dial, lists, applications, webhook deliveries, health, metrics) reads or
writes only the store, so any worker answers it; the front spreads those round-robin.
"""

from __future__ import annotations

from urllib.parse import unquote

_CALLS = "/v2/calls/"

#: Asked of every worker and summed (:mod:`.metrics_merge`).
METRICS = b"/metrics"


def call_of_path(url: bytes) -> str | None:
    """The call_control_id a request URL addresses, or ``None`` for any other URL."""
    path = url.partition(b"?")[0].decode("latin-1")
    if not path.startswith(_CALLS):
        return None
    call_id = path[len(_CALLS):].partition("/")[0]
    return unquote(call_id) or None
