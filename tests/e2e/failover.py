"""A node SIGKILLed under live calls, measured: the rig that tests/e2e/test_failover.py
runs at a few calls and bench/failover.py at 100.

Two ``callstream serve`` nodes (``node-a`` on 127.0.0.2, ``node-b`` on 127.0.0.3) share
one PostgreSQL database and one Redis, behind the shipped Kamailio front; SIPp places
the calls through the front, and one webhook receiver gets both nodes' webhooks. The
receiver *stalls* while the calls arrive and are answered, so every node holds webhook
events in flight (leased in the outbox) when node A is killed with SIGKILL; it is let go
at once after the kill (a held POST is then refused with 503: a live sender retries it).
The application answers each call as ``GET /v2/calls`` lists it (the stalled receiver
tells it nothing) and forks the audio it receives to a socket of the rig's; each caller
plays a pcap of distinct frames that outlasts the measurement, so the fork shows whether
the survivor's calls got every frame, in order, byte-identical, across the kill.

:func:`kill_victim` then measures what the survivor does: each of A's calls ended with
one ``call.hangup``, when; every webhook delivered and in its call's order; B's calls
left alone, their audio intact; the front's ``is down`` for A, and where new calls
go after it.
"""

from __future__ import annotations

import signal
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from redis import Redis

from callstream.cluster.leases import call_key
from callstream.config import Settings
from tests.audio import rtp_packets, write_pcap
from tests.e2e.fork_sink import ForkSink, check_frames
from tests.e2e.sipp import DATA, sipp
from tests.helpers import ServerProcess, free_udp_tcp_port, running_server
from tests.kamailio import Front, kamailio_front
from tests.receiver import Delivery, Receiver, webhook_receiver
from tests.store.postgres import PostgresServer

VICTIM, SURVIVOR = "node-a", "node-b"
NODE_HOSTS = {VICTIM: "127.0.0.2", SURVIVOR: "127.0.0.3"}
RTP_PORTS = {VICTIM: 46000, SURVIVOR: 50000}  # 4,000 each
#: How long the calls last: far past the measurement (SIPp is killed at the end).
HOLD_MS = 600_000
#: How long each caller plays audio: past the measurement too, so the fork's packets
#: cover before, during and after the kill.
AUDIO_SECS = 150
#: The outbox lease a dead node's events would otherwise wait out (webhooks/worker.py).
OUTBOX_LEASE_SECS = 60.0
#: The nodes' call lease and failover scan period: the defaults, unless a rig asks for
#: others (the test's shorter ones end A's calls sooner).
DEFAULT_LEASE_SECS = float(Settings.model_fields["call_lease_secs"].default)
DEFAULT_SCAN_SECS = float(Settings.model_fields["failover_scan_secs"].default)


@dataclass
class Rig:
    pg: PostgresServer
    database: str  # its name on ``pg``
    redis: Redis
    hooks: Receiver
    nodes: dict[str, ServerProcess]
    front: Front
    workdir: Path
    sent: list[bytes]  # the RTP packets each caller sends, in order (each distinct)
    forks: ForkSink  # where each answered call's received audio is forked
    scan_secs: float  # the nodes' failover scan period
    sipps: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def sql(self, query: str) -> str:
        return self.pg.psql(query, self.database)


@dataclass
class Report:
    calls: int
    per_node: dict[str, int]
    victim_leased_at_kill: int  # outbox events node A held in flight when killed
    held_by_receiver: int  # POSTs the stalled receiver took but never answered
    liveness_expired_s: float
    front_down_s: float
    hangup_s: dict[str, float]  # p50 / max over A's calls, from the kill to delivery
    all_delivered_s: float  # from the kill to the outbox empty (every event delivered)
    webhooks_released: int  # counted by B (callstream_failover_webhooks_released_total)
    victim_hangups: dict[str, int]  # call -> call.hangup deliveries (distinct events)
    hangup_causes: list[tuple[str, str]]  # distinct (hangup_cause, hangup_source)
    survivor_hangups: int  # call.hangup events of B's calls before the rig ends
    survivor_alive: int  # B's calls still alive (GET /v2/calls/{id}) at the end
    order_violations: list[str]  # calls whose first deliveries are out of order
    duplicates: int  # deliveries of an event already delivered (at-least-once)
    after_down_calls: dict[str, int]  # new calls placed after "is down": node -> count
    after_down_failed: int
    # B's calls' audio, forked by B (fork_start rx) from the answer to the rig's end:
    survivor_frames: int  # packets checked, all calls
    survivor_audio_problems: list[str]  # calls whose packets were not sent[k:k + n]
    survivor_audio_span_s: tuple[float, float]  # latest first, earliest last packet
    survivor_max_gap_ms: float  # longest gap between two packets of one call


