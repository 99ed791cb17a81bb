"""One HTTP/1.1 request, as bytes, to another process of ours: its answer as bytes.

The ``--workers`` front asks every worker for ``/metrics`` with it: the answer is read
unchanged, so it is the worker's own. (A node's commands forwarded to another node go on
kept-alive connections instead: :mod:`callstream.cluster.peers`.)
"""

from __future__ import annotations

import asyncio


async def fetch(host: str, port: int, request: bytes) -> tuple[bytes, bytes]:
    """Send ``request`` on a connection of its own; return the answer's (head, body).

    The body is ``Content-Length`` bytes, or, without one, what comes until the other
    side closes (send ``connection: close``)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length: int | None = None
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await (reader.read() if length is None else reader.readexactly(length))
        return head, body
    finally:
        writer.close()
