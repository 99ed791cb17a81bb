"""SIP load benchmark: call set-up rate and concurrent two-way RTP calls, end to end.

The whole path a user runs, on loopback:

* a real ``callstream serve`` process (SQLite store, webhook worker, SIP over UDP, RTP);
* **SIPp** places calls (UDP) at a fixed rate: INVITE with a PCMU offer, waits for
  200 OK, ACKs, plays a speech pcap as RTP (``play_pcap_audio``, 50 packets/s), holds,
  sends BYE;
* an **application** run by this script: a small asyncio HTTP server that takes
  callstream's webhooks and drives the calls through the REST API with the Bearer key
  from ``callstream keys create``: ``call.initiated`` → ``POST
  /v2/calls/{id}/actions/answer``; each ``call.answered`` is paired with the previous
  unpaired one → ``POST .../actions/bridge``. Bridging pairs is how the application makes
  callstream send RTP back: leg A's audio from SIPp goes out of leg B to SIPp and the
  other way round, 50 packets/s each way per call, through the media hub and the pacer
  (decode, mix, encode) — no synthetic source on either side.

Per step it reports the set-up rate achieved against the one offered (INVITE → 200 OK,
from SIPp's response-time trace), failed calls, the peak of concurrent answered calls,
the share of calls that had RTP both ways, server CPU % (``/proc/<pid>/stat``, one core
= 100 %), the share of the time its main thread was runnable but waiting for a CPU
(``/proc/<pid>/schedstat``: the other tenants of the machine), server CPU ms per call,
SIPp's and the application's CPU %, RTP received against expected and lost by sequence
number (from each ``call.hangup``'s ``call_quality_stats`` and ``/metrics``), pacer ticks
late or skipped, webhook latency (event time → received by the application) and the
answer/bridge API latency (request → response, at the application). With workers, the
server's CPU per call is also split: the supervisor's, the workers' together and the
busiest worker's share of it; ``proj/s`` projects the set-up rate where every process
had a core of its own (:func:`project`: calls per CPU-second of the process that would
fill its core first; read it from an unthrottled step where ``srv wait%`` is near 0).

Usage::

    python bench/sip_load.py                 # the default ladder (~2.5 min)
    python bench/sip_load.py --quick         # a short ladder (~1 min)
    python bench/sip_load.py --rates 100,200 --concurrency 500 --json out.json
    python bench/sip_load.py --quick --pyspy profile.txt   # + py-spy of the server
    python bench/sip_load.py --workers 1,2 --answer-only --concurrency 0   # set-up rate

``--workers 1,2`` runs the ladder against ``callstream serve --workers 1`` and then
``--workers 2``; server CPU is then the supervisor's and its workers' together, and the
counters read from ``/metrics`` are summed over the workers (each answers for itself).
``--answer-only`` answers the calls without bridging them (with several workers the two
legs of a pair are often on different workers, which cannot bridge), so the workload
is the same for every worker count: RTP in only.

Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cpu_limit import CpuLimit
from bench.http_framing import take_request
from tests.audio import rtp_packets, speech, write_pcap
from tests.helpers import ServerProcess, cli, free_port, free_udp_tcp_port

SIPP = shutil.which("sipp")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PACKETS_PER_SECOND = 50

SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="sip_load">
  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Load" <sip:+1555[call_number]@[local_ip]:[local_port]>;tag=[pid]T[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:sipp@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=sipp 1 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
      a=ptime:20
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rtd="true" timeout="{answer_timeout_ms}"/>
  <send>
    <![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Load" <sip:+1555[call_number]@[local_ip]:[local_port]>;tag=[pid]T[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <nop><action><exec play_pcap_audio="{pcap}"/></action></nop>
  <pause/>
  <send retrans="500">
    <![CDATA[
      BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Load" <sip:+1555[call_number]@[local_ip]:[local_port]>;tag=[pid]T[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv response="200" crlf="true" timeout="10000"/>
</scenario>
"""


# -- the application: webhooks in, REST commands out ---------------------------------


