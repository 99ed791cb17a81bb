"""A stream's client frames (RFC 6455 §5), masked with keys from a pool of OS randomness.

Every frame a client sends is masked (§5.3): "the client MUST pick a fresh masking key
from the set of allowed 32-bit values. The masking key needs to be unpredictable; thus,
the masking key MUST be derived from a strong source of entropy". ``websockets`` draws
each key with ``secrets.token_bytes(4)``: one ``getrandom`` system call per frame, two to
three per stream per 20 ms on the hot path. :class:`MaskPool` draws :data:`POOL_BYTES` at
once from the same source (``os.urandom``) and hands them out four bytes at a time, each
once: a key is as unpredictable to the consumer as before (it never sees the pool, only
keys already used), for one system call per 1,024 frames.

:func:`text_frame` and :func:`ping_frame` build whole, unfragmented frames byte for byte
as ``websockets``' ``Frame.serialize(mask=True)`` does (FIN set, no RSV bits, the shortest
length encoding), the key aside. Sans-I/O: bytes in, bytes out.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence

try:  # websockets' C masking, and its pure-Python one where the extension is not built
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - the wheels ship it
    from websockets.utils import apply_mask

__all__ = ["MASKS", "MAX_PING_PAYLOAD", "POOL_BYTES", "MaskPool", "ping_frame", "text_frame"]

#: Random bytes drawn from the OS at a time: 1,024 masking keys.
POOL_BYTES = 4096
KEY_BYTES = 4
#: A control frame's payload is at most 125 bytes (RFC 6455 §5.5).
MAX_PING_PAYLOAD = 125

_FIN_TEXT = 0x81  # FIN | opcode 0x1
_FIN_PING = 0x89  # FIN | opcode 0x9
_MASKED = 0x80
_LENGTH_16 = 126  # §5.2: the length follows in 16 bits
_LENGTH_64 = 127  # ... in 64 bits
_HEAD_16 = struct.Struct("!BBH")
_HEAD_64 = struct.Struct("!BBQ")


class MaskPool:
    """Masking keys, drawn from ``os.urandom`` :data:`POOL_BYTES` at a time; each used once."""

    __slots__ = ("_at", "_pool", "_size")

    def __init__(self, size: int = POOL_BYTES) -> None:
        if size < KEY_BYTES or size % KEY_BYTES:
            raise ValueError(f"a mask pool holds whole {KEY_BYTES}-byte keys, not {size} bytes")
        self._size = size
        self._pool = b""
        self._at = 0

    def reset(self) -> None:
        """Forget the keys not used yet (a forked child must not reuse its parent's)."""
        self._pool = b""
        self._at = 0

    def key(self) -> bytes:
        """A fresh 4-byte masking key."""
        at = self._at
        if at >= len(self._pool):
            self._pool = os.urandom(self._size)
            at = 0
        self._at = at + KEY_BYTES
        return self._pool[at : at + KEY_BYTES]

    def text_frames(self, messages: Sequence[bytes]) -> list[bytes]:
        """Each of ``messages`` as one whole text frame (:func:`text_frame`), each masked
        with a fresh key: the keys drawn here rather than a :meth:`key` call each."""
        out = []
        pool, at = self._pool, self._at
        for data in messages:
            if at >= len(pool):
                pool, at = os.urandom(self._size), 0
            out.append(text_frame(data, pool[at : at + KEY_BYTES]))
            at += KEY_BYTES
        self._pool, self._at = pool, at
        return out


#: The process's pool, shared by its streams; a forked child starts a fresh one.
MASKS = MaskPool()
os.register_at_fork(after_in_child=MASKS.reset)


def text_frame(data: bytes, key: bytes) -> bytes:
    """One whole text message (``data``: UTF-8), masked with ``key``."""
    length = len(data)
    if length < _LENGTH_16:
        head = bytes((_FIN_TEXT, _MASKED | length))
    elif length < 65536:
        head = _HEAD_16.pack(_FIN_TEXT, _MASKED | _LENGTH_16, length)
    else:
        head = _HEAD_64.pack(_FIN_TEXT, _MASKED | _LENGTH_64, length)
    return b"".join((head, key, apply_mask(data, key)))


def ping_frame(data: bytes, key: bytes) -> bytes:
    """A ping carrying ``data`` (at most :data:`MAX_PING_PAYLOAD` bytes), masked with ``key``.

    Raises:
        ValueError: ``data`` is longer than a control frame may carry.
    """
    if len(data) > MAX_PING_PAYLOAD:
        raise ValueError(f"a ping carries at most {MAX_PING_PAYLOAD} bytes, not {len(data)}")
    return b"".join((bytes((_FIN_PING, _MASKED | len(data))), key, apply_mask(data, key)))
