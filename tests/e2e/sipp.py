"""Running SIPp (Debian package sip-tester) as a real peer, bounded in time."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.helpers import free_udp_tcp_port

DATA = Path(__file__).parent / "data"
SIPP = shutil.which("sipp")


def sipp(
    *args: str, cwd: Path, timeout: float = 40.0
) -> subprocess.Popen[bytes]:
    """SIPp with ``args``; a ``-mp`` port is moved to four free ones (:func:`media_ports`)."""
    assert SIPP is not None, "sipp is missing: apt-get install sip-tester (.ci/run does)"
    argv = list(args)
    if "-mp" in argv:
        at = argv.index("-mp") + 1
        argv[at] = str(media_ports(int(argv[at])))
    return subprocess.Popen(
        [SIPP, *argv, "-nostdin", "-timeout", str(int(timeout)), "-timeout_error",
         "-trace_err"],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def media_ports(first: int) -> int:
    """SIPp binds ``-mp`` and the next three UDP ports (RTCP, video): keep ``first`` if all
    four are free, else find four that are; one taken port makes SIPp exit at start."""
    for _ in range(50):
        socks = []
        try:
            for port in range(first, first + 4):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return first
        except OSError:
            first = free_udp_tcp_port()
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no four free UDP ports in a row for SIPp's media")


def uac(target: str, scenario: str, *, cwd: Path, local_port: int, media_port: int,
        hold_ms: int = 1000, service: str = "+15550002222",
        extra: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
    """SIPp calls ``target`` (host:port) once with ``scenario`` from data/.

    ``extra``: more SIPp arguments, e.g. ``("-key", "pt", "8")`` for ``[pt]`` in the scenario.
    """
    return sipp("-sf", str(DATA / scenario), "-i", "127.0.0.1", "-p", str(local_port),
                "-mp", str(media_port), "-m", "1", "-d", str(hold_ms), "-s", service,
                *extra, target, cwd=cwd)


def uas(scenario: str, *, cwd: Path, port: int, media_port: int,
        extra: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
    """SIPp answers one call on ``port``; ``scenario`` is a file in data/ (uas_basic.xml:
    a plain answering phone)."""
    return sipp("-sf", str(DATA / scenario), "-i", "127.0.0.1", "-p", str(port),
                "-mp", str(media_port), "-m", "1", *extra, cwd=cwd)


def wait_bound(port: int, timeout: float = 10.0) -> None:
    """Wait until something (SIPp, just started) has bound UDP ``port`` on 127.0.0.1, as
    /proc/net/udp lists it: binding the port to find out would race SIPp's own bind."""
    local = f"0100007F:{port:04X}"
    deadline = time.monotonic() + timeout
    while True:
        with open("/proc/net/udp") as table:
            if any(line.split()[1] == local for line in list(table)[1:]):
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing bound UDP 127.0.0.1:{port} within {timeout} s")
        time.sleep(0.02)
