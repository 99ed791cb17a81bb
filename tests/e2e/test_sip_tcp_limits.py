"""SIP over TCP limits against a real server process: idle connections are closed, a
message over the size limit is answered 513 and its connection closed, and the
inbound connection cap holds while OPTIONS over UDP and new TCP clients still work
once the flood is gone (issue #11, docs/security/limits.md)."""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Iterator

import pytest

from tests.helpers import ServerProcess, read_until_closed, running_server

IDLE_TIMEOUT = 2.0
MAX_CONNECTIONS = 5
#: Generous: the test machine is shared and slow; no test asserts on timing.
WAIT = 20.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {
        "CALLSTREAM_SIP_TCP_IDLE_TIMEOUT": str(IDLE_TIMEOUT),
        "CALLSTREAM_SIP_TCP_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
    }
    with running_server(tmp_path_factory.mktemp("data"), env=env) as srv:
        yield srv


def _connect(server: ServerProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.sip_port), timeout=WAIT)


def _options(sock: socket.socket, port: int, *, transport: str = "TCP",
             extra: str = "") -> bytes:
    host, my_port = sock.getsockname()[:2]
    return (
        f"OPTIONS sip:ping@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {host}:{my_port};branch=z9hG4bK{secrets.token_hex(6)}\r\n"
        f"From: <sip:probe@{host}>;tag={secrets.token_hex(4)}\r\n"
        f"To: <sip:ping@127.0.0.1:{port}>\r\n"
        f"Call-ID: {secrets.token_hex(8)}@{host}\r\n"
        f"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n{extra}"
        "Content-Length: 0\r\n\r\n"
    ).encode()




def _status(response: bytes) -> int:
    assert response.startswith(b"SIP/2.0 "), response[:80]
    return int(response[8:11])


def _options_answered_over_tcp(server: ServerProcess) -> bool:
    with _connect(server) as sock:
        sock.sendall(_options(sock, server.sip_port))
        return _status(sock.recv(65536)) == 200


def test_an_idle_connection_is_closed(server: ServerProcess) -> None:
    with _connect(server) as sock:
        sock.sendall(_options(sock, server.sip_port))
        assert _status(sock.recv(65536)) == 200
        started = time.monotonic()
        assert read_until_closed(sock) == b""  # before the limit: held, and a timeout here
        assert time.monotonic() - started >= IDLE_TIMEOUT * 0.9


def test_keepalive_crlfs_keep_a_connection_open(server: ServerProcess) -> None:
    with _connect(server) as sock:
        for _ in range(6):  # 1.5 idle timeouts
            sock.sendall(b"\r\n\r\n")
            time.sleep(IDLE_TIMEOUT / 4)
        sock.sendall(_options(sock, server.sip_port))
        assert _status(sock.recv(65536)) == 200


def test_a_message_over_the_size_limit_gets_513_and_a_close(server: ServerProcess) -> None:
    with _connect(server) as sock:
        # The head says the body is 1 MB; the framer needs no more than the head.
        message = _options(sock, server.sip_port).replace(
            b"Content-Length: 0", b"Content-Length: 1000000")
        sock.sendall(message)
        response = read_until_closed(sock)
    assert _status(response) == 513
    assert b"Warning: 399" in response
    assert _options_answered_over_tcp(server)


def test_the_inbound_connection_cap_holds(server: ServerProcess) -> None:
    assert server.proc is not None
    fds = f"/proc/{server.proc.pid}/fd"
    baseline = len(os.listdir(fds))
    socks = [_connect(server) for _ in range(4 * MAX_CONNECTIONS)]
    try:
        time.sleep(0.5)
        held = len(os.listdir(fds)) - baseline
        closed = 0
        for sock in socks[MAX_CONNECTIONS:]:
            sock.settimeout(WAIT)
            if read_until_closed(sock) == b"":
                closed += 1
        print(f"{len(socks)} connections: the server held {held} more fds")
        assert closed == len(socks) - MAX_CONNECTIONS
        assert held <= MAX_CONNECTIONS + 2
    finally:
        for sock in socks:
            sock.close()
    deadline = time.monotonic() + WAIT
    while len(os.listdir(fds)) > baseline + 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _options_answered_over_tcp(server)
