"""Two nodes on PostgreSQL + Redis: a forwarded REST request against a direct one, and
the failover timeline of a node killed with SIGKILL.

Starts a private PostgreSQL and Redis (as the tests do), two ``callstream serve`` nodes,
and ``--calls`` live calls on node A (``callstream call``, answered through the API).
Then ``--requests`` rounds of ``GET /v2/calls/{id}`` for A's calls, each round once
straight to A and once to B (which forwards it to A), interleaved, on kept-alive
connections: p50/p90/p99 of each and the difference of the p50s. Then A is killed with
SIGKILL and the script reports when A's liveness record expired in Redis and when the
last of A's calls had its ``call.hangup`` delivered (by B).

Usage::

    python bench/cluster.py                      # 4 calls, 300 rounds
    python bench/cluster.py --calls 10 --requests 1000 --json out.json

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
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import quantiles
from tempfile import TemporaryDirectory

from redis import Redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callstream.cluster.leases import node_key
from tests.cluster.redis_server import private_redis
from tests.e2e.calling import CallerProcess, start_caller
from tests.helpers import running_server
from tests.receiver import webhook_receiver
from tests.store.postgres import start_postgres


@dataclass
class Result:
    calls: int
    requests: int
    direct_ms: dict[str, float]
    forwarded_ms: dict[str, float]
    forward_cost_p50_ms: float
    lease_secs: float
    scan_secs: float
    liveness_expired_s: float
    last_orphan_hangup_delivered_s: float
    host: str


def _pcts(samples: list[float]) -> dict[str, float]:
    q = quantiles(samples, n=100)
    return {"p50": round(q[49], 3), "p90": round(q[89], 3), "p99": round(q[98], 3)}


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
                        api.post(f"/v2/calls/{ccid}/actions/answer", json={}).raise_for_status()
                direct: list[float] = []
                forwarded: list[float] = []
                with a.client() as on_a, b.client() as on_b:
                    for ccid in ids:  # warm both connections and the forward path
                        on_a.get(f"/v2/calls/{ccid}").raise_for_status()
                        on_b.get(f"/v2/calls/{ccid}").raise_for_status()
                    for n in range(args.requests):
                        ccid = ids[n % len(ids)]
                        for api, into in ((on_a, direct), (on_b, forwarded)):
                            start = time.perf_counter()
                            api.get(f"/v2/calls/{ccid}").raise_for_status()
                            into.append((time.perf_counter() - start) * 1000)
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
        d, f = _pcts(direct), _pcts(forwarded)
        return Result(args.calls, args.requests, d, f, round(f["p50"] - d["p50"], 3),
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
    parser.add_argument("--lease", type=float, default=6.0, help="CALLSTREAM_CALL_LEASE_SECS")
    parser.add_argument("--scan", type=float, default=2.0, help="CALLSTREAM_FAILOVER_SCAN_SECS")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    result = run(args)
    print("| request | p50 ms | p90 ms | p99 ms |")
    print("|---|---|---|---|")
    for name, pcts in (("direct to the owner", result.direct_ms),
                       ("to the other node (forwarded)", result.forwarded_ms)):
        print(f"| {name} | {pcts['p50']} | {pcts['p90']} | {pcts['p99']} |")
    print(f"\nforwarding adds {result.forward_cost_p50_ms} ms at p50 "
          f"({result.requests} requests each, {result.calls} calls)")
    print(f"SIGKILL → liveness expired {result.liveness_expired_s} s "
          f"(lease {result.lease_secs:g} s)"
          f"; last orphan's call.hangup delivered {result.last_orphan_hangup_delivered_s} s "
          f"(scan {result.scan_secs:g} s)")
    if args.json:
        args.json.write_text(json.dumps(asdict(result), indent=2))


if __name__ == "__main__":
    main()
