"""HTTP listener limits against a real server process: head size, head time, connections,
body size, and the open-files limit (issue #11, docs/security/limits.md)."""

from __future__ import annotations

import os
import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from callstream.api.http_protocol import LINGER_TIMEOUT
from tests.helpers import ServerProcess, entered_together, read_until_closed, running_server

HEADER_TIMEOUT = 1.0
#: Longer than the header timeout (which a half-sent request on a kept-alive connection
#: meets first), shorter than the default 5 s.
KEEPALIVE_TIMEOUT = 2
MAX_CONNECTIONS = 20
#: Generous: the test machine is shared and slow; no test asserts on timing.
WAIT = 20.0


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """The module's two servers, started at once: ``server`` (short header and keep-alive
    timeouts) and ``capped`` (a small connection cap). Both start under a lowered soft
    open-files limit (the children inherit it) so that raising it at start can be seen."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(512, hard), hard))
    try:
        with entered_together(
            running_server(tmp_path_factory.mktemp("data"), env={
                "CALLSTREAM_HTTP_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
                "CALLSTREAM_HTTP_KEEPALIVE_TIMEOUT": str(KEEPALIVE_TIMEOUT)}),
            running_server(tmp_path_factory.mktemp("data"), env={
                "CALLSTREAM_HTTP_MAX_CONNECTIONS": str(MAX_CONNECTIONS)}),
        ) as (server, capped):
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            yield server, capped
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture(scope="module")
def server(servers: tuple[ServerProcess, ServerProcess]) -> ServerProcess:
    return servers[0]


@pytest.fixture(scope="module")
def capped(servers: tuple[ServerProcess, ServerProcess]) -> ServerProcess:
    return servers[1]


def _pid(server: ServerProcess) -> int:
    assert server.proc is not None
    return server.proc.pid


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _connect(server: ServerProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.http_port), timeout=WAIT)




def _read_response(sock: socket.socket) -> bytes:
    """One whole response framed by its Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def _status(response: bytes) -> int:
    assert response.startswith(b"HTTP/1.1 "), response[:80]
    return int(response[9:12])


def _envelope_code(response: bytes) -> str:
    body = response.partition(b"\r\n\r\n")[2]
    return str(orjson.loads(body)["errors"][0]["code"])


def test_huge_headers_get_431_and_memory_stays_bounded(server: ServerProcess) -> None:
    pid = _pid(server)
    peak_before = _status_kib(pid, "VmHWM")
    socks = [_connect(server) for _ in range(4)]
    pad = b"a" * 65536
    for sock in socks:
        sock.sendall(b"GET /v2/calls HTTP/1.1\r\nHost: x\r\nX-Pad: ")
        try:
            for _ in range(128):  # 8 MiB of one header per connection
                sock.sendall(pad)
        except (BrokenPipeError, ConnectionResetError):
            pass
    time.sleep(0.5)
    growth_kib = _status_kib(pid, "VmHWM") - peak_before
    responses = [read_until_closed(sock) for sock in socks]
    for sock in socks:
        sock.close()
    print(f"server peak RSS grew by {growth_kib} KiB for 4 x 8 MiB of headers")
    for response in responses:
        assert _status(response) == 431
        assert _envelope_code(response) == "10015"
    assert growth_kib < 16 * 1024
    with server.client() as c:
        assert c.get("/v2/calls").status_code == 200
        assert 'callstream_http_limited_total{limit="head_size"}' in c.get("/metrics").text


def test_a_head_within_the_limit_is_served(server: ServerProcess) -> None:
    with server.client() as c:
        r = c.get("/v2/calls", headers={"X-Pad": "a" * 12000})
    assert r.status_code == 200


def test_half_sent_heads_get_408_after_the_header_timeout(server: ServerProcess) -> None:
    socks = [_connect(server) for _ in range(50)]
    for sock in socks:
        sock.sendall(b"GET /v2/calls HTTP/1.1\r\nHost: x\r\n")
    responses = [read_until_closed(sock) for sock in socks]
    for sock in socks:
        sock.close()
    assert {_status(r) for r in responses} == {408}


