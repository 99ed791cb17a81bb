"""Which worker answers an HTTP request: a pure function of its path.

A call's own resources (``/v2/calls/{id}``, ``/v2/calls/{id}/actions/...`` and TeXML's
``/v2/texml/Accounts/{account}/Calls/{id}/...``) go to the worker that owns the call,
named by the ``owner`` of its row in the shared store. Every other request (dial,
lists, applications, webhook deliveries, health) reads or writes only the store, so any
worker answers it; the front spreads those round-robin. ``/metrics`` is asked of all.
"""

from __future__ import annotations

from urllib.parse import unquote

_CALLS = "/v2/calls/"
_TEXML = ["v2", "texml", "Accounts"]

#: Asked of every worker and summed (:mod:`.metrics_merge`).
METRICS = b"/metrics"


def call_of_path(url: bytes) -> str | None:
    """The call_control_id a request URL addresses, or ``None`` for any other URL."""
    path = url.partition(b"?")[0].decode("latin-1")
    if path.startswith(_CALLS):
        call_id = path[len(_CALLS):].partition("/")[0]
        return unquote(call_id) or None
    parts = path.split("/")  # '', 'v2', 'texml', 'Accounts', account, 'Calls', id, ...
    if len(parts) > 6 and parts[1:4] == _TEXML and parts[5] == "Calls":
        return unquote(parts[6]) or None
    return None
