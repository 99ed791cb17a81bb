"""Kamailio front benchmark: how calls spread over two nodes, and how fast the front
takes a node out (drain, SIGKILL) and back in.

The parts a user runs, on loopback: two ``callstream serve`` nodes (127.0.0.2 and
127.0.0.3, each its own SQLite store) behind ``deploy/kamailio/kamailio.cfg`` (probing
every ``tests.kamailio.PING_INTERVAL`` s, a node given up on after ``TIMEOUT_MS``), SIPp placing
calls through the front (``tests/e2e/data/uac_front.xml``), and an application thread
that answers every parked call over the owning node's REST API.

Per run it reports: calls placed and how many each node got (Call-ID hash), calls that
failed; per round, seconds from ``callstream drain`` (SIGTERM) to the front's
``is down`` log line, from SIGKILL to it, and from a restarted node answering its API to ``is up``.

Usage::

    python bench/front.py                       # 60 calls, 3 rounds
    python bench/front.py --calls 20 --rounds 1 --json out.json

Not part of the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.audio import tone
from tests.e2e.calling import speech_pcap
from tests.e2e.sipp import DATA, sipp
from tests.helpers import ServerProcess, free_udp_tcp_port, running_server
from tests.kamailio import PING_INTERVAL, TIMEOUT_MS, Front, kamailio_front
from tests.receiver import Receiver, webhook_receiver

NODE_HOSTS = ("127.0.0.2", "127.0.0.3")


@dataclass
class Round:
    drain_to_down_s: float
    kill_to_down_s: float
    restart_to_up_s: float


@dataclass
class Result:
    calls: int
    per_node: dict[str, int]
    failed: int
    seconds: float
    rounds: list[Round] = field(default_factory=list)
    ping_interval_s: int = 0
    timeout_ms: int = 0
    machine: str = field(default_factory=platform.platform)
    cpus: int = field(default_factory=lambda: os.cpu_count() or 0)


def answer_everything(nodes: list[tuple[ServerProcess, Receiver]], stop: threading.Event) -> None:
    answered: set[str] = set()
    while not stop.is_set():
        for server, hooks in nodes:
            for d in hooks.events("call.initiated"):
                ccid = d.payload["call_control_id"]
                if ccid in answered:
                    continue
                answered.add(ccid)
                with server.client() as client, contextlib.suppress(httpx.HTTPError):
                    client.post(f"/v2/calls/{ccid}/actions/answer", json={})
        time.sleep(0.02)


def place(front: Front, workdir: Path, calls: int) -> tuple[int, float]:
    """SIPp places ``calls`` calls, 10 a second, 200 ms each: (failed, seconds)."""
    workdir.mkdir()
    (workdir / "speech.pcap").symlink_to(workdir.parent / "speech.pcap")
    start = time.monotonic()
    proc = sipp("-sf", str(DATA / "uac_front.xml"), "-i", "127.0.0.1",
                "-p", str(free_udp_tcp_port()), "-mp", str(free_udp_tcp_port()),
                "-m", str(calls), "-l", str(calls), "-r", "10", "-d", "200",
                "-s", "+15550002222", "-trace_stat", "-stf", "stat.csv", front.target,
                cwd=workdir, timeout=calls + 60)
    proc.wait()
    elapsed = time.monotonic() - start
    rows = (workdir / "stat.csv").read_text().splitlines()
    header, last = rows[0].split(";"), rows[-1].split(";")
    failed = int(last[header.index("FailedCall(C)")])
    return failed, elapsed


def timed_log(front: Front, text: str, after: int) -> tuple[float, int]:
    start = time.monotonic()
    end = front.wait_log(text, timeout=30, after=after)
    return time.monotonic() - start, end


def run(args: argparse.Namespace) -> Result:
    with tempfile.TemporaryDirectory(prefix="bench-front-") as tmp:
        root = Path(tmp)
        speech_pcap(root / "speech.pcap", tone(440, 0.2), "PCMU")
        with contextlib.ExitStack() as stack:
            nodes: list[tuple[ServerProcess, Receiver]] = []
            for i, host in enumerate(NODE_HOSTS):
                hooks = stack.enter_context(webhook_receiver())
                server = stack.enter_context(running_server(root / f"node{i}", {
                    "CALLSTREAM_WEBHOOK_URL": hooks.url,
                    "CALLSTREAM_SIP_RATE_LIMIT_PER_SEC": "0",
                    "CALLSTREAM_RTP_PORT_MIN": str(40000 + 5000 * i),
                    "CALLSTREAM_RTP_PORT_MAX": str(44999 + 5000 * i)}, host))
                nodes.append((server, hooks))
            front = stack.enter_context(kamailio_front(
                root / "kamailio", [f"{s.host}:{s.sip_port}" for s, _ in nodes], ["127.0.0.1"]))
            stop = threading.Event()
            answerer = threading.Thread(target=answer_everything, args=(nodes, stop), daemon=True)
            answerer.start()
            stack.callback(stop.set)
            failed, seconds = place(front, root / "spread", args.calls)
            result = Result(args.calls, {s.host: len(h.events("call.initiated"))
                                         for s, h in nodes}, failed, seconds)
            for n in range(args.rounds):
                (a, _), (b, _) = nodes
                mark = len(front.log())
                subprocess.run([sys.executable, "-m", "callstream", "drain", "--no-wait",
                                "--data-dir", str(a.data_dir)], check=True,
                               capture_output=True, env=dict(os.environ))
                drain_down, mark = timed_log(front, f"node sip:{a.host}:{a.sip_port} is down",
                                             mark)
                assert a.proc is not None
                a.proc.wait(60)
                a.start()
                restart_up, mark = timed_log(front, f"node sip:{a.host}:{a.sip_port} is up",
                                             mark)
                assert b.proc is not None
                b.proc.send_signal(signal.SIGKILL)
                kill_down, mark = timed_log(front, f"node sip:{b.host}:{b.sip_port} is down",
                                            mark)
                b.proc.wait(10)
                b.start()
                timed_log(front, f"node sip:{b.host}:{b.sip_port} is up", mark)
                result.rounds.append(Round(round(drain_down, 2), round(kill_down, 2),
                                           round(restart_up, 2)))
                print(f"round {n + 1}: done", file=sys.stderr)
        result.ping_interval_s = PING_INTERVAL
        result.timeout_ms = TIMEOUT_MS
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    result = run(args)
    print(f"{result.calls} calls through the front in {result.seconds:.1f} s, "
          f"{result.failed} failed; per node: " +
          ", ".join(f"{host} {n}" for host, n in result.per_node.items()))
    print(f"probe every {result.ping_interval_s} s, node timeout {result.timeout_ms} ms")
    print("| round | drain → out (s) | SIGKILL → out (s) | ready again → in (s) |")
    print("|---|---|---|---|")
    for i, r in enumerate(result.rounds, 1):
        print(f"| {i} | {r.drain_to_down_s} | {r.kill_to_down_s} | {r.restart_to_up_s} |")
    if args.json:
        args.json.write_text(json.dumps(asdict(result), indent=2))


if __name__ == "__main__":
    main()