def test_a_silent_connection_is_closed_after_the_header_timeout(server: ServerProcess) -> None:
    with _connect(server) as sock:
        assert read_until_closed(sock) == b""


def test_kept_alive_connection_times_out_a_half_sent_second_request(
    server: ServerProcess,
) -> None:
    with _connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _status(_read_response(sock)) == 200
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        assert _status(read_until_closed(sock)) == 408


def test_a_body_over_the_limit_gets_413(server: ServerProcess) -> None:
    big = b'{"to": "+15550001111", "pad": "' + b"a" * (2 * 1024 * 1024) + b'"}'
    with server.client() as c:
        r = c.post("/v2/calls", content=big, headers={"Content-Type": "application/json"})
        assert r.status_code == 413
        assert r.json()["errors"][0]["code"] == "10015"
        assert r.json()["errors"][0]["title"] == "Request body too large"

        def chunks() -> Iterator[bytes]:
            for _ in range(32):
                yield big[:65536]

        r = c.post("/v2/calls", content=chunks(), headers={"Content-Type": "application/json"})
        assert r.status_code == 413
        # The connection is still good for the next request.
        assert c.get("/v2/calls").status_code == 200


def test_a_chunked_body_within_the_limit_reaches_the_app(server: ServerProcess) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"stream_url": "ws://127.0.0.1:1/x",'
        yield b' "stream_track": "nope"}'

    with server.client() as c:
        r = c.post("/v2/calls/v3:unknown/actions/streaming_start", content=chunks(),
                   headers={"Content-Type": "application/json"})
    # Parsed and validated: the body arrived whole.
    assert r.status_code == 422
    assert r.json()["errors"][0]["source"]["pointer"] == "/stream_track"


def test_connections_over_the_cap_are_refused_and_the_api_recovers(
    capped: ServerProcess,
) -> None:
    pid = _pid(capped)
    baseline = _open_fds(pid)
    socks = [_connect(capped) for _ in range(3 * MAX_CONNECTIONS)]
    try:
        for sock in socks[MAX_CONNECTIONS + 2 :]:
            response = read_until_closed(sock)  # before the cap: no answer, a timeout here
            assert _status(response) == 503
            assert _envelope_code(response) == "10015"
        # The refused ones are closed within their linger time (the old fixed wait's bound).
        closed_by = time.monotonic() + LINGER_TIMEOUT + 1.0
        while (held := _open_fds(pid) - baseline) > MAX_CONNECTIONS + 5 \
                and time.monotonic() < closed_by:
            time.sleep(0.1)
        print(f"{len(socks)} idle connections: the server holds {held} more fds")
        assert held <= MAX_CONNECTIONS + 5  # + the store's files, a checkpoint thread
    finally:
        for sock in socks:
            sock.close()
    deadline = time.monotonic() + WAIT
    while _open_fds(pid) > baseline + 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    with capped.client() as c:
        assert c.get("/v2/calls").status_code == 200


def test_open_files_limit_is_raised_to_the_hard_limit(capped: ServerProcess) -> None:
    for line in Path(f"/proc/{_pid(capped)}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            break
    else:
        raise AssertionError("no Max open files line")
    assert soft == hard, line
    assert int(soft) > 512
    assert "open files limit: " in capped.log()


def test_keepalive_timeout_closes_an_idle_connection(server: ServerProcess) -> None:
    with _connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _status(_read_response(sock)) == 200
        assert read_until_closed(sock) == b""  # closed after CALLSTREAM_HTTP_KEEPALIVE_TIMEOUT


def test_a_plain_request_still_works_after_all_that(server: ServerProcess) -> None:
    r = httpx.get(server.base_url + "/healthz")
    assert r.status_code == 200
