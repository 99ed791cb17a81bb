"""The open-files limit: raised to its hard maximum when the server starts.

Every call holds sockets (RTP, RTCP, WebSockets, forks) beside the HTTP and SIP
connections; under the common soft limit of 1,024 a few hundred idle connections were
enough to make new calls fail with ``Too many open files``. The hard limit is what the
administrator allows; the soft one is only a default, so the server takes all of it.
"""

from __future__ import annotations

import logging
import resource

log = logging.getLogger(__name__)

#: Used when the hard limit is unlimited (Linux refuses RLIM_INFINITY for files).
UNLIMITED_FALLBACK = 1 << 20
#: Descriptors to keep for calls (RTP, RTCP, WebSockets, forks), the store and logs
#: beside the HTTP and SIP connection caps; below that a start-up warning says so.
RESERVE_FOR_CALLS = 1024


def raise_open_files_limit() -> int:
    """Set the soft ``RLIMIT_NOFILE`` to the hard one; return the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = UNLIMITED_FALLBACK if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("open files limit stays %d: cannot raise it to %d: %s",
                        soft, target, exc)
            return soft
        soft = target
    log.info("open files limit: %d", soft)
    return soft


def check_open_files_limit(limit: int, connection_caps: int) -> None:
    """Warn when the connection caps could use the descriptors calls need."""
    if limit < connection_caps + RESERVE_FOR_CALLS:
        log.warning(
            "open files limit %d is below the HTTP and SIP/TCP connection caps (%d) plus "
            "%d for calls: raise the hard limit (LimitNOFILE=, ulimit -Hn) or lower "
            "CALLSTREAM_HTTP_MAX_CONNECTIONS / CALLSTREAM_SIP_TCP_MAX_CONNECTIONS",
            limit, connection_caps, RESERVE_FOR_CALLS)
