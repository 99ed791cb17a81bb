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