class ApiClient:
    """A minimal HTTP/1.1 keep-alive client (a pool of connections) for the REST API.

    httpx would work, but it costs the bench ~10x the CPU per request, and the bench
    shares the 2 cores with the server it measures.
    """

    def __init__(self, port: int, key: str, connections: int = 64,
                 host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port
        self.auth = f"Authorization: Bearer {key}\r\n".encode()
        self.size = connections
        self._idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )
        self._made = 0

    async def post(self, path: str, body: dict[str, Any]) -> tuple[int, bytes, float]:
        """Returns status, body and seconds taken (waiting for a free connection included).

        A kept-alive connection the server closed meanwhile (uvicorn drops idle ones
        after 5 s) is replaced and the request sent again, once.
        """
        start = time.perf_counter()
        data = orjson.dumps(body)
        request = (
            b"POST " + path.encode() + b" HTTP/1.1\r\nHost: " + self.host.encode() + b"\r\n"
            + self.auth
            + b"Content-Type: application/json\r\nContent-Length: "
            + str(len(data)).encode() + b"\r\n\r\n" + data
        )
        if self._idle.empty() and self._made < self.size:
            self._made += 1
            conn = None
        else:
            conn = await self._idle.get()
        for attempt in range(2):
            fresh = conn is None
            try:
                if conn is None:
                    conn = await asyncio.open_connection(self.host, self.port)
                reader, writer = conn
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                match = re.search(rb"(?i)content-length:\s*(\d+)", head)
                payload = await reader.readexactly(int(match.group(1))) if match else b""
            except (OSError, asyncio.IncompleteReadError):
                if conn is not None:
                    conn[1].close()
                conn = None
                if fresh or attempt:
                    self._made -= 1  # the slot is free again
                    raise
                continue
            self._idle.put_nowait(conn)
            return status, payload, time.perf_counter() - start
        raise AssertionError("unreachable")

    async def close(self) -> None:
        while not self._idle.empty():
            _, writer = self._idle.get_nowait()
            writer.close()


@dataclass
class StepState:
    initiated: int = 0
    answered: int = 0
    hungup: int = 0
    peak_live: int = 0
    api_errors: Counter[str] = field(default_factory=Counter)
    api_seconds: list[float] = field(default_factory=list)
    hook_lag: list[float] = field(default_factory=list)  # occurred_at → received
    quality: list[dict[str, dict[str, str]]] = field(default_factory=list)
    bridged: int = 0


class App(asyncio.Protocol):
    """Answers 200 to each webhook at once, then acts on it (the bench's application)."""

    def __init__(self, owner: Application) -> None:
        self.owner = owner
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while (request := take_request(self.buf)) is not None:
            body, self.buf = request
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            self.owner.on_event(orjson.loads(body)["data"])


class Application:
    def __init__(self, api: ApiClient, *, bridge: bool = True) -> None:
        self.api = api
        self.bridge = bridge
        self.step = StepState()
        self.live: set[str] = set()
        self.waiting: str | None = None  # an answered call with no partner yet
        self.tasks: set[asyncio.Task[None]] = set()

    def on_event(self, data: dict[str, Any]) -> None:
        kind = data["event_type"]
        ccid = data["payload"]["call_control_id"]
        step = self.step
        with contextlib.suppress(ValueError, KeyError):
            occurred = _parse_iso(data["occurred_at"])
            step.hook_lag.append(time.time() - occurred)
        if kind == "call.initiated":
            step.initiated += 1
            self._spawn(self._command(ccid, "answer", {}))
        elif kind == "call.answered":
            step.answered += 1
            self.live.add(ccid)
            step.peak_live = max(step.peak_live, len(self.live))
            if self.bridge and self.waiting is None:
                self.waiting = ccid
            elif self.bridge:
                other, self.waiting = self.waiting, None
                step.bridged += 2
                self._spawn(self._command(other, "bridge", {"call_control_id": ccid}))
        elif kind == "call.hangup":
            step.hungup += 1
            self.live.discard(ccid)
            if self.waiting == ccid:
                self.waiting = None
            stats = data["payload"].get("call_quality_stats")
            if stats:
                step.quality.append(stats)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _command(self, ccid: str, action: str, body: dict[str, Any]) -> None:
        try:
            status, payload, seconds = await self.api.post(
                f"/v2/calls/{ccid}/actions/{action}", body
            )
        except (OSError, asyncio.IncompleteReadError) as exc:
            self.step.api_errors[f"{action}: {type(exc).__name__}"] += 1
            return
        self.step.api_seconds.append(seconds)
        if status != 200:
            code = ""
            with contextlib.suppress(Exception):
                code = orjson.loads(payload)["errors"][0]["code"]
            self.step.api_errors[f"{action}: {status} {code}"] += 1


