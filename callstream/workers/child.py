"""A worker process: ``python -m callstream.workers.child INDEX COUNT NODE RELAY_FD SIP_FD``.

Started only by the supervisor (:mod:`.supervisor`), which writes the settings as JSON on
its standard input and passes its relay socket and the public SIP socket as the two
descriptors. It runs a whole :class:`~callstream.server.Server` with this seat.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import socket
import sys

from callstream.config import Settings
from callstream.logs import setup_logging
from callstream.server import Server
from callstream.workers.seat import WorkerSeat

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """SIGKILL when the supervisor dies: the node dies whole, as one process does, and
    the next start ends its calls once. (A worker still hanging up would race the next
    supervisor's worker of the same name over the same calls.)"""
    # Not Linux: no prctl, and the supervisor's stop still ends us.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def main(argv: list[str]) -> None:
    index, count, node, relay_fd, sip_fd = argv
    _die_with_parent()
    settings = Settings.model_validate_json(sys.stdin.buffer.read())
    setup_logging(settings.log_format, settings.log_level)
    seat = WorkerSeat(
        index=int(index), count=int(count), node=node,
        relay=socket.socket(fileno=int(relay_fd)), sip=socket.socket(fileno=int(sip_fd)))
    server = Server(settings, seat)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        import asyncio

        asyncio.run(server.run())
    else:
        uvloop.run(server.run())


if __name__ == "__main__":
    main(sys.argv[1:])