@contextmanager
def failover_rig(workdir: Path, pg: PostgresServer, redis_url: str,
                 lease_secs: float = DEFAULT_LEASE_SECS,
                 scan_secs: float = DEFAULT_SCAN_SECS) -> Iterator[Rig]:
    # Noise: every 20 ms frame differs, so a lost, repeated or reordered one shows.
    noise = np.random.default_rng(14).integers(-8000, 8000, AUDIO_SECS * 8000, "<i2")
    sent = rtp_packets(noise.tobytes(), "PCMU")
    write_pcap(workdir / "speech.pcap", sent)
    db = pg.new_database()
    with ExitStack() as stack:
        forks = ForkSink()
        stack.callback(forks.close)
        hooks = stack.enter_context(webhook_receiver())
        redis = Redis.from_url(redis_url)
        stack.callback(redis.close)
        common = {"CALLSTREAM_DATABASE_URL": db, "CALLSTREAM_REDIS_URL": redis_url,
                  "CALLSTREAM_WEBHOOK_URL": hooks.url,
                  "CALLSTREAM_CALL_LEASE_SECS": str(lease_secs),
                  "CALLSTREAM_FAILOVER_SCAN_SECS": str(scan_secs),
                  # The stalled receiver holds POSTs longer than the default 10 s.
                  "CALLSTREAM_WEBHOOK_TIMEOUT_SECS": "60",
                  # Behind a front every caller is the front's address (docs/cluster.md).
                  "CALLSTREAM_SIP_RATE_LIMIT_PER_SEC": "0",
                  "CALLSTREAM_SIP_MAX_PARKED_PER_SOURCE": "0"}
        nodes = {}
        for node_id, host in NODE_HOSTS.items():
            rtp = RTP_PORTS[node_id]
            nodes[node_id] = stack.enter_context(running_server(workdir / node_id, {
                **common, "CALLSTREAM_NODE_ID": node_id,
                "CALLSTREAM_RTP_PORT_MIN": str(rtp),
                "CALLSTREAM_RTP_PORT_MAX": str(rtp + 3999)}, host))
        front = stack.enter_context(kamailio_front(
            workdir / "kamailio", [f"{s.host}:{s.sip_port}" for s in nodes.values()],
            ["127.0.0.1"]))
        rig = Rig(pg, db.rsplit("/", 1)[1], redis, hooks, nodes, front, workdir, sent,
                  forks, scan_secs)
        try:
            yield rig
        finally:
            hooks.stall.clear()
            for proc in rig.sipps:
                proc.kill()
                proc.wait()


def place(rig: Rig, name: str, calls: int, rate: int, hold_ms: int = HOLD_MS
          ) -> subprocess.Popen[bytes]:
    """SIPp places ``calls`` calls through the front, ``rate`` a second."""
    workdir = rig.workdir / name
    workdir.mkdir()
    (workdir / "speech.pcap").symlink_to(rig.workdir / "speech.pcap")
    proc = sipp("-sf", str(DATA / "uac_front.xml"), "-i", "127.0.0.1",
                "-p", str(free_udp_tcp_port()), "-mp", str(free_udp_tcp_port()),
                "-m", str(calls), "-l", str(calls), "-r", str(rate), "-d", str(hold_ms),
                "-s", "+15550002222", "-trace_stat", "-stf", "stat.csv",
                rig.front.target, cwd=workdir, timeout=hold_ms / 1000 + 120)
    rig.sipps.append(proc)
    return proc


def failed_calls(rig: Rig, name: str) -> int:
    rows = (rig.workdir / name / "stat.csv").read_text().splitlines()
    header, last = rows[0].split(";"), rows[-1].split(";")
    return int(last[header.index("FailedCall(C)")])


