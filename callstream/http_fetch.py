"""One HTTP/1.1 request, as bytes, to another process of ours: its answer as bytes.

The ``--workers`` front asks every worker for ``/metrics`` with it: the answer is read
unchanged, so it is the worker's own; a bridge asks the owner of its other call to join
(:mod:`callstream.calls.remote_bridge`). (A node's commands forwarded to another node go on
kept-alive connections instead: :mod:`callstream.cluster.peers`.)
"""

from __future__ import annotations

import asyncio


async def fetch(host: str, port: int, request: bytes, *,
                max_body: int | None = None) -> tuple[bytes, bytes]:
    """Send ``request`` on a connection of its own; return the answer's (head, body).

    The body is ``Content-Length`` bytes, or, without one, what comes until the other
    side closes (send ``connection: close``).

    Raises:
        ValueError: the body is longer than ``max_body`` bytes."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length: int | None = None
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if max_body is not None and length is not None and length > max_body:
            raise ValueError(f"an answer of {length} bytes, over {max_body}")
        if length is not None:
            return head, await reader.readexactly(length)
        if max_body is None:
            return head, await reader.read()
        body = bytearray()
        while chunk := await reader.read(65536):
            body += chunk
            if len(body) > max_body:
                raise ValueError(f"an answer of over {max_body} bytes")
        return head, bytes(body)
    finally:
        writer.close()
