"""Taken ports: one clear line and exit 1 from a real `callstream serve` (and `call`),
never a traceback; and the ListenError / bind_tcp core."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from callstream.listening import ListenError, bind_tcp
from tests.helpers import create_api_key, free_port, free_udp_tcp_port

RUN_TIMEOUT = 60


@contextmanager
def holding(kind: int, port: int) -> Iterator[socket.socket]:
    """Someone else holds ``port`` (UDP bound, or TCP listening) on 127.0.0.1."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", port))
        if kind == socket.SOCK_STREAM:
            sock.listen()
        yield sock


def serve(data_dir: Path, http: int, sip: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "callstream", "serve", "--data-dir", str(data_dir),
         "--http", f"127.0.0.1:{http}", "--sip", f"127.0.0.1:{sip}"],
        capture_output=True, text=True, timeout=RUN_TIMEOUT, env=os.environ.copy())


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    # A migrated store, as a user's second start finds it (what `callstream keys create`
    # does, in this process: no 1 s CLI process per test).
    create_api_key(data)
    return data


@pytest.mark.parametrize(("service", "kind"), [
    ("HTTP", socket.SOCK_STREAM), ("SIP UDP", socket.SOCK_DGRAM),
    ("SIP TCP", socket.SOCK_STREAM),
])
def test_a_taken_port_is_one_line_and_exit_1(data_dir: Path, service: str, kind: int) -> None:
    http, sip = free_port(), free_udp_tcp_port()
    taken = http if service == "HTTP" else sip
    with holding(kind, taken):
        done = serve(data_dir, http, sip)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    if service == "HTTP":
        assert last == (f"callstream: cannot listen for HTTP on 127.0.0.1:{http} (TCP): address "
                        "in use — is another callstream running? Use --http HOST:PORT")
    else:
        protocol = service.split()[1]
        assert last == (f"callstream: cannot listen for SIP on 127.0.0.1:{sip} ({protocol}): "
                        "address in use — is another callstream running? Use --sip HOST:PORT")


def test_the_node_can_start_once_the_port_is_free(data_dir: Path) -> None:
    """Nothing is left behind by the failed start (lock, sockets): the next one runs."""
    http, sip = free_port(), free_udp_tcp_port()
    with holding(socket.SOCK_DGRAM, sip):
        assert serve(data_dir, http, sip).returncode == 1
    proc = subprocess.Popen(
        [sys.executable, "-m", "callstream", "serve", "--data-dir", str(data_dir),
         "--http", f"127.0.0.1:{http}", "--sip", f"127.0.0.1:{sip}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "callstream listening" in line:
                break
        else:
            pytest.fail("server did not start")
    finally:
        proc.terminate()
        proc.communicate(timeout=RUN_TIMEOUT)


def test_call_with_a_taken_sip_port_says_so(tmp_path: Path) -> None:
    port = free_udp_tcp_port()
    with holding(socket.SOCK_DGRAM, port):
        done = subprocess.run(
            [sys.executable, "-m", "callstream", "call", "sip:x@127.0.0.1:9",
             "--sip-port", str(port)],
            capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip() == (
        f"callstream call: cannot listen for SIP on 127.0.0.1:{port} (UDP): address in use — "
        "is another callstream running? Use --sip-port PORT (0 picks a free one)")


def test_serve_help_documents_log_level() -> None:
    done = subprocess.run([sys.executable, "-m", "callstream", "serve", "--help"],
                          capture_output=True, text=True, timeout=RUN_TIMEOUT,
                          env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1",
                               "TERM": "dumb"})
    assert "--log-level" in done.stdout
    assert "debug, info, warning or error" in done.stdout


def test_call_rejects_an_unknown_log_level() -> None:
    done = subprocess.run([sys.executable, "-m", "callstream", "call", "sip:x@127.0.0.1:9",
                           "--log-level", "loud"], capture_output=True, text=True,
                          timeout=RUN_TIMEOUT)
    assert done.returncode == 2
    assert "bad --log-level 'loud': want one of debug, info, warning, error" in done.stderr


# -- the core ------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "reason"), [
    (errno.EADDRINUSE, "address in use — is another callstream running?"),
    (errno.EACCES, "permission denied — ports below 1024 need privileges"),
    (errno.EADDRNOTAVAIL, "address not available — no interface of this host has it"),
    (errno.ENOBUFS, "no buffer space available"),
])
def test_listen_error_says_why_in_words(code: int, reason: str) -> None:
    error = ListenError("SIP", "::1", 5060, "UDP", OSError(code, os.strerror(code)))
    assert str(error) == f"cannot listen for SIP on [::1]:5060 (UDP): {reason}"
    assert error.errno == code and isinstance(error, OSError)


def test_advice_follows_a_question_or_a_sentence() -> None:
    in_use = ListenError("HTTP", "127.0.0.1", 80, "TCP", OSError(errno.EADDRINUSE, "x"))
    assert in_use.with_advice("Use --http HOST:PORT").endswith("running? Use --http HOST:PORT")
    other = ListenError("HTTP", "127.0.0.1", 80, "TCP", OSError(errno.ENOBUFS, "No buffer"))
    assert other.with_advice("Use --http HOST:PORT").endswith("no buffer. Use --http HOST:PORT")


def test_bind_tcp_binds_or_raises_and_leaves_nothing_open() -> None:
    port = free_port()
    sockets = bind_tcp("HTTP", "127.0.0.1", port)
    try:
        assert [s.getsockname() for s in sockets] == [("127.0.0.1", port)]
        sockets[0].listen()
        with pytest.raises(ListenError) as caught:
            bind_tcp("HTTP", "127.0.0.1", port)
        assert caught.value.errno == errno.EADDRINUSE
        assert str(caught.value).startswith(f"cannot listen for HTTP on 127.0.0.1:{port} (TCP)")
    finally:
        for sock in sockets:
            sock.close()