def live_calls(rig: Rig) -> set[str]:
    """Every node's live calls, as any node lists them (``GET /v2/calls`` on B)."""
    with rig.nodes[SURVIVOR].client() as api:
        listed = api.get("/v2/calls")
    listed.raise_for_status()
    return {str(c["call_control_id"]) for c in listed.json()["data"]}


def answer_arrivals(rig: Rig, count: int, known: set[str], timeout: float,
                    fork: bool = False) -> set[str]:
    """The application: answer each new call as it is listed (the stalled receiver
    tells it nothing), at node B (a call of A's is forwarded to A), until ``count``;
    with ``fork``, fork the audio each receives to its own socket of ``rig.forks``."""
    answered: set[str] = set()
    deadline = time.monotonic() + timeout
    with rig.nodes[SURVIVOR].client() as api:
        while len(answered) < count:
            assert time.monotonic() < deadline, f"{len(answered)} of {count} calls arrived"
            for ccid in sorted(live_calls(rig) - known - answered):
                r = api.post(f"/v2/calls/{ccid}/actions/answer", json={})
                assert r.status_code == 200, f"answer {ccid}: {r.status_code} {r.text}"
                if fork:
                    r = api.post(f"/v2/calls/{ccid}/actions/fork_start",
                                 json={"rx": rig.forks.target(ccid),
                                       "tx": rig.forks.target(f"{ccid} tx")})
                    assert r.status_code == 200, f"fork {ccid}: {r.status_code} {r.text}"
                answered.add(ccid)
            time.sleep(0.05)
    return answered


def owners(rig: Rig, ccids: set[str], timeout: float = 30.0) -> dict[str, str]:
    """Each call's owner, from its Redis lease (written at the owner's next renewal)."""
    deadline = time.monotonic() + timeout
    while True:
        found = {c: rig.redis.get(call_key(c)) for c in ccids}
        if all(found.values()):
            return {c: owner.decode() for c, owner in found.items() if owner}
        assert time.monotonic() < deadline, "calls never leased in Redis"
        time.sleep(0.1)


def _pending(rig: Rig) -> int:
    return int(rig.sql("SELECT count(*) FROM webhook_outbox WHERE status = 'pending'"))


def _released(server: ServerProcess) -> int:
    with server.client() as api:
        for line in api.get("/metrics").text.splitlines():
            if line.startswith("callstream_failover_webhooks_released_total "):
                return int(float(line.split()[1]))
    return 0