def _parse_iso(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# -- measuring ---------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def tree_cpu_seconds(pid: int) -> float:
    """CPU of ``pid`` and its child processes (a supervisor's workers), the children
    that already ended and were reaped included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = sum(int(v) for v in fields[11:15]) / CLK_TCK  # utime stime cutime cstime
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for child in children:
        with contextlib.suppress(OSError):
            total += cpu_seconds(int(child))
    return total


def process_cpu_seconds(pid: int) -> dict[int, float]:
    """CPU of ``pid`` alone and of each of its live child processes, by pid."""
    found = {pid: cpu_seconds(pid)}
    for child in _children(pid):
        with contextlib.suppress(OSError):
            found[child] = cpu_seconds(child)
    return found


def project(res: Result, pid: int, before: dict[int, float], after: dict[int, float],
            workers: int) -> None:
    """Split the step's server CPU by process and project the set-up rate on a machine
    where each process has a core of its own (and the load its own cores): calls per
    CPU-second of the process that would fill its core first (the supervisor, or the
    busiest worker, whose share of the calls the hash decided).

    An estimate, not a measurement: it holds CPU per call as measured while the rate
    grows, which a busier loop (more work per wake-up) tends to better. Take it from a
    step where nothing waits for a core (``srv wait%`` near 0) and no CPU budget
    throttles the server, so that what is divided is the work, not the waiting.
    """
    calls = res.answered
    if not calls:
        return
    used = {p: after[p] - before[p] for p in after if p in before}
    sup = used.pop(pid, 0.0) if workers > 1 else 0.0
    if not used:
        return
    res.supervisor_ms_per_call = round(1000 * sup / calls, 2)
    res.worker_ms_per_call = round(1000 * sum(used.values()) / calls, 2)
    res.busiest_worker_share = round(max(used.values()) / sum(used.values()), 2)
    res.projected_cps = round(calls / max(max(used.values()), sup), 1)


_WORKER_STARTED = re.compile(r"worker (\d+) started: pid \d+, HTTP on 127\.0\.0\.1:(\d+)")


def worker_ports(log: str) -> list[int]:
    """Each worker's own HTTP port (its latest start) from a supervisor's log."""
    return list({int(i): int(p) for i, p in _WORKER_STARTED.findall(log)}.values())


def runqueue_wait(pid: int) -> float:
    """Seconds the server's main thread has waited, runnable, for a CPU (schedstat)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


async def scrape_all(ports: list[int], key: str) -> dict[str, float]:
    """/metrics of every port, summed."""
    out: dict[str, float] = {}
    for port in ports:
        for name, value in (await scrape(port, key)).items():
            out[name] = out.get(name, 0.0) + value
    return out


#: How long /metrics may take to answer and close (a server that keeps the connection
#: open would otherwise hold the bench forever).
SCRAPE_TIMEOUT_S = 15.0


async def scrape(api_port: int, key: str) -> dict[str, float]:
    """The server's /metrics as {'name{labels}': value}."""
    reader, writer = await asyncio.open_connection("127.0.0.1", api_port)
    writer.write(
        f"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
        "Connection: close\r\n\r\n".encode()
    )
    try:
        raw = await asyncio.wait_for(reader.read(), SCRAPE_TIMEOUT_S)
    except TimeoutError:
        raise RuntimeError(f"/metrics on port {api_port}: no whole answer (closed) within "
                           f"{SCRAPE_TIMEOUT_S:g} s") from None
    finally:
        writer.close()
    out: dict[str, float] = {}
    for line in raw.split(b"\r\n\r\n", 1)[-1].decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    return out


def metric_delta(before: dict[str, float], after: dict[str, float], prefix: str) -> float:
    return sum(v - before.get(k, 0.0) for k, v in after.items() if k.startswith(prefix))


@dataclass
class Step:
    name: str
    rate: float
    hold_s: float
    calls: int


@dataclass
class Result:
    step: str
    workers: int
    offered_cps: float
    calls: int
    hold_s: float
    setup_cps: float = 0.0
    placed: int = 0  # INVITEs SIPp sent (fewer than calls if its time limit struck)
    answered: int = 0
    failed: int = 0
    setup_p50_ms: float = 0.0
    setup_p99_ms: float = 0.0
    peak_concurrent: int = 0
    two_way_rtp_pct: float = 0.0
    server_cpu_pct: float = 0.0
    server_wait_pct: float = 0.0
    cpu_ms_per_call: float = 0.0
    # The server's CPU per call by process (the supervisor's only with workers), the
    # busiest worker's share of the workers' CPU, and the projection they make (project).
    supervisor_ms_per_call: float = 0.0
    busiest_worker_share: float = 0.0  # of the workers' CPU
    worker_ms_per_call: float = 0.0
    projected_cps: float = 0.0
    machine_cpu_pct: float = 0.0
    sipp_cpu_pct: float = 0.0
    app_cpu_pct: float = 0.0
    rtp_in: int = 0
    rtp_in_expected: int = 0
    rtp_in_loss_pct: float = 0.0
    rtp_seq_lost: int = 0
    rtp_out: int = 0
    pacer_late: int = 0
    pacer_skipped: int = 0
    webhooks: int = 0
    webhook_p50_ms: float = 0.0
    webhook_p99_ms: float = 0.0
    api_p50_ms: float = 0.0
    api_p99_ms: float = 0.0
    api_errors: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    drain_s: float = 0.0  # after SIPp ended, until the server had no call left


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def read_rtt(workdir: Path) -> list[tuple[float, float]]:
    """(time the 200 OK arrived in s, INVITE→200 OK in ms) for every answered call."""
    rows = []
    for path in workdir.glob("*_rtt.csv"):
        for line in path.read_text().splitlines()[1:]:
            parts = line.split(";")
            with contextlib.suppress(ValueError, IndexError):
                rows.append((float(parts[0]) / 1000.0, float(parts[1])))
    return rows


def read_stat(workdir: Path) -> dict[str, str]:
    for path in workdir.glob("*_.csv"):
        rows = list(csv.reader(path.read_text().splitlines(), delimiter=";"))
        if len(rows) >= 2:
            return dict(zip(rows[0], rows[-1], strict=False))
    return {}


# -- the run -------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, root: Path) -> None:
        self.args = args
        self.root = root
        self.server: ServerProcess | None = None
        self.app: Application | None = None
        self.pcm = speech("two_cities", 8000)
        self.workers = 1

    def pcap_for(self, hold_s: float, workdir: Path) -> tuple[Path, int]:
        """A speech pcap a little shorter than the hold, so every packet is sent in-call."""
        seconds = max(0.4, hold_s - 0.5)
        pcm = self.pcm[: int(seconds * 8000) * 2]
        packets = rtp_packets(pcm, "PCMU")
        path = workdir / f"speech_{int(seconds * 1000)}ms.pcap"
        write_pcap(path, packets, src=("127.0.0.1", 6000), dst=("127.0.0.1", 6001))
        return path, len(packets)

    async def run_step(self, step: Step) -> Result:
        assert self.server is not None and self.server.proc is not None and SIPP is not None
        app = self.app
        assert app is not None
        key, http_port = self.server.api_key, self.server.http_port
        workdir = self.root / f"{step.name}-w{self.workers}"
        workdir.mkdir()
        pcap, per_call = self.pcap_for(step.hold_s, workdir)
        scenario = workdir / "load.xml"
        scenario.write_text(SCENARIO.format(pcap=pcap.name, answer_timeout_ms=10000))
        app.step = StepState()
        ports = worker_ports(self.server.log()) if self.workers > 1 else [http_port]
        metrics0 = await scrape_all(ports, key)
        pid = self.server.proc.pid
        cpu0, busy0, wall0 = tree_cpu_seconds(pid), machine_busy(), time.monotonic()
        procs0 = process_cpu_seconds(pid)
        wait0, app0 = runqueue_wait(pid), cpu_seconds(os.getpid())
        duration = step.calls / step.rate + step.hold_s + 15
        proc = await asyncio.create_subprocess_exec(
            SIPP, "-sf", str(scenario), "-i", "127.0.0.1", "-p", str(free_udp_tcp_port()),
            "-mp", str(free_udp_tcp_port()), "-r", str(step.rate), "-rp", "1000",
            "-m", str(step.calls), "-l", str(step.calls), "-d", str(int(step.hold_s * 1000)),
            "-s", "+15550002222", "-nostdin", "-timeout", str(int(duration)),
            "-timeout_error", "-trace_err", "-trace_stat", "-stf", str(workdir / "stat_.csv"),
            "-fd", "1", "-trace_rtt", "-rtt_freq", "1", "-max_socket", "50000",
            f"127.0.0.1:{self.server.sip_port}",
            cwd=workdir, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        sipp_cpu = 0.0
        while proc.returncode is None:
            with contextlib.suppress(OSError):
                sipp_cpu = cpu_seconds(proc.pid)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(proc.wait(), 0.5)
        wall1 = time.monotonic()
        cpu1, busy1, wait1 = tree_cpu_seconds(pid), machine_busy(), runqueue_wait(pid)
        procs1 = process_cpu_seconds(pid)
        # Let the server end every call and the last webhooks land before reading the
        # counters, so that no step's calls spill into the next one's figures.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            metrics1 = await scrape_all(ports, key)
            if (metrics1.get("callstream_active_calls", 0.0) == 0 and not app.tasks
                    and app.step.hungup >= app.step.answered):
                break
            await asyncio.sleep(0.25)
        drained = time.monotonic() - wall1
        await asyncio.sleep(0.5)
        metrics1 = await scrape_all(ports, key)
        wall = wall1 - wall0
        st = app.step
        rtt = read_rtt(workdir)
        stat = read_stat(workdir)
        res = Result(step.name, self.workers, step.rate, step.calls, step.hold_s,
                     wall_s=round(wall, 1))
        res.answered = len(rtt)
        res.placed = int(stat.get("OutgoingCall(C)", "0") or 0)
        res.drain_s = round(drained, 1)
        res.failed = int(stat.get("FailedCall(C)", "0") or 0)
        if rtt:
            first_invite = min(t - ms / 1000 for t, ms in rtt)
            last_answer = max(t for t, _ in rtt)
            span = max(last_answer - first_invite, 1e-3)
            res.setup_cps = round((len(rtt) - 1) / span if len(rtt) > 1 else 0.0, 1)
            res.setup_p50_ms = round(pct([ms for _, ms in rtt], 0.5), 1)
            res.setup_p99_ms = round(pct([ms for _, ms in rtt], 0.99), 1)
        res.peak_concurrent = st.peak_live
        two_way = sum(1 for q in st.quality if int(q["inbound"]["packet_count"]) > 0
                      and int(q["outbound"]["packet_count"]) > 0)
        res.two_way_rtp_pct = round(100 * two_way / max(st.answered, 1), 1)
        res.server_cpu_pct = round(100 * (cpu1 - cpu0) / wall, 1)
        res.server_wait_pct = round(100 * (wait1 - wait0) / wall, 1)
        res.cpu_ms_per_call = round(1000 * (cpu1 - cpu0) / max(len(rtt), 1), 2)
        project(res, pid, procs0, procs1, self.workers)
        res.sipp_cpu_pct = round(100 * sipp_cpu / wall, 1)
        res.app_cpu_pct = round(100 * (cpu_seconds(os.getpid()) - app0) / wall, 1)
        res.machine_cpu_pct = round(100 * (busy1[0] - busy0[0]) / max(busy1[1] - busy0[1], 1)
                                    * (os.cpu_count() or 1), 1)
        res.rtp_in = sum(int(q["inbound"]["packet_count"]) for q in st.quality)
        res.rtp_in_expected = per_call * len(st.quality)
        res.rtp_in_loss_pct = round(
            100 * (1 - res.rtp_in / res.rtp_in_expected) if res.rtp_in_expected else 0.0, 2)
        res.rtp_seq_lost = int(metric_delta(metrics0, metrics1, "callstream_rtp_lost_packets"))
        res.rtp_out = int(metric_delta(metrics0, metrics1,
                                       'callstream_rtp_packets_total{direction="sent"}'))
        res.pacer_late = int(metric_delta(metrics0, metrics1,
                                          'callstream_media_pacer_ticks_total{outcome="late"}'))
        res.pacer_skipped = int(metric_delta(
            metrics0, metrics1, 'callstream_media_pacer_ticks_total{outcome="skipped"}'))
        res.webhooks = len(st.hook_lag)
        res.webhook_p50_ms = round(1000 * pct(st.hook_lag, 0.5), 1)
        res.webhook_p99_ms = round(1000 * pct(st.hook_lag, 0.99), 1)
        res.api_p50_ms = round(1000 * pct(st.api_seconds, 0.5), 1)
        res.api_p99_ms = round(1000 * pct(st.api_seconds, 0.99), 1)
        res.api_errors = dict(st.api_errors)
        return res

    async def run(self, steps: list[Step], workers: int) -> list[Result]:
        self.workers = workers
        data = self.root / f"server-{workers}"
        data.mkdir()
        key = cli("keys", "create", data_dir=data).strip()
        api = ApiClient(0, key)
        app = self.app = Application(api, bridge=not self.args.answer_only)
        loop = asyncio.get_running_loop()
        hooks = await loop.create_server(lambda: App(app), "127.0.0.1", 0, backlog=1024)
        hook_port = hooks.sockets[0].getsockname()[1]
        env = {
            "CALLSTREAM_WEBHOOK_URL": f"http://127.0.0.1:{hook_port}/hooks",
            "CALLSTREAM_RTP_PORT_MIN": "40000",
            "CALLSTREAM_RTP_PORT_MAX": "49999",
            "CALLSTREAM_LOG_LEVEL": "warning",
            # SIPp is one source placing calls at the offered rate: admission's
            # per-source limits (docs/security/sip-admission.md) are not what is measured.
            "CALLSTREAM_SIP_RATE_LIMIT_PER_SEC": "0",
            "CALLSTREAM_SIP_MAX_PARKED_PER_SOURCE": "0",
            "CALLSTREAM_WORKERS": str(workers),
        }
        if self.args.callstream:  # another checkout's server, for before/after runs
            env["PYTHONPATH"] = self.args.callstream
        budget = None
        if self.args.cpu_per_worker:
            budget = CpuLimit(workers * self.args.cpu_per_worker,
                              f"callstream-sip-load-{os.getpid()}-{workers}")
            print(f"server CPU budget: {budget.cores:g} cores (cgroup {budget.path})",
                  flush=True)
        self.server = ServerProcess(data, free_port(), free_udp_tcp_port(), key, env=env,
                                    preexec=None if budget is None else budget.join)
        await loop.run_in_executor(None, self.server.start)
        api.port = self.server.http_port
        spies = []
        if self.args.pyspy:
            assert self.server.proc is not None
            # One py-spy per process: the supervisor and each worker (py-spy's own
            # --subprocesses records only the parent here).
            pids = [self.server.proc.pid, *_children(self.server.proc.pid)]
            for n, pid in enumerate(pids):
                out = self.args.pyspy if n == 0 else f"{self.args.pyspy}.{n}"
                spies.append(subprocess.Popen(  # noqa: ASYNC220 - starts at once, runs beside us
                    ["py-spy", "record", "-p", str(pid), "-r", "200", "-f", "raw",
                     "-o", out, "--nonblocking"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                ))
        results = []
        try:
            for step in steps:
                res = await self.run_step(step)
                results.append(res)
                print_row(res)
                await asyncio.sleep(1)
        finally:
            for spy in spies:
                spy.send_signal(2)
            for spy in spies:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    spy.wait(30)
            await api.close()
            hooks.close()
            await loop.run_in_executor(None, self.server.stop)
            if budget is not None:
                budget.close()
        return results


def _children(pid: int) -> list[int]:
    """The child processes of *pid* (a supervisor's workers)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


#: Where a py-spy stack belongs: the first area (in this order) with a frame in it.
AREAS = [
    ("store (SQLAlchemy, SQLite)", ("callstream/store/", "sqlalchemy/", "aiosqlite/")),
    ("media streams (WebSocket, frames)", ("callstream/streaming/", "websockets/")),
    ("media (RTP rx/tx, pacer, hub, codecs)", ("callstream/media/",)),
    ("SIP + switch", ("callstream/sip/", "callstream/telephony/")),
    ("webhook worker (HTTP, signing)", ("callstream/webhooks/",)),
    ("REST API (uvicorn, FastAPI)", ("uvicorn/", "starlette/", "fastapi/")),
    ("call control", ("callstream/calls/",)),
]


def summarize_pyspy(path: str) -> dict[str, Any]:
    """Share of the server's samples per area (each sample counted once).

    The store comes first: SQLAlchemy runs statements in greenlets, whose stacks py-spy
    shows without their callers, so store time cannot be charged to its caller anyway.
    A sample whose innermost frame is the loop's ``run`` is time in uvloop's C code
    (socket syscalls, the C side of callbacks) that py-spy cannot attribute further.
    """
    areas: Counter[str] = Counter()
    total = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(float(count))
        total += n
        frames = stack.split(";")
        if "asyncio/runners.py" in frames[-1] or "uvloop/__init__" in frames[-1]:
            areas["event loop (C: syscalls, uvloop)"] += n
            continue
        for area, markers in AREAS:
            if any(m in f for f in frames for m in markers):
                areas[area] += n
                break
        else:
            areas["other (GC, threads, startup)"] += n
    return {
        "samples": total,
        "areas_pct": {k: round(100 * v / total, 1) for k, v in areas.most_common()},
    }


COLUMNS = [
    ("step", "step", 14), ("workers", "workers", 7), ("offered_cps", "offer/s", 7),
    ("setup_cps", "setup/s", 7),
    ("answered", "answered", 8), ("failed", "failed", 6), ("setup_p50_ms", "p50 ms", 7),
    ("setup_p99_ms", "p99 ms", 7), ("peak_concurrent", "peak", 5),
    ("two_way_rtp_pct", "2-way%", 6), ("server_cpu_pct", "srv CPU%", 8),
    ("server_wait_pct", "srv wait%", 9), ("cpu_ms_per_call", "CPU ms/call", 11),
    ("supervisor_ms_per_call", "sup ms/call", 11), ("worker_ms_per_call", "wkr ms/call", 11),
    ("busiest_worker_share", "max wkr", 7), ("projected_cps", "proj/s", 7),
    ("sipp_cpu_pct", "SIPp CPU%", 9), ("app_cpu_pct", "app CPU%", 8),
    ("machine_cpu_pct", "box CPU%", 8), ("rtp_in_loss_pct", "RTP loss%", 9),
    ("rtp_seq_lost", "seq lost", 8), ("pacer_late", "late", 5), ("pacer_skipped", "skip", 5),
    ("webhook_p50_ms", "hook p50", 8), ("webhook_p99_ms", "hook p99", 8),
    ("api_p50_ms", "api p50", 7), ("api_p99_ms", "api p99", 7),
]


def print_header() -> None:
    print(" ".join(f"{title:>{width}}" for _, title, width in COLUMNS), flush=True)


def print_row(res: Result) -> None:
    values = asdict(res)
    print(" ".join(f"{values[name]!s:>{width}}" for name, _, width in COLUMNS), flush=True)
    if res.api_errors:
        print(f"{'':>14} API errors: {res.api_errors}", flush=True)


def ladder(args: argparse.Namespace) -> list[Step]:
    steps = []
    for rate in args.rates:
        steps.append(Step(f"setup-{rate:g}", rate, args.setup_hold,
                          max(1, int(rate * args.setup_seconds))))
    for concurrent in args.concurrency:
        if concurrent <= 0:  # --concurrency 0: set-up steps only
            continue
        rate = min(args.ramp_rate, concurrent / 2)
        calls = concurrent
        hold = concurrent / rate + args.hold  # the first call outlives the ramp
        steps.append(Step(f"hold-{concurrent}", rate, hold, calls))
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a ~1 min ladder")
    parser.add_argument("--rates", type=lambda s: [float(x) for x in s.split(",") if x],
                        help="offered set-up rates, calls/s (default 50,100,200,300)")
    parser.add_argument("--setup-seconds", type=float, default=6.0,
                        help="how long each set-up step offers calls")
    parser.add_argument("--setup-hold", type=float, default=2.0,
                        help="hold time of set-up step calls, s")
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",") if x],
                        help="concurrent calls to hold (default 250,500,1000)")
    parser.add_argument("--ramp-rate", type=float, default=100.0,
                        help="calls/s while ramping up to a concurrency step")
    parser.add_argument("--hold", type=float, default=8.0,
                        help="seconds all calls of a concurrency step are up together")
    parser.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",") if x],
                        default=[1], help="run the ladder with each of these worker "
                        "counts, e.g. 1,2 (default 1)")
    parser.add_argument("--answer-only", action="store_true",
                        help="answer calls without bridging them (RTP in only)")
    parser.add_argument("--cpu-per-worker", type=float, metavar="CORES",
                        help="give the server a cgroup of workers * CORES cores (root; "
                        "bench/cpu_limit.py): the same CPU per worker however many run")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--pyspy", help="record the server with py-spy (raw) into this "
                        "file; with workers, the supervisor there and each worker into "
                        "FILE.1, FILE.2, ...")
    parser.add_argument("--callstream", help="run the server from this source tree "
                        "(PYTHONPATH), e.g. an older commit's, to compare")
    parser.add_argument("--keep", help="work in this (new) folder and keep it: server log, "
                        "SIPp traces")
    args = parser.parse_args()
    if args.rates is None:
        args.rates = [50.0, 150.0] if args.quick else [50.0, 100.0, 200.0, 300.0]
    if args.concurrency is None:
        args.concurrency = [300] if args.quick else [250, 500, 1000]
    if args.quick:
        args.hold = min(args.hold, 5.0)
        args.setup_seconds = min(args.setup_seconds, 4.0)
    if SIPP is None:
        sys.exit("sipp is missing: apt-get install sip-tester")
    for name in ("json", "pyspy", "keep"):
        if getattr(args, name):
            setattr(args, name, str(Path(getattr(args, name)).resolve()))
    if args.pyspy:  # a worker's profile from an earlier run must not be read as this one's
        for stale in Path(args.pyspy).parent.glob(Path(args.pyspy).name + ".*"):
            stale.unlink()
    if args.callstream:
        # `python -m callstream` imports from its working directory first.
        args.callstream = str(Path(args.callstream).resolve())
        os.chdir(args.callstream)
    steps = ladder(args)
    try:
        import uvloop
    except ImportError:
        uvloop = None  # type: ignore[assignment]
    with contextlib.ExitStack() as stack:
        if args.keep:
            tmp = args.keep
            Path(tmp).mkdir(parents=True)
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="sip_load_"))
        bench = Bench(args, Path(tmp))
        print_header()
        started = time.monotonic()
        results = []
        for workers in args.workers:
            coro = bench.run(steps, workers)
            results += uvloop.run(coro) if uvloop else asyncio.run(coro)
        print(f"total {time.monotonic() - started:.0f} s", flush=True)
    profile = {}
    if args.pyspy:
        # The last server's processes: the supervisor (or the one process), then workers.
        for n in range(max(args.workers) + 1):
            path = Path(args.pyspy if n == 0 else f"{args.pyspy}.{n}")
            if not path.exists():
                continue
            name = "server" if n == 0 else f"worker {n - 1}"
            profile[name] = summarize_pyspy(str(path))
            print(f"{name} profile (py-spy, {profile[name]['samples']} samples):")
            for area, share in profile[name]["areas_pct"].items():
                print(f"  {share:5.1f} %  {area}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "platform": platform.platform(),
                        "load_avg": os.getloadavg()},
            "median_note": "one run; see docs/benchmarks.md",
            "results": [asdict(r) for r in results],
            "profile": profile,
        }, indent=2))


if __name__ == "__main__":
    main()
