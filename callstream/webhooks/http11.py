"""HTTP/1.1 for webhooks, sans-I/O: serialize one request, parse one response.

A webhook attempt is always the same exchange: one POST (or a GET for form callbacks)
with a known body, then a status line whose class decides the outcome, then a body we
keep the start of. That small subset, written here over bytes, costs a fifth of what
httpx + httpcore + h11 spent per delivery in ``bench/webhooks.py`` (their generality:
per-request header normalisation, pool scans, event objects, anyio scopes).

:class:`ResponseParser` accepts ``Content-Length``, ``chunked`` and close-delimited
bodies, skips ``1xx`` interim answers, and says whether the connection can carry the
next request (``keep_alive``). Framing it can't trust raises :class:`HttpProtocolError`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

#: A status line plus headers longer than this is refused.
MAX_HEAD_BYTES = 64 * 1024


class HttpProtocolError(Exception):
    """The receiver's answer is not HTTP/1.x we can frame."""


def build_request(
    method: str, target: str, host: str, headers: Iterable[tuple[str, str]], body: bytes
) -> bytes:
    """The request's bytes: ``target`` is the path and query, ``host`` the Host header."""
    lines = [f"{method} {target} HTTP/1.1", f"host: {host}"]
    for name, value in headers:
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise ValueError(f"header {name!r} contains a line break")
        lines.append(f"{name}: {value}")
    if body or method == "POST":
        lines.append(f"content-length: {len(body)}")
    head = "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n"
    return head + body


class _State(enum.Enum):
    HEAD = "head"
    LENGTH = "length"
    CHUNK_SIZE = "chunk_size"
    CHUNK_DATA = "chunk_data"
    CHUNK_END = "chunk_end"  # the CRLF after a chunk's data
    TRAILER = "trailer"
    UNTIL_CLOSE = "until_close"
    DONE = "done"


class ResponseParser:
    """Feed it the bytes a connection receives; it fills in the answer as it can.

    Args:
        keep: how many body bytes to keep (the rest are counted and dropped).
        head_request: the request was HEAD (no body follows whatever the headers say).
    """

    def __init__(self, keep: int = 1024, *, head_request: bool = False) -> None:
        self.status: int | None = None  # set once the final status line and headers are in
        self.reason = ""
        self.headers: dict[str, str] = {}
        self.body = bytearray()
        self.body_size = 0
        self.keep_alive = True
        self._keep = keep
        self._head_request = head_request
        self._state = _State.HEAD
        self._buffer = bytearray()
        self._remaining = 0

    @property
    def complete(self) -> bool:
        return self._state is _State.DONE

    def feed(self, data: bytes) -> None:
        """Consume received bytes; raises :class:`HttpProtocolError` on bad framing."""
        self._buffer += data
        while self._buffer and self._state is not _State.DONE:
            if not self._step():
                break

    def feed_eof(self) -> None:
        """The receiver closed the connection."""
        self.keep_alive = False
        if self._state is _State.UNTIL_CLOSE:
            self._state = _State.DONE
        elif self._state is not _State.DONE and self.status is not None:
            raise HttpProtocolError("connection closed before the end of the answer's body")

    def _step(self) -> bool:
        """Advance once; False when more bytes are needed."""
        buf = self._buffer
        state = self._state
        if state is _State.HEAD:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD_BYTES:
                    raise HttpProtocolError(f"answer head over {MAX_HEAD_BYTES} bytes")
                return False
            head = bytes(buf[:end])
            del buf[: end + 4]
            self._head(head)
            return True
        if state is _State.LENGTH:
            take = min(self._remaining, len(buf))
            self._body(buf[:take])
            del buf[:take]
            self._remaining -= take
            if self._remaining == 0:
                self._state = _State.DONE
            return True
        if state is _State.UNTIL_CLOSE:
            self._body(buf)
            buf.clear()
            return True
        if state is _State.CHUNK_SIZE:
            end = buf.find(b"\r\n")
            if end < 0:
                if len(buf) > 1024:
                    raise HttpProtocolError("chunk size line over 1024 bytes")
                return False
            line = bytes(buf[:end]).split(b";", 1)[0].strip()
            del buf[: end + 2]
            try:
                self._remaining = int(line, 16)
            except ValueError:
                raise HttpProtocolError(f"bad chunk size {line[:20]!r}") from None
            if self._remaining < 0:
                raise HttpProtocolError("negative chunk size")
            self._state = _State.CHUNK_DATA if self._remaining else _State.TRAILER
            return True
        if state is _State.CHUNK_DATA:
            take = min(self._remaining, len(buf))
            self._body(buf[:take])
            del buf[:take]
            self._remaining -= take
            if self._remaining == 0:
                self._state = _State.CHUNK_END
            return True
        if state is _State.CHUNK_END:
            if len(buf) < 2:
                return False
            if buf[:2] != b"\r\n":
                raise HttpProtocolError("chunk data not followed by CRLF")
            del buf[:2]
            self._state = _State.CHUNK_SIZE
            return True
        # TRAILER: header lines until an empty one.
        end = buf.find(b"\r\n")
        if end < 0:
            return False
        del buf[: end + 2]
        if end == 0:
            self._state = _State.DONE
        return True

    def _head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise HttpProtocolError(f"not an HTTP/1.x status line: {lines[0][:60]!r}")
        status = int(parts[1])
        if not 100 <= status <= 999:
            raise HttpProtocolError(f"status {status} out of range")
        if 100 <= status < 200 and status != 101:
            return  # interim answer (100 Continue, 103 Early Hints): the real one follows
        headers: dict[str, str] = {}
        for raw in lines[1:]:
            name, sep, value = raw.partition(b":")
            if not sep or not name or name != name.strip():
                raise HttpProtocolError(f"malformed header line {raw[:60]!r}")
            key = name.decode("latin-1").lower()
            text = value.strip().decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        self.status = status
        self.reason = parts[2].decode("latin-1") if len(parts) > 2 else ""
        self.headers = headers
        connection = headers.get("connection", "").lower()
        if parts[0] == b"HTTP/1.0":
            self.keep_alive = "keep-alive" in connection
        elif "close" in connection:
            self.keep_alive = False
        if self._head_request or status in (204, 304) or status == 101:
            self._state = _State.DONE
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            self._state = _State.CHUNK_SIZE
        elif "content-length" in headers:
            length = headers["content-length"]
            if not length.isdigit():
                raise HttpProtocolError(f"bad content-length {length[:20]!r}")
            self._remaining = int(length)
            self._state = _State.LENGTH if self._remaining else _State.DONE
        else:
            self.keep_alive = False
            self._state = _State.UNTIL_CLOSE

    def _body(self, data: bytes | bytearray) -> None:
        self.body_size += len(data)
        room = self._keep - len(self.body)
        if room > 0:
            self.body += data[:room]
