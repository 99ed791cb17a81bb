"""A worker's wake-ups of the supervisor's webhook delivery: one per turn of its loop."""

from __future__ import annotations

import asyncio
import socket

from callstream.workers.relay import Wake, decode
from callstream.workers.seat import WorkerSeat


def read_all(sock: socket.socket) -> list[bytes]:
    messages = []
    while True:
        try:
            messages.append(sock.recv(100))
        except BlockingIOError:
            return messages


def test_the_commits_of_one_loop_turn_wake_the_supervisor_once() -> None:
    ours, supervisor = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    supervisor.setblocking(False)
    with ours, supervisor, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sip:
        seat = WorkerSeat(index=0, count=2, node="n", relay=ours, sip=sip)

        async def commits() -> tuple[list[bytes], list[bytes]]:
            for _ in range(5):  # five commits with events before the loop turns
                seat.wake_webhooks()
            assert read_all(supervisor) == []  # sent once the turn ends
            await asyncio.sleep(0)
            first = read_all(supervisor)
            seat.wake_webhooks()  # a later turn wakes it again
            await asyncio.sleep(0)
            return first, read_all(supervisor)

        first, later = asyncio.run(commits())
    assert len(first) == 1 and isinstance(decode(first[0]), Wake)
    assert len(later) == 1 and isinstance(decode(later[0]), Wake)
