"""Request-time check of the URLs an API user names (webhook, stream and callback URLs).

A URL whose host is, or resolves to, an address the outbound policy refuses is answered
``422`` with code ``10015`` and a ``source.pointer`` to the field, before anything is
stored. A literal address is judged without DNS. A name that does not resolve within
:data:`RESOLVE_TIMEOUT_SECS` is accepted: DNS may be set up after the application
is, and every connection is checked again when it opens (:mod:`callstream.outbound.connect`),
which is the check that cannot be raced.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlsplit

from callstream.api.errors import ApiError
from callstream.outbound.connect import resolve
from callstream.outbound.metrics import OUTBOUND_DENIED
from callstream.outbound.policy import OutboundDenied, OutboundPolicy

__all__ = ["RESOLVE_TIMEOUT_SECS", "check_urls"]

log = logging.getLogger(__name__)

#: How long an API request waits for a URL's host name to resolve.
RESOLVE_TIMEOUT_SECS = 2.0
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


async def check_urls(policy: OutboundPolicy, urls: dict[str, str | None]) -> None:
    """Check each URL of ``urls`` (JSON pointer of its field -> URL or None).

    Raises:
        ApiError: 10015 naming the field, the address and the rule, for the first
            refused URL; 10003 for a URL whose port is not a number.
    """
    for pointer, url in urls.items():
        if url:
            await _check(policy, pointer, url)


async def _check(policy: OutboundPolicy, pointer: str, url: str) -> None:
    try:
        parts = urlsplit(url)
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower(), 80)
    except ValueError as exc:
        raise ApiError(422, "10003", "Invalid URL", f"{url!r}: {exc}.",
                       pointer=pointer) from exc
    host = parts.hostname
    if not host:  # the schema's URL check already requires one
        return
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_SECS):
            await resolve(host, port, policy)
    except OutboundDenied as exc:
        OUTBOUND_DENIED.labels("request").inc()
        log.warning("refused %s %s: %s", pointer.lstrip("/"), url, exc)
        raise ApiError(
            422, "10015", "Destination not allowed",
            f"Refused destination: {exc}.",
            pointer=pointer) from exc
    except (OSError, TimeoutError) as exc:
        log.debug("%s %s does not resolve now (%r); checked again at connect", pointer, url, exc)
