"""Two nodes on PostgreSQL + Redis: a forwarded REST request against a direct one, and
the failover timeline of a node killed with SIGKILL.

Starts a private PostgreSQL and Redis (as the tests do), two ``callstream serve`` nodes,
and ``--calls`` live calls on node A (``callstream call``, answered through the API).
Then ``--requests`` rounds over A's calls, each round a ``GET /v2/calls/{id}`` and an
action (``POST .../actions/answer`` repeating the ``command_id`` the call was answered
with: the command's whole path, its lock and idempotency look-up, answered with the
stored receipt), each once straight to A and once to B (which forwards it to A),
interleaved, on kept-alive client connections: p50/p90/p99 of each, the difference of
the p50s, and the p50 of each round's difference (forwarded less direct: robust to a
busy machine's drift). Then the server CPU a request costs: ``--cpu-requests`` GETs
straight to A and as many through B, in turns of ``CPU_BLOCK``, each block timed by
both nodes' CPU (``/proc/<pid>/stat``, their idle rate sampled before taken off).
Then A is killed with SIGKILL and the script reports when A's liveness record expired
in Redis and when the last of A's calls had its ``call.hangup`` delivered (by B).

Usage::

    python bench/cluster.py                      # 4 calls, 300 rounds
    python bench/cluster.py --calls 10 --requests 1000 --cpu-requests 2000 --json out.json

Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from statistics import median, quantiles
from tempfile import TemporaryDirectory

from redis import Redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.sip_load import cpu_seconds
from callstream.cluster.leases import node_key
from tests.cluster.redis_server import private_redis
from tests.e2e.calling import CallerProcess, start_caller
from tests.helpers import running_server
from tests.receiver import webhook_receiver
from tests.store.postgres import start_postgres

#: Seconds the CPU run first samples the nodes idle.
IDLE_SAMPLE_SECS = 2.0
#: Requests of one way (direct, forwarded) in a row in the CPU run.
CPU_BLOCK = 200


@dataclass
class Result:
    calls: int
    requests: int
    direct_ms: dict[str, float]  # GET /v2/calls/{id}
    forwarded_ms: dict[str, float]
    forward_cost_p50_ms: float
    action_direct_ms: dict[str, float]  # POST .../actions/answer, command_id repeated
    action_forwarded_ms: dict[str, float]
    action_forward_cost_p50_ms: float
    paired_cost_p50_ms: dict[str, float]  # kind -> p50 of (forwarded - direct) per round
    cpu_us_per_request: dict[str, dict[str, float]]  # direct|forwarded -> node -> µs
    lease_secs: float
    scan_secs: float
    liveness_expired_s: float
    last_orphan_hangup_delivered_s: float
    host: str


def _pcts(samples: list[float]) -> dict[str, float]:
    q = quantiles(samples, n=100)
    return {"p50": round(q[49], 3), "p90": round(q[89], 3), "p99": round(q[98], 3)}


def _cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    return {name: cpu_seconds(pid) for name, pid in pids.items()}


def _cpu_per_request(pids: dict[str, int], ways: dict[str, Callable[[], object]],
                     count: int) -> dict[str, dict[str, float]]:
    """Each node's CPU µs per request of each way (``count`` requests each), less its
    idle rate (renewals, scans, the pacer) sampled just before. The ways take turns in
    blocks of ``CPU_BLOCK`` requests, so a busy machine's drift weighs on all alike."""
    start, idle_from = time.monotonic(), _cpu_seconds(pids)
    time.sleep(IDLE_SAMPLE_SECS)
    began = time.monotonic()
    idle = {n: (cpu - idle_from[n]) / (began - start)
            for n, cpu in _cpu_seconds(pids).items()}
    used = {way: dict.fromkeys(pids, 0.0) for way in ways}
    for _ in range(max(1, count // CPU_BLOCK)):
        for way, send in ways.items():
            before, block_start = _cpu_seconds(pids), time.monotonic()
            for _ in range(CPU_BLOCK):
                send()
            after, elapsed = _cpu_seconds(pids), time.monotonic() - block_start
            for n in pids:
                used[way][n] += after[n] - before[n] - idle[n] * elapsed
    sent = max(1, count // CPU_BLOCK) * CPU_BLOCK
    return {way: {n: round(1e6 * cpu / sent, 1) for n, cpu in per_node.items()}
            for way, per_node in used.items()}


def run(args: argparse.Namespace) -> Result:
    pg, stop_pg = start_postgres()
    callers: list[CallerProcess] = []
    try:
        with private_redis() as redis_url, webhook_receiver() as hooks, \
                TemporaryDirectory() as tmp:
            env = {"CALLSTREAM_DATABASE_URL": pg.new_database(),
                   "CALLSTREAM_REDIS_URL": redis_url, "CALLSTREAM_WEBHOOK_URL": hooks.url,
                   "CALLSTREAM_CALL_LEASE_SECS": str(args.lease),
                   "CALLSTREAM_FAILOVER_SCAN_SECS": str(args.scan),
                   "CALLSTREAM_SIP_RATE_LIMIT_PER_SEC": "0"}
            with running_server(Path(tmp) / "a", env={
                    **env, "CALLSTREAM_NODE_ID": "node-a", "CALLSTREAM_RTP_PORT_MIN": "38000",
                    "CALLSTREAM_RTP_PORT_MAX": "38999"}) as a, \
                    running_server(Path(tmp) / "b", env={
                        **env, "CALLSTREAM_NODE_ID": "node-b",
                        "CALLSTREAM_RTP_PORT_MIN": "39000",
                        "CALLSTREAM_RTP_PORT_MAX": "39999"}) as b:
                ids = []
                for i in range(args.calls):
                    low = 40000 + 100 * i
                    callers.append(start_caller(
                        f"sip:bench{i}@127.0.0.1:{a.sip_port}", "--duration", "600",
                        "--rtp-ports", f"{low}-{low + 99}", "-q"))
                    found = hooks.wait_for(lambda d, i=i: d.event_type == "call.initiated"
                                           and d.payload.get("to") == f"bench{i}", timeout=30)
                    ids.append(str(found.payload["call_control_id"]))
                with a.client() as api:
                    for ccid in ids:
                        api.post(f"/v2/calls/{ccid}/actions/answer",
                                 json={"command_id": f"answer-{ccid}"}).raise_for_status()
                # (kind, node) -> milliseconds
                samples: dict[tuple[str, str], list[float]] = {
                    (kind, node): [] for kind in ("get", "action") for node in "ab"}
                with a.client() as on_a, b.client() as on_b:
                    for ccid in ids:  # warm both connections and the forward path
                        on_a.get(f"/v2/calls/{ccid}").raise_for_status()
                        on_b.get(f"/v2/calls/{ccid}").raise_for_status()
                    for n in range(args.requests):
                        ccid = ids[n % len(ids)]
                        for node, api in (("a", on_a), ("b", on_b)):
                            start = time.perf_counter()
                            api.get(f"/v2/calls/{ccid}").raise_for_status()
                            samples["get", node].append((time.perf_counter() - start) * 1000)
                            start = time.perf_counter()
                            api.post(f"/v2/calls/{ccid}/actions/answer",
                                     json={"command_id": f"answer-{ccid}"}).raise_for_status()
                            samples["action", node].append(
                                (time.perf_counter() - start) * 1000)
                    assert a.proc is not None and b.proc is not None
                    pids = {"owner (A)": a.proc.pid, "forwarding node (B)": b.proc.pid}
                    path = f"/v2/calls/{ids[0]}"
                    cpu = _cpu_per_request(pids, {"direct": partial(on_a.get, path),
                                                  "forwarded": partial(on_b.get, path)},
                                           args.cpu_requests)
                redis = Redis.from_url(redis_url)
                a.stop(signal.SIGKILL)
                killed = time.monotonic()
                expired = done = None
                while time.monotonic() < killed + 60 and done is None:
                    if expired is None and not redis.exists(node_key("node-a")):
                        expired = time.monotonic() - killed
                    ended = {d.payload.get("call_control_id") for d in hooks.events("call.hangup")}
                    if ended >= set(ids):
                        done = time.monotonic() - killed
                    time.sleep(0.02)
                redis.close()
                assert expired is not None and done is not None, "failover did not finish"
        d, f = _pcts(samples["get", "a"]), _pcts(samples["get", "b"])
        ad, af = _pcts(samples["action", "a"]), _pcts(samples["action", "b"])
        paired = {kind: round(median(fw - di for di, fw in zip(
            samples[kind, "a"], samples[kind, "b"], strict=True)), 3)
            for kind in ("get", "action")}
        return Result(args.calls, args.requests, d, f, round(f["p50"] - d["p50"], 3),
                      ad, af, round(af["p50"] - ad["p50"], 3), paired, cpu,
                      args.lease, args.scan, round(expired, 2), round(done, 2),
                      platform.node())
    finally:
        for caller in callers:
            caller.kill()
            caller.proc.communicate()
        subprocess.run(stop_pg, capture_output=True, timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=4)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--cpu-requests", type=int, default=2000,
                        help="GETs each way for the CPU per request")
    parser.add_argument("--lease", type=float, default=6.0, help="CALLSTREAM_CALL_LEASE_SECS")
    parser.add_argument("--scan", type=float, default=2.0, help="CALLSTREAM_FAILOVER_SCAN_SECS")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    result = run(args)
    print("| request | p50 ms | p90 ms | p99 ms |")
    print("|---|---|---|---|")
    for name, pcts in (("GET, direct to the owner", result.direct_ms),
                       ("GET, to the other node (forwarded)", result.forwarded_ms),
                       ("action, direct to the owner", result.action_direct_ms),
                       ("action, to the other node (forwarded)", result.action_forwarded_ms)):
        print(f"| {name} | {pcts['p50']} | {pcts['p90']} | {pcts['p99']} |")
    print(f"\nforwarding adds {result.forward_cost_p50_ms} ms at p50 to a GET, "
          f"{result.action_forward_cost_p50_ms} ms to an action "
          f"({result.requests} requests each, {result.calls} calls); p50 of each round's "
          f"difference: {result.paired_cost_p50_ms['get']} ms (GET), "
          f"{result.paired_cost_p50_ms['action']} ms (action)")
    print(f"\nserver CPU µs per GET ({args.cpu_requests} each way):\n")
    print("| request | " + " | ".join(result.cpu_us_per_request["direct"]) + " | total |")
    print("|---" * (2 + len(result.cpu_us_per_request["direct"])) + "|")
    for way, per_node in result.cpu_us_per_request.items():
        print(f"| {way} | " + " | ".join(str(v) for v in per_node.values())
              + f" | {round(sum(per_node.values()), 1)} |")
    print(f"SIGKILL → liveness expired {result.liveness_expired_s} s "
          f"(lease {result.lease_secs:g} s)"
          f"; last orphan's call.hangup delivered {result.last_orphan_hangup_delivered_s} s "
          f"(scan {result.scan_secs:g} s)")
    if args.json:
        args.json.write_text(json.dumps(asdict(result), indent=2))


if __name__ == "__main__":
    main()
