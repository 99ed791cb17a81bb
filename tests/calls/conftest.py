from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest


@pytest.fixture
def silent_sip_port() -> Iterator[int]:
    """A loopback UDP port we hold and never read: an INVITE sent there rings forever.

    Held rather than merely free, so no other process on a busy machine can take the
    port and answer (or reject) the calls dialled to it.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])
