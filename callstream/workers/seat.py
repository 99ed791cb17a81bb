"""What a worker process is given by its supervisor: its place and two sockets."""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass, field

from callstream.workers.dispatch import worker_owner
from callstream.workers.relay import WAKE_MESSAGE, encode_ready

log = logging.getLogger(__name__)


@dataclass(slots=True)
class WorkerSeat:
    """Worker ``index`` of ``count`` on node ``node``.

    Attributes:
        relay: This worker's end of its ``AF_UNIX`` datagram pair with the supervisor
            (:mod:`callstream.workers.relay`).
        sip: The public SIP UDP socket, shared with the supervisor; the worker only
            sends on it (the supervisor alone reads it), so answers leave from the
            port the caller wrote to.
    """

    index: int
    count: int
    node: str
    relay: socket.socket
    sip: socket.socket
    _wake_due: bool = field(default=False, init=False)

    @property
    def owner(self) -> str:
        return worker_owner(self.node, self.index)

    @property
    def owners_elsewhere(self) -> frozenset[str]:
        """The other workers' owners: their calls are alive in their processes."""
        return frozenset(worker_owner(self.node, i) for i in range(self.count)
                         if i != self.index)

    def wake_webhooks(self) -> None:
        """Tell the supervisor, which delivers every worker's webhooks, that rows wait:
        once per turn of the event loop, as its next claim takes every row committed."""
        if not self._wake_due:
            self._wake_due = True
            asyncio.get_running_loop().call_soon(self._send_wake)

    def _send_wake(self) -> None:
        self._wake_due = False
        try:
            self.relay.send(WAKE_MESSAGE)
        except BlockingIOError:
            pass  # wake-ups already queued: the supervisor claims everything due anyway
        except OSError as exc:  # the supervisor is gone; its poll finds the rows later
            log.debug("cannot wake the webhook deliverer: %s", exc)

    def ready(self, http_port: int) -> None:
        self.relay.send(encode_ready(http_port))
