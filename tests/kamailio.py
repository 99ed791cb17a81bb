"""Kamailio (Debian package ``kamailio``) as a private SIP front, with the shipped config.

It runs in the foreground (``-DD -E``) on a free loopback port, with its own runtime
dir (``-Y``), node list and allow-list, so the suite needs no system service.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import free_udp_tcp_port

KAMAILIO = shutil.which("kamailio") or (
    "/usr/sbin/kamailio" if Path("/usr/sbin/kamailio").exists() else None)
CONFIG = Path(__file__).parent.parent / "deploy" / "kamailio" / "kamailio.cfg"
#: Seconds between two OPTIONS probes of each node, in the tests.
PING_INTERVAL = 1
#: Milliseconds a node has to answer before it is given up on, in the tests.
TIMEOUT_MS = 1000
START_TIMEOUT = 20.0


@dataclass
class Front:
    host: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 15.0, *, after: int = 0) -> int:
        """Wait until ``text`` is in the log past offset ``after``; its end offset."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.log()
            where = log.find(text, after)
            if where >= 0:
                return where + len(text)
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"kamailio never logged {text!r}:\n{self.log()[-4000:]}")

    def options(self, source: str = "127.0.0.1", timeout: float = 2.0) -> str:
        """Send one OPTIONS from ``source``; the first line of the answer."""
        return sip_request(self.host, self.port, "OPTIONS", source, timeout)


def sip_request(host: str, port: int, method: str, source: str, timeout: float,
                max_forwards: int = 70) -> str:
    """One out-of-dialog request over UDP from ``source``; the answer's status line."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.settimeout(timeout)
        local = sock.getsockname()[1]
        call_id = secrets.token_hex(8)
        request = (
            f"{method} sip:{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {source}:{local};branch=z9hG4bK{call_id};rport\r\n"
            f"From: <sip:probe@{source}>;tag={call_id}\r\n"
            f"To: <sip:probe@{host}:{port}>\r\n"
            f"Call-ID: {call_id}@{source}\r\n"
            f"CSeq: 1 {method}\r\n"
            f"Contact: <sip:probe@{source}:{local}>\r\n"
            f"Max-Forwards: {max_forwards}\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        sock.sendto(request.encode(), (host, port))
        while True:
            data, _ = sock.recvfrom(65535)
            line = data.split(b"\r\n", 1)[0].decode()
            if not line.startswith("SIP/2.0 1"):  # skip 100 Trying
                return line


@contextlib.contextmanager
def kamailio_front(workdir: Path, nodes: Sequence[str], allowed: Sequence[str],
                   host: str = "127.0.0.1") -> Iterator[Front]:
    """The shipped kamailio.cfg in front of ``nodes`` (``host:port``), admitting
    callers from ``allowed`` (addresses or ``address/mask``)."""
    if KAMAILIO is None:
        pytest.fail("kamailio is missing: apt-get install kamailio (.ci/run does)")
    workdir.mkdir(parents=True, exist_ok=True)
    run_dir = workdir / "run"
    run_dir.mkdir(exist_ok=True)
    nodes_file = workdir / "nodes.list"
    nodes_file.write_text("".join(f"1 sip:{node} 8\n" for node in nodes))
    allow_file = workdir / "allow.list"
    allow_file.write_text("".join(
        f"1 {net.partition('/')[0]} {net.partition('/')[2] or 32}\n" for net in allowed))
    port = free_udp_tcp_port()
    log_path = workdir / "kamailio.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [KAMAILIO, "-f", str(CONFIG), "-DD", "-E", "-Y", str(run_dir), "-m", "64", "-M", "8",
             "-A", f"CS_LISTEN=udp:{host}:{port}",
             "-A", f'CS_NODES="{nodes_file}"',
             "-A", f'CS_ALLOW="{allow_file}"',
             "-A", f"CS_PING_INTERVAL={PING_INTERVAL}",
             "-A", f"CS_TIMEOUT_MS={TIMEOUT_MS}",
             "-A", "CS_CHILDREN=2"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    front = Front(host, port, proc, log_path)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"kamailio exited {proc.returncode}:\n{front.log()}")
            with contextlib.suppress(OSError):
                if front.options(timeout=0.5).startswith("SIP/2.0 200"):
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"kamailio did not answer OPTIONS:\n{front.log()}")
        yield front
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
