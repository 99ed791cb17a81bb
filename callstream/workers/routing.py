"""Which worker answers an HTTP request: a pure function of its path.

A call's own resources (``/v2/calls/{id}``, ``/v2/calls/{id}/actions/...``, TeXML's
``/v2/texml/Accounts/{account}/Calls/{id}/...`` and ``/internal/calls/{id}/...``) go to
the worker that owns the call, named by the ``owner`` of its row in the shared store.
A browser call's requests go to the worker that holds it, named by a hash of what they
carry (:func:`webrtc_key`): the session in ``DELETE /v2/webrtc/sessions/{id}``, the token
of an offer that brings one. Every other request (dial, lists, applications, webhook
deliveries, health, tokens, an offer with an API key) reads or writes only the store or
starts something new, so any worker answers it; the front spreads those round-robin.
``/metrics`` is asked of all.
"""

from __future__ import annotations

from urllib.parse import unquote

from callstream.webrtc.tokens import TOKEN_PREFIX

#: A call's API resources, and what the processes of a deployment ask its owner
#: (api/routes/internal.py).
_CALL_PREFIXES = ("/v2/calls/", "/internal/calls/")
_TEXML = ["v2", "texml", "Accounts"]

#: Asked of every worker and summed (:mod:`.metrics_merge`).
METRICS = b"/metrics"
_WEBRTC_SESSIONS = "/v2/webrtc/sessions"


def call_of_path(url: bytes) -> str | None:
    """The call_control_id a request URL addresses, or ``None`` for any other URL."""
    path = url.partition(b"?")[0].decode("latin-1")
    for prefix in _CALL_PREFIXES:
        if path.startswith(prefix):
            call_id = path[len(prefix):].partition("/")[0]
            return unquote(call_id) or None
    parts = path.split("/")  # '', 'v2', 'texml', 'Accounts', account, 'Calls', id, ...
    if len(parts) > 6 and parts[1:4] == _TEXML and parts[5] == "Calls":
        return unquote(parts[6]) or None
    return None


def webrtc_key(url: bytes, authorization: bytes | None) -> str | None:
    """What names the worker of a browser call's request: a session's name, or the
    random part of the token an offer brings; ``None`` for any other request."""
    path = url.partition(b"?")[0].decode("latin-1")
    if path.startswith(_WEBRTC_SESSIONS + "/"):
        return unquote(path[len(_WEBRTC_SESSIONS) + 1:].partition("/")[0]) or None
    if path != _WEBRTC_SESSIONS or authorization is None:
        return None
    scheme, _, credential = authorization.decode("latin-1").strip().partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential.startswith(TOKEN_PREFIX):
        return None
    return credential[len(TOKEN_PREFIX):] or None
