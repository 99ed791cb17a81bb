"""HTTP listener limits: their cost on a plain request, and what they save under attack.

uvicorn's own httptools protocol (``old``) and callstream's
:class:`~callstream.api.http_protocol.LimitedHttpProtocol` plus the
:class:`~callstream.api.body_limit.BodyLimit` middleware (``new``) each serve a minimal
ASGI app (a bearer-token check and a small JSON answer, no store) in their own process
on uvloop; the client runs in this process. ``h11`` is the alternative: uvicorn's h11
protocol with its own head limit (``h11_max_incomplete_event_size``), for its cost.

* **rps**: keep-alive ``GET`` with ``Authorization`` over C connections for D seconds,
  old and new in alternating rounds so that machine noise hits both alike; also the
  server's CPU time per request (from /proc, so other load on the machine counts less).
* **headers**: 4 connections each send H MiB of one header; the server's peak RSS
  growth (VmHWM) is read while they are still open.
* **half-sent**: N connections send half a request head; how many the server still
  holds after the header timeout plus 3 s.

Usage::

    python bench/http_limits.py [--seconds 3] [--rounds 3] [--json out.json]

Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import uvicorn
import uvloop

from callstream.api.body_limit import BodyLimit
from callstream.api.http_protocol import HEADER_TIMEOUT, HttpLimits, LimitedHttpProtocol

TOKEN = b"Bearer KEYbench"
ANSWER = b'{"data":[],"meta":{"total_results":0}}'
REQUEST = b"GET /v2/calls HTTP/1.1\r\nHost: bench\r\nAuthorization: " + TOKEN + b"\r\n\r\n"


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    ok = (b"authorization", TOKEN) in scope["headers"]
    body = ANSWER if ok else b'{"errors":[{"code":"10009"}]}'
    await send({"type": "http.response.start", "status": 200 if ok else 401,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def serve(kind: str, port: int) -> None:
    if kind == "new":
        config = uvicorn.Config(BodyLimit(app), port=port, log_config=None, access_log=False,
                                lifespan="off", loop="none",
                                http=LimitedHttpProtocol.with_limits(HttpLimits()))
    elif kind == "h11":
        config = uvicorn.Config(app, port=port, log_config=None, access_log=False,
                                lifespan="off", loop="none", http="h11",
                                h11_max_incomplete_event_size=HttpLimits().max_head_size)
    else:
        config = uvicorn.Config(app, port=port, log_config=None, access_log=False,
                                lifespan="off", loop="none", http="httptools")
    uvloop.run(uvicorn.Server(config).serve())


def start(kind: str) -> tuple[subprocess.Popen[bytes], int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    proc = subprocess.Popen([sys.executable, __file__, "--serve", kind, str(port)])
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{kind} server did not start")


async def _client(port: int, until: float) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    done = 0
    while time.perf_counter() < until:
        writer.write(REQUEST)
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        done += 1
    writer.close()
    return done


async def rps(port: int, connections: int, seconds: float) -> float:
    until = time.perf_counter() + seconds
    counts = await asyncio.gather(*(_client(port, until) for _ in range(connections)))
    return sum(counts) / seconds


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def header_flood(pid: int, port: int, mib: int) -> int:
    before = peak_kib(pid)
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
    pad = b"a" * 65536
    for sock in socks:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: b\r\nX-Pad: ")
        try:
            for _ in range(mib * 16):
                sock.sendall(pad)
        except OSError:
            pass
    time.sleep(1.0)
    grown = peak_kib(pid) - before
    for sock in socks:
        sock.close()
    return grown


def half_sent(pid: int, port: int, count: int) -> int:
    before = len(os.listdir(f"/proc/{pid}/fd"))
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
    for sock in socks:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: b\r\n")
    time.sleep(HEADER_TIMEOUT + 3.0)
    held = len(os.listdir(f"/proc/{pid}/fd")) - before
    for sock in socks:
        sock.close()
    return held


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", nargs=2, metavar=("KIND", "PORT"), help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--header-mib", type=int, default=25)
    parser.add_argument("--half-sent", type=int, default=500)
    parser.add_argument("--json", type=Path, default=None, help="write results here")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return
    servers = {kind: start(kind) for kind in ("old", "new", "h11")}
    results: dict[str, Any] = {}
    try:
        rates: dict[str, list[float]] = {kind: [] for kind in servers}
        cpu = dict.fromkeys(servers, 0.0)
        for _ in range(args.rounds):
            for kind, (proc, port) in servers.items():
                spent = cpu_seconds(proc.pid)
                rate = uvloop.run(rps(port, args.connections, args.seconds))
                cpu[kind] += cpu_seconds(proc.pid) - spent
                rates[kind].append(rate)
        for kind, values in rates.items():
            results[f"rps {kind} (best of {args.rounds})"] = round(max(values))
            results[f"rps {kind} (median)"] = round(sorted(values)[len(values) // 2])
            served = sum(values) * args.seconds
            results[f"server CPU us/request {kind}"] = round(cpu[kind] / served * 1e6, 1)
        for kind, (proc, port) in servers.items():
            results[f"half-sent {args.half_sent}: fds held after {HEADER_TIMEOUT + 3:g} s, "
                    f"{kind}"] = half_sent(proc.pid, port, args.half_sent)
        for kind, (proc, port) in servers.items():
            results[f"headers 4 x {args.header_mib} MiB: peak RSS growth MiB, {kind}"] = round(
                header_flood(proc.pid, port, args.header_mib) / 1024, 1)
    finally:
        for proc, _port in servers.values():
            proc.terminate()
            proc.wait()
    width = max(len(k) for k in results)
    for key, value in results.items():
        print(f"{key:<{width}}  {value}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
