"""Which worker owns a SIP message, a token, a call row: pure functions, no sockets.

SIP: the owner of a message is ``crc32(key) % workers``, where the key is its Call-ID up
to the first ``@``. A worker draws every token its SIP endpoint makes (tags, branches,
the local part of the Call-IDs of the calls it places) until the token hashes to
itself (:func:`owned_token`), so the answers to its own requests come back to it with no
table anywhere. Incoming calls are spread by the caller's Call-ID.

REST: a call row's ``owner`` names the worker (:func:`worker_owner`); the front reads it.
A browser call's token and session id hash to the worker that issued them
(:func:`owned_token` again, ``token_urlsafe`` this time), so the front routes the offer
a token brings, and the session's ``DELETE``, with no table either.
"""

from __future__ import annotations

import secrets
import zlib
from collections.abc import Callable

#: Bytes of a datagram scanned for the Call-ID: it is in the header section, and a
#: message with a longer header section is refused by the worker's parser anyway.
MAX_HEAD_SCAN = 8192

_CALL_ID_NAMES = (b"call-id", b"i")


def call_id_key(datagram: bytes) -> bytes | None:
    """The Call-ID of a SIP datagram up to its ``@``; ``None`` when it has none."""
    head = datagram[:MAX_HEAD_SCAN]
    end = head.find(b"\r\n\r\n")
    if end >= 0:
        head = head[:end]
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() in _CALL_ID_NAMES:
            return value.strip().partition(b"@")[0] or None
    return None


def worker_for_key(key: bytes, workers: int) -> int:
    return zlib.crc32(key) % workers


def worker_for_datagram(datagram: bytes, workers: int) -> int:
    """The worker that owns this message's dialog (worker 0 for one without a Call-ID,
    which its parser then answers or drops)."""
    key = call_id_key(datagram)
    return 0 if key is None else worker_for_key(key, workers)


def owned_token(index: int, workers: int, draw: Callable[[int], str] = secrets.token_hex
                ) -> Callable[[int], str]:
    """A ``draw`` (``secrets.token_hex`` or ``token_urlsafe``) whose tokens hash to worker
    ``index`` of ``workers``: each draw keeps 1 in ``workers``, so a token costs
    ``workers`` draws on average."""

    def token(nbytes: int) -> str:
        while True:
            value = draw(nbytes)
            if zlib.crc32(value.encode()) % workers == index:
                return value

    return token


def worker_owner(node: str, index: int) -> str:
    """The ``owner`` a worker writes on its call rows."""
    return f"{node}/worker-{index}"


def owner_index(owner: str, node: str, workers: int) -> int | None:
    """The worker index of an ``owner`` written by :func:`worker_owner` for this node;
    ``None`` for any other owner (an earlier single-process run, another node)."""
    prefix = f"{node}/worker-"
    if not owner.startswith(prefix):
        return None
    number = owner[len(prefix):]
    if not number.isdigit() or int(number) >= workers:
        return None
    return int(number)
