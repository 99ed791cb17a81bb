"""A node killed with SIGKILL under live calls: what the survivor does, and how fast.

The rig of tests/e2e/test_failover.py (``tests/e2e/failover.py``) at the issue's scale:
a private PostgreSQL and Redis, two ``callstream serve`` nodes behind the shipped
Kamailio front, SIPp placing ``--calls`` calls through it (``--rate`` a second) while the
webhook receiver stalls, so that both nodes hold webhook events in flight; then node A
is killed with SIGKILL and the receiver let go. Per round (a fresh database, Redis and
nodes each) it reports: how the calls spread, the events A held in flight, when A's
liveness expired, when the front took A out, from the kill to each of A's calls'
``call.hangup`` delivered (p50, max) and to every webhook delivered; then checks each of
A's calls got exactly one ``call.hangup``, B's calls none (and are still up), every
event was delivered in its call's order, and ``--after-down`` new calls all went to B.
B's calls' audio: each caller plays distinct 20 ms frames, each call's received audio
is forked (``fork_start``) to the rig from its answer on; every packet from the fork's
first to the rig's end must be the caller's, in order, byte-identical, and the packets
must span the kill and everything after it (the figures: packets checked, the span from
the kill, the longest gap between two packets of a call).

Usage::

    python bench/failover.py                         # 100 calls, 1 round
    python bench/failover.py --rounds 3 --json out.json

Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.cluster.redis_server import private_redis
from tests.e2e.failover import SURVIVOR, VICTIM, Report, failover_rig, kill_victim
from tests.store.postgres import start_postgres


def problems(report: Report) -> list[str]:
    """What the round got wrong (empty: every check held)."""
    found = []
    if set(report.victim_hangups.values()) != {1}:
        found.append(f"call.hangup counts of A's calls: {report.victim_hangups}")
    if report.hangup_causes != [("unspecified", "unknown")]:
        found.append(f"hangup cause/source: {report.hangup_causes}")
    if report.survivor_hangups or report.survivor_alive != report.per_node[SURVIVOR]:
        found.append(f"B's calls disturbed: {report.survivor_hangups} hangups, "
                     f"{report.survivor_alive} of {report.per_node[SURVIVOR]} alive")
    if report.order_violations:
        found.append(f"out of order: {report.order_violations[:5]}")
    if report.survivor_audio_problems:
        found.append(f"B's audio: {report.survivor_audio_problems[:5]}")
    first, last = report.survivor_audio_span_s
    if not first < 0 < report.all_delivered_s < last:
        found.append(f"B's audio spans {first} to {last} s, not the kill to "
                     f"{report.all_delivered_s} s")
    if set(report.after_down_calls) != {SURVIVOR} or report.after_down_failed:
        found.append(f"after the front's 'is down': {report.after_down_calls}, "
                     f"{report.after_down_failed} failed")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--rate", type=int, default=20, help="calls placed per second")
    parser.add_argument("--after-down", type=int, default=10,
                        help="new calls placed once the front has taken A out")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    pg, stop_pg = start_postgres(durable=True)
    reports = []
    try:
        for n in range(args.rounds):
            with private_redis() as redis_url, \
                    tempfile.TemporaryDirectory(prefix="bench-failover-") as tmp, \
                    failover_rig(Path(tmp), pg, redis_url) as rig:
                reports.append(kill_victim(rig, args.calls, args.rate, args.after_down))
            print(f"round {n + 1}: done", file=sys.stderr)
    finally:
        subprocess.run(stop_pg, capture_output=True, timeout=60)

    print("| round | calls A/B | A's events in flight | liveness expired | front: A down "
          "| A's call.hangup p50 / max | all webhooks delivered | released by B "
          "| new calls after down | B's audio: packets, span, max gap | checks |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    results = []
    for n, r in enumerate(reports, 1):
        bad = problems(r)
        results.append({**asdict(r), "problems": bad})
        print(f"| {n} | {r.per_node[VICTIM]}/{r.per_node[SURVIVOR]} "
              f"| {r.victim_leased_at_kill} | {r.liveness_expired_s} s | {r.front_down_s} s "
              f"| {r.hangup_s['p50']} / {r.hangup_s['max']} s | {r.all_delivered_s} s "
              f"| {r.webhooks_released} | {r.after_down_calls} "
              f"| {r.survivor_frames}, {r.survivor_audio_span_s[0]} to "
              f"{r.survivor_audio_span_s[1]} s, {r.survivor_max_gap_ms} ms "
              f"| {'all held' if not bad else '; '.join(bad)} |")
    print(f"\ntimes from the SIGKILL; {args.calls} calls placed at {args.rate}/s; "
          f"{os.cpu_count()} CPUs ({platform.platform()})")
    if args.json:
        args.json.write_text(json.dumps({"calls": args.calls, "rate": args.rate,
                                         "cpus": os.cpu_count(), "rounds": results},
                                        indent=2))
    if any(r["problems"] for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
