"""The one piece of HTTP/1.1 the benches' minimal servers need: split requests apart."""

from __future__ import annotations


def take_request(buf: bytes) -> tuple[bytes, bytes] | None:
    """``(body, rest)`` for the first complete request in ``buf`` (framed by its
    ``Content-Length``), or ``None`` until more bytes arrive."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = buf[:end].lower()
    at = head.find(b"content-length:")
    length = 0
    if at >= 0:
        stop = head.find(b"\r\n", at)
        length = int(head[at + 15 : stop if stop >= 0 else None])
    if len(buf) < end + 4 + length:
        return None
    return buf[end + 4 : end + 4 + length], buf[end + 4 + length :]