def kill_victim(rig: Rig, calls: int, rate: int, after_down_calls: int,
                timeout: float = 120.0) -> Report:
    """Place ``calls`` calls while the receiver stalls, SIGKILL node A, and measure."""
    hooks = rig.hooks
    hooks.stall.set()
    place(rig, "calls", calls, rate)
    ccids = answer_arrivals(rig, calls, set(), timeout=calls / rate + 60, fork=True)
    owner = owners(rig, ccids)
    victims = {c for c, n in owner.items() if n == VICTIM}
    survivors = ccids - victims
    # Every answered event is committed; those of A's claims are stuck in flight.
    deadline = time.monotonic() + 30
    while (leased := int(rig.sql(
            "SELECT count(*) FROM webhook_outbox WHERE status = 'pending'"
            f" AND lease_owner = '{VICTIM}'"))) == 0 and victims:
        assert time.monotonic() < deadline, "node A never claimed a webhook"
        time.sleep(0.1)

    mark = len(rig.front.log())
    assert rig.nodes[VICTIM].stop(signal.SIGKILL) == -signal.SIGKILL
    killed = time.monotonic()
    with hooks.lock:
        held = len(hooks.held)
    hooks.stall.clear()
    down_at: list[float] = []

    def watch_front() -> None:
        with suppress(AssertionError):  # never logged: front_down_s stays -1
            rig.front.wait_log(f"callstream node sip:{NODE_HOSTS[VICTIM]}:"
                               f"{rig.nodes[VICTIM].sip_port} is down",
                               timeout=timeout, after=mark)
            down_at.append(time.monotonic())

    watcher = threading.Thread(target=watch_front, daemon=True)
    watcher.start()

    expired = delivered = None
    hangup_at: dict[str, float] = {}
    while time.monotonic() < killed + timeout:
        now = time.monotonic()
        if expired is None and not rig.redis.exists(f"callstream:node:{VICTIM}"):
            expired = now - killed
        for d in hooks.events("call.hangup"):
            ccid = str(d.payload["call_control_id"])
            if ccid in victims:
                hangup_at.setdefault(ccid, d.at - killed)
        if len(hangup_at) == len(victims) and _pending(rig) == 0:
            delivered = time.monotonic() - killed
            break
        time.sleep(0.1)
    watcher.join(timeout)
    assert expired is not None and delivered is not None, (
        f"not done {timeout} s after the kill: {len(hangup_at)} of {len(victims)} hangups, "
        f"{_pending(rig)} webhooks pending")

    # New calls after the front took A out: all go to B.
    name = "after-down"
    proc = place(rig, name, after_down_calls, rate, hold_ms=1000)
    late = answer_arrivals(rig, after_down_calls, ccids, timeout=60)
    with suppress(subprocess.TimeoutExpired):
        proc.wait(60)
    late_owners: dict[str, int] = {}
    for row in rig.sql("SELECT owner FROM calls WHERE call_control_id IN ("
                       + ",".join(f"'{c}'" for c in late) + ")").splitlines():
        late_owners[row] = late_owners.get(row, 0) + 1

    # A scan and a half: a second hangup of any call would come by now.
    time.sleep(1.5 * rig.scan_secs)
    audio = {c: check_frames(rig.sent, rig.forks.arrivals(c)) for c in survivors}
    events = hooks.events()
    by_call: dict[str, list[Delivery]] = {}
    first: dict[str, Delivery] = {}
    for d in events:
        event_id = str(d.json["data"]["id"])
        if event_id not in first:
            first[event_id] = d
            by_call.setdefault(str(d.payload["call_control_id"]), []).append(d)
    order = ["call.initiated", "call.answered", "call.fork.started", "call.hangup"]
    violations = []
    for ccid in ccids:
        kinds = [d.event_type for d in by_call.get(ccid, [])]
        want = order if ccid in victims else order[:3]
        if kinds != want:
            violations.append(f"{ccid}: {kinds}")
    victim_hangups = {c: sum(1 for d in by_call.get(c, []) if d.event_type == "call.hangup")
                      for c in victims}
    causes = sorted({(str(d.payload["hangup_cause"]), str(d.payload["hangup_source"]))
                     for c in victims for d in by_call.get(c, [])
                     if d.event_type == "call.hangup"})
    with rig.nodes[SURVIVOR].client() as api:
        alive = sum(1 for c in survivors
                    if api.get(f"/v2/calls/{c}").json()["data"]["is_alive"])
    times = sorted(hangup_at.values())
    return Report(
        calls=calls,
        per_node={VICTIM: len(victims), SURVIVOR: len(survivors)},
        victim_leased_at_kill=leased,
        held_by_receiver=held,
        liveness_expired_s=round(expired, 2),
        front_down_s=round(down_at[0] - killed, 2) if down_at else -1.0,
        hangup_s={"p50": round(statistics.median(times), 2) if times else 0.0,
                  "max": round(times[-1], 2) if times else 0.0},
        all_delivered_s=round(delivered, 2),
        webhooks_released=_released(rig.nodes[SURVIVOR]),
        victim_hangups=victim_hangups,
        hangup_causes=causes,
        survivor_hangups=sum(1 for c in survivors for d in by_call.get(c, [])
                             if d.event_type == "call.hangup"),
        survivor_alive=alive,
        order_violations=violations,
        duplicates=len(events) - len(first),
        after_down_calls=late_owners,
        after_down_failed=failed_calls(rig, name),
        survivor_frames=sum(a.frames for a in audio.values()),
        survivor_audio_problems=sorted(f"{c}: {a.problem}" for c, a in audio.items()
                                       if a.problem),
        survivor_audio_span_s=(
            round(max((a.first_at for a in audio.values()), default=killed) - killed, 2),
            round(min((a.last_at for a in audio.values()), default=killed) - killed, 2)),
        survivor_max_gap_ms=round(1000 * max((a.max_gap_s for a in audio.values()),
                                             default=0.0), 1),
    )
