"""Call set-up rate through the Kamailio front: one node against two, on one machine.

The rig of tests/e2e/failover.py without the kill: a private PostgreSQL (durable) and
Redis, ``--nodes`` ``callstream serve`` nodes (127.0.0.2, 127.0.0.3) behind the shipped
Kamailio front, SIPp placing calls through it (``tests/e2e/data/uac_front.xml``: 1 s of
PCMU after the ACK, then a ``--hold`` pause and BYE). The application is
bench/sip_load.py's: it takes each node's webhooks on a port of its own and answers each
``call.initiated`` at the node that sent it (any node accepts any command; an answer for
another node's call is forwarded, counted as ``forwarded``).

Every node count's cluster is started at once (each its own Redis, database, front and
ports) and they climb one ladder of offered rates together (``--rates``, ``--seconds``
each): each rate is offered to one cluster, then the other (in turn first), so that the
machine's other tenants weigh on both alike; a cluster leaves the ladder once it falls
below 90 % of the offered rate. Per step it reports: calls answered and failed, the
set-up rate achieved (answered / first INVITE → last 200 OK), INVITE → 200 OK p50 / p99,
each node's calls (the spread), the answers forwarded, the webhook lag and the answer's
latency at the application, server CPU ms per call (the nodes' processes together,
``/proc/<pid>/stat``, over the call's whole life: set-up, RTP, BYE, webhooks; each node's
idle baseline, sampled before the step, taken off), and the CPU of every process on the
path — each node (with the share of the step its main thread waited, runnable, for a
CPU: ``schedstat``), Kamailio, PostgreSQL (all its backends), Redis, SIPp, the bench
(the application) — as % of one core, and the machine's idle share. A step is
*sustained* when every call was answered, none failed, the achieved rate is within 10 %
of the offered one and the set-up p50 is within ``SETUP_P50_BOUND_MS``; the node count's
maximum is its highest sustained rate.

Usage::

    python bench/cluster_setup.py                          # 1 and 2 nodes, default ladder
    python bench/cluster_setup.py --nodes 1,2 --rates 10,20,30,40 --json out.json

Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from redis import Redis

from bench.sip_load import (
    ApiClient,
    App,
    Application,
    StepState,
    cpu_seconds,
    pct,
    read_rtt,
    read_stat,
    runqueue_wait,
)
from tests.audio import tone
from tests.cluster.redis_server import private_redis
from tests.e2e.calling import speech_pcap
from tests.e2e.sipp import DATA, sipp
from tests.helpers import ServerProcess, free_port, free_udp_tcp_port, running_server
from tests.kamailio import kamailio_front
from tests.store.postgres import PostgresServer, start_postgres

NODE_HOSTS = ["127.0.0.2", "127.0.0.3"]
#: The first node's RTP ports; each node takes 4,000, each cluster 8,000.
RTP_BASE = 40000
#: A step whose INVITE → 200 OK p50 exceeds this is not sustained (calls queue up).
SETUP_P50_BOUND_MS = 250.0
#: The achieved set-up rate must be at least this share of the offered one.
ACHIEVED_SHARE = 0.9
#: How long each step first samples the processes idle (no calls): their baseline CPU
#: (lease renewals, probes, pollers) is taken off the CPU per call.
IDLE_SAMPLE_SECS = 3.0


def tree_pids(pid: int) -> list[int]:
    """``pid`` and its descendants now (Kamailio's and PostgreSQL's children)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        with contextlib.suppress(OSError):
            todo += [int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
    return found


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid``, its live descendants and the children it reaped."""
    total = 0.0
    for p in tree_pids(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return total


def machine_idle() -> tuple[float, float]:
    """(idle, total) jiffies of the whole machine."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return values[3] + values[4], sum(values)


@dataclass
class Step:
    nodes: int
    offered: float
    placed: int
    answered: int = 0
    failed: int = 0
    setup_cps: float = 0.0
    setup_p50_ms: float = 0.0
    setup_p99_ms: float = 0.0
    per_node: dict[str, int] = field(default_factory=dict)
    forwarded: int = 0
    redis_commands_per_call: float = 0.0  # all nodes' (and the bench's few INFOs)
    # INFO commandstats: each command's calls per call (a script's inner ones included)
    redis_commandstats_per_call: dict[str, float] = field(default_factory=dict)
    # pg_stat_database of the cluster's database: transactions, and rows read (returned
    # by scans), per call; PostgreSQL publishes a backend's counts within a second or
    # so of its transaction (an idle one's within 10 s: the idle sample comes first)
    pg_transactions_per_call: float = 0.0
    pg_rows_read_per_call: float = 0.0
    # pg_stat_user_tables: rows read by sequential scans + fetched by index scans
    pg_table_rows_per_call: dict[str, float] = field(default_factory=dict)
    webhook_lag_p50_ms: float = 0.0  # an event's occurred_at → the application has it
    answer_p50_ms: float = 0.0  # the answer's POST → its response, at the application
    server_cpu_ms_per_call: float = 0.0  # the nodes', above their idle baseline
    idle_cpu_pct: dict[str, float] = field(default_factory=dict)  # node -> idle baseline
    runqueue_wait_pct: dict[str, float] = field(default_factory=dict)  # node main thread
    cpu_pct: dict[str, float] = field(default_factory=dict)  # process -> % of one core
    machine_idle_pct: float = 0.0
    api_errors: dict[str, int] = field(default_factory=dict)

    @property
    def sustained(self) -> bool:
        return (self.answered == self.placed and self.failed == 0
                and self.setup_cps >= ACHIEVED_SHARE * self.offered
                and self.setup_p50_ms <= SETUP_P50_BOUND_MS)


class Apps:
    """The application on its own event loop (a thread): one webhook port per node."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.apps: list[Application] = []

    def add(self, api: ApiClient) -> int:
        app = Application(api, bridge=False)
        port = free_port()

        async def listen() -> None:
            await self.loop.create_server(lambda: App(app), "127.0.0.1", port)

        asyncio.run_coroutine_threadsafe(listen(), self.loop).result(10)
        self.apps.append(app)
        return port

    def close(self) -> None:
        for app in self.apps:
            asyncio.run_coroutine_threadsafe(app.api.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@dataclass
class Cluster:
    pg: PostgresServer
    database: str
    redis_pid: int
    redis_url: str
    nodes: dict[str, ServerProcess]
    front_pid: int
    front_target: str
    apps: Apps
    workdir: Path

    def owners(self) -> dict[str, int]:
        rows = self.pg.psql("SELECT owner, count(*) FROM calls GROUP BY owner",
                            self.database).splitlines()
        return {owner: int(n) for owner, n in (row.split("|") for row in rows)}

    def forwarded(self) -> int:
        total = 0.0
        for node in self.nodes.values():
            with node.client() as api:
                for line in api.get("/metrics").text.splitlines():
                    if line.startswith("callstream_http_forwarded_total"):
                        total += float(line.rsplit(" ", 1)[1])
        return int(total)

    def redis_commands(self) -> int:
        redis = Redis.from_url(self.redis_url)
        try:
            return int(redis.info("stats")["total_commands_processed"])
        finally:
            redis.close()

    def redis_commandstats(self) -> dict[str, int]:
        redis = Redis.from_url(self.redis_url)
        try:
            return {name.removeprefix("cmdstat_"): int(stats["calls"])
                    for name, stats in redis.info("commandstats").items()}
        finally:
            redis.close()

    def pg_activity(self) -> tuple[int, int]:
        """(transactions, rows returned) of the cluster's database so far."""
        row = self.pg.psql("SELECT xact_commit + xact_rollback, tup_returned "
                           "FROM pg_stat_database WHERE datname = current_database()",
                           self.database)
        xacts, rows = row.split("|")
        return int(xacts), int(rows)

    def pg_table_rows(self) -> dict[str, int]:
        """Rows each table has had read by scans so far (sequential and index)."""
        rows = self.pg.psql("SELECT relname, seq_tup_read + coalesce(idx_tup_fetch, 0) "
                            "FROM pg_stat_user_tables", self.database).splitlines()
        return {name: int(n) for name, n in (row.split("|") for row in rows)}

    def processes(self) -> dict[str, int]:
        postmaster = int((self.pg.directory / "data" / "postmaster.pid")
                         .read_text().split()[0])
        procs = {name: node.proc.pid for name, node in self.nodes.items()
                 if node.proc is not None}
        return {**procs, "kamailio": self.front_pid, "postgresql": postmaster,
                "redis": self.redis_pid}


@contextmanager
def cluster(workdir: Path, pg: PostgresServer, redis_url: str, count: int, rtp_base: int
            ) -> Iterator[Cluster]:
    speech_pcap(workdir / "speech.pcap", tone(440, 1.0), "PCMU")
    db = pg.new_database()
    with ExitStack() as stack:
        apps = Apps()
        stack.callback(apps.close)
        redis = Redis.from_url(redis_url)
        redis_pid = int(redis.info("server")["process_id"])
        redis.close()
        nodes: dict[str, ServerProcess] = {}
        for n, host in enumerate(NODE_HOSTS[:count]):
            node_id = f"node-{'ab'[n]}"
            key_dir = workdir / node_id
            # Each node's webhooks go to a port of the application's own, so it answers
            # the call at the node that told it (the owner, but when another claimed it).
            hook_port = apps.add(ApiClient(0, ""))  # its node's port and key: below
            rtp = rtp_base + 4000 * n
            nodes[node_id] = stack.enter_context(running_server(key_dir, {
                "CALLSTREAM_DATABASE_URL": db, "CALLSTREAM_REDIS_URL": redis_url,
                "CALLSTREAM_NODE_ID": node_id,
                "CALLSTREAM_WEBHOOK_URL": f"http://127.0.0.1:{hook_port}/hooks",
                "CALLSTREAM_SIP_RATE_LIMIT_PER_SEC": "0",
                "CALLSTREAM_SIP_MAX_PARKED_PER_SOURCE": "0",
                "CALLSTREAM_RTP_PORT_MIN": str(rtp),
                "CALLSTREAM_RTP_PORT_MAX": str(rtp + 3999)}, host))
        for app, node in zip(apps.apps, nodes.values(), strict=True):
            app.api = ApiClient(node.http_port, node.api_key, host=node.host)
        front = stack.enter_context(kamailio_front(
            workdir / "kamailio", [f"{s.host}:{s.sip_port}" for s in nodes.values()],
            ["127.0.0.1"]))
        yield Cluster(pg, db.rsplit("/", 1)[1], redis_pid, redis_url, nodes, front.proc.pid,
                      front.target, apps, workdir)


def run_step(c: Cluster, rate: float, seconds: float, hold: float) -> Step:
    placed = max(1, round(rate * seconds))
    step = Step(len(c.nodes), rate, placed)
    workdir = c.workdir / f"step-{len(c.nodes)}-{rate:g}"
    workdir.mkdir()
    (workdir / "speech.pcap").symlink_to(c.workdir / "speech.pcap")
    for app in c.apps.apps:
        app.step = StepState()
    owners, forwarded, commands = c.owners(), c.forwarded(), c.redis_commands()
    commandstats, pg_activity = c.redis_commandstats(), c.pg_activity()
    table_rows = c.pg_table_rows()
    procs = c.processes()
    idle_from = {name: tree_cpu(procs[name]) for name in c.nodes}
    time.sleep(IDLE_SAMPLE_SECS)
    before = {name: tree_cpu(pid) for name, pid in procs.items()}
    idle_rate = {name: (before[name] - idle_from[name]) / IDLE_SAMPLE_SECS
                 for name in c.nodes}
    waited = {name: runqueue_wait(procs[name]) for name in c.nodes}
    bench_before = time.process_time()
    idle0, total0 = machine_idle()
    start = time.monotonic()
    proc = sipp("-sf", str(DATA / "uac_front.xml"), "-i", "127.0.0.1",
                "-p", str(free_udp_tcp_port()), "-mp", str(free_udp_tcp_port()),
                "-m", str(placed), "-l", str(placed), "-r", str(rate),
                "-d", str(int(hold * 1000)), "-s", "+15550002222",
                "-trace_stat", "-trace_rtt", "-rtt_freq", "1", "-max_socket", "10000",
                c.front_target, cwd=workdir, timeout=seconds + hold + 120)
    sipp_cpu = 0.0
    while proc.poll() is None:
        with contextlib.suppress(OSError):
            sipp_cpu = cpu_seconds(proc.pid)
        time.sleep(0.2)
    # The last calls' hangup webhooks: delivered within a second or two.
    deadline = time.monotonic() + 15
    while (sum(a.step.hungup for a in c.apps.apps) < sum(a.step.initiated
                                                          for a in c.apps.apps)
           and time.monotonic() < deadline):
        time.sleep(0.1)
    elapsed = time.monotonic() - start
    after = {name: tree_cpu(pid) for name, pid in procs.items()}
    idle1, total1 = machine_idle()
    rtt = read_rtt(workdir)
    stat = read_stat(workdir)
    step.answered = len(rtt)
    step.failed = int(stat.get("FailedCall(C)", "0") or 0)
    if len(rtt) > 1:
        span = max(t for t, _ in rtt) - min(t - ms / 1000 for t, ms in rtt)
        step.setup_cps = round((len(rtt) - 1) / span, 1)
    step.setup_p50_ms = round(pct([ms for _, ms in rtt], 0.5), 1)
    step.setup_p99_ms = round(pct([ms for _, ms in rtt], 0.99), 1)
    step.per_node = {n: v - owners.get(n, 0) for n, v in c.owners().items()
                     if v - owners.get(n, 0)}
    step.forwarded = c.forwarded() - forwarded
    step.redis_commands_per_call = round((c.redis_commands() - commands)
                                         / max(1, step.answered), 1)
    per_call = max(1, step.answered)
    step.redis_commandstats_per_call = {
        name: round((n - commandstats.get(name, 0)) / per_call, 2)
        for name, n in sorted(c.redis_commandstats().items())
        if n - commandstats.get(name, 0) and name != "info"}
    time.sleep(1.5)  # the nodes' last transactions published in pg_stat_database
    xacts, rows = c.pg_activity()
    step.pg_transactions_per_call = round((xacts - pg_activity[0]) / per_call, 1)
    step.pg_rows_read_per_call = round((rows - pg_activity[1]) / per_call, 1)
    step.pg_table_rows_per_call = {
        name: round((n - table_rows.get(name, 0)) / per_call, 1)
        for name, n in sorted(c.pg_table_rows().items()) if n - table_rows.get(name, 0)}
    node_cpu = sum(after[n] - before[n] - idle_rate[n] * elapsed for n in c.nodes)
    step.idle_cpu_pct = {n: round(100 * idle_rate[n], 1) for n in c.nodes}
    step.runqueue_wait_pct = {n: round(100 * (runqueue_wait(procs[n]) - waited[n])
                                       / elapsed, 1) for n in c.nodes}
    step.server_cpu_ms_per_call = round(1000 * node_cpu / max(1, step.answered), 1)
    step.cpu_pct = {name: round(100 * (after[name] - before[name]) / elapsed, 1)
                    for name in procs}
    step.cpu_pct["sipp"] = round(100 * sipp_cpu / elapsed, 1)
    step.cpu_pct["bench (app)"] = round(100 * (time.process_time() - bench_before)
                                        / elapsed, 1)
    step.machine_idle_pct = round(100 * (idle1 - idle0) / max(1, total1 - total0), 1)
    errors: dict[str, int] = {}
    for app in c.apps.apps:
        for k, v in app.step.api_errors.items():
            errors[k] = errors.get(k, 0) + v
    step.api_errors = errors
    step.webhook_lag_p50_ms = round(1000 * pct([v for a in c.apps.apps
                                                 for v in a.step.hook_lag], 0.5), 1)
    step.answer_p50_ms = round(1000 * pct([v for a in c.apps.apps
                                            for v in a.step.api_seconds], 0.5), 1)
    time.sleep(1)  # the front's and the nodes' dialog state settles
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1, 2])
    parser.add_argument("--rates", type=lambda s: [float(x) for x in s.split(",")],
                        default=[20, 30, 40, 50, 60, 70, 80, 90, 100])
    parser.add_argument("--seconds", type=float, default=8.0,
                        help="how long each step offers calls")
    parser.add_argument("--hold", type=float, default=2.0,
                        help="each call's pause after its 1 s of audio")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    pg, stop_pg = start_postgres(durable=True)
    steps: list[Step] = []
    try:
        with ExitStack() as stack:
            # Every node count's cluster is up from the start (its own Redis, database,
            # front and RTP ports), and each rate is offered to one after the other, in
            # turn first: the machine's other tenants load both alike.
            clusters: dict[int, Cluster] = {}
            for n, count in enumerate(args.nodes):
                redis_url = stack.enter_context(private_redis())
                tmp = stack.enter_context(
                    tempfile.TemporaryDirectory(prefix="bench-cluster-setup-"))
                clusters[count] = stack.enter_context(
                    cluster(Path(tmp), pg, redis_url, count, RTP_BASE + 8000 * n))
            climbing = list(args.nodes)
            for i, rate in enumerate(args.rates):
                for count in climbing[::-1] if i % 2 else list(climbing):
                    step = run_step(clusters[count], rate, args.seconds, args.hold)
                    steps.append(step)
                    print(f"{count} node(s) at {rate:g}/s: {step.setup_cps}/s, "
                          f"p50 {step.setup_p50_ms} ms, failed {step.failed}",
                          file=sys.stderr)
                    if not step.sustained and step.setup_cps < ACHIEVED_SHARE * rate:
                        climbing.remove(count)  # past the knee: more only queues more
                if not climbing:
                    break
    finally:
        subprocess.run(stop_pg, capture_output=True, timeout=60)
    steps.sort(key=lambda s: (s.nodes, s.offered))

    print("| nodes | offered/s | answered / failed | set-up/s | INVITE → 200 OK p50 / p99 ms "
          "| calls per node | answers forwarded | webhook lag p50 ms | answer p50 ms "
          "| Redis commands per call | PostgreSQL transactions / rows read per call "
          "| server CPU ms per call | sustained |")
    print("|---" * 13 + "|")
    for s in steps:
        print(f"| {s.nodes} | {s.offered:g} | {s.answered} / {s.failed} | {s.setup_cps} "
              f"| {s.setup_p50_ms} / {s.setup_p99_ms} "
              f"| {' / '.join(str(v) for _, v in sorted(s.per_node.items()))} "
              f"| {s.forwarded} | {s.webhook_lag_p50_ms} | {s.answer_p50_ms} "
              f"| {s.redis_commands_per_call} "
              f"| {s.pg_transactions_per_call} / {s.pg_rows_read_per_call} "
              f"| {s.server_cpu_ms_per_call} "
              f"| {'yes' if s.sustained else 'no'} |")
    print("\nRedis commands per call (INFO commandstats; a script's inner commands "
          "included) and PostgreSQL rows read per call, by table:\n")
    for s in steps:
        print(f"- {s.nodes} node(s) at {s.offered:g}/s: " + ", ".join(
            f"{name} {v}" for name, v in s.redis_commandstats_per_call.items())
            + "; PostgreSQL rows read per call by table: " + ", ".join(
            f"{name} {v}" for name, v in s.pg_table_rows_per_call.items()))
    names = sorted({n for s in steps for n in s.cpu_pct},
                   key=lambda n: (not n.startswith("node"), n))
    print("\nCPU per process, % of one core over the step (a node's: its run-queue wait, "
          "and its idle baseline):\n")
    print("| nodes | offered/s | " + " | ".join(names) + " | machine idle |")
    print("|---" * (3 + len(names)) + "|")
    for s in steps:
        cells = []
        for n in names:
            if n not in s.cpu_pct:
                cells.append("")
            elif n in s.runqueue_wait_pct:
                cells.append(f"{s.cpu_pct[n]} (wait {s.runqueue_wait_pct[n]}, "
                             f"idle {s.idle_cpu_pct[n]})")
            else:
                cells.append(str(s.cpu_pct[n]))
        print(f"| {s.nodes} | {s.offered:g} | " + " | ".join(cells)
              + f" | {s.machine_idle_pct} % |")
    best = {n: max((s.setup_cps for s in steps if s.nodes == n and s.sustained), default=0.0)
            for n in args.nodes}
    print("\nmaximum sustained set-up rate: "
          + ", ".join(f"{n} node(s) {v}/s" for n, v in best.items())
          + (f"; 2 / 1 = {best[2] / best[1]:.2f} times" if best.get(1) and best.get(2) else "")
          + f"\n{os.cpu_count()} CPUs ({platform.platform()}); sustained: every call "
          f"answered, none failed, ≥ {ACHIEVED_SHARE:.0%} of the offered rate, set-up p50 "
          f"≤ {SETUP_P50_BOUND_MS:g} ms")
    if args.json:
        args.json.write_text(json.dumps({
            "seconds": args.seconds, "hold": args.hold, "cpus": os.cpu_count(),
            "max_sustained": best,
            "steps": [{**asdict(s), "sustained": s.sustained} for s in steps]}, indent=2))


if __name__ == "__main__":
    main()
