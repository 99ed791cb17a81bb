"""Start-up check of the default application's webhook URL: does anything listen there?

Without a receiver every incoming call parks unanswered until ``sip_park_timeout_secs``,
and nothing says why: the first webhook is given up only after minutes of retries. So
at start the server opens one TCP connection to the URL's host and port (no request
is sent) and logs a warning that names the URL and the fix when it is refused or does
not answer. It runs beside start-up, never delaying it, and is not repeated. Like every
outbound connection it goes only to an address the outbound policy allows
(``outbound/connect.py``); a refused one is reported, never connected to.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from callstream.outbound.connect import connect_tcp
from callstream.outbound.policy import OutboundDenied, OutboundPolicy

__all__ = ["PROBE_TIMEOUT_SECS", "probe_webhook_url"]

#: How long the start-up connect probe waits for the receiver's host.
PROBE_TIMEOUT_SECS = 2.0

_DEFAULT_PORTS = {"http": 80, "https": 443}


async def probe_webhook_url(url: str, policy: OutboundPolicy, *,
                            wait_secs: float = PROBE_TIMEOUT_SECS) -> str | None:
    """Connect to ``url``'s host and port once, where ``policy`` allows.

    Returns:
        ``None`` when the connection opened, else why not, in words
        ("connection refused", "no answer in 2 s", "cannot resolve ...").
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower())
    except ValueError as exc:
        return f"not a valid URL ({exc})"
    if not host or port is None:
        return "not an http(s) URL with a host"
    try:
        async with asyncio.timeout(wait_secs):
            sock = await connect_tcp(host, port, policy)
    except TimeoutError:
        return f"no answer in {wait_secs:g} s"
    except OutboundDenied as exc:
        return f"refused by the outbound policy: {exc}"
    except ConnectionRefusedError:
        return "connection refused"
    except OSError as exc:
        return exc.strerror.lower() if exc.strerror else str(exc)
    sock.close()
    return None
