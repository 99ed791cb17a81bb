"""Media-streaming benchmark: SIPp calls streamed to a lean WebSocket consumer, end to end.

The whole path a user runs, on loopback:

* a real ``callstream serve`` process (SQLite store, webhooks, SIP over UDP, RTP), pinned
  to its own core(s) where the machine has more than one; the callers, the consumer and
  this script share the others;
* **SIPp** places calls at ``--rate`` (INVITE with a PCMU offer, 200 OK, ACK, hold for the
  call's duration, BYE). The SDP it offers points at a UDP socket of this script, one per
  call (SIPp's ``-inf`` file): this script is the callers' audio. It sends 50 PCMU frames
  a second per call, each payload carrying the call's number and the frame's index, and
  timestamps every frame it sends and every frame it hears back;
* an **application** in this script takes the webhooks and answers each
  ``call.initiated`` with the stream fields of the workload;
* the **consumer** (``bench/stream_consumer.py``, its own process) takes the streams.

Workloads:

* ``inbound`` — ``stream_track=inbound_track``; the consumer counts and timestamps frames;
* ``voice-ai`` — ``both_tracks`` and bidirectional ``rtp``/PCMU; the consumer sends every
  inbound frame straight back as a ``media`` message, which the caller hears.

Per run (one fresh server per workload, workers value and call count) it reports: calls, their
duration, the set-up rate achieved (INVITE → 200 OK, SIPp's trace), the server's CPU per
call per 20 ms (``/proc/<pid>/stat`` utime+stime of the server and its child processes
over the steady window, when every call is up, divided by the call-ticks in it), calls
per core (20 ms of CPU over that cost), inbound frame loss (frames sent after the
stream's first one that never reached the consumer), outbound frame loss (frames the
consumer echoed that the caller never heard), inbound lag p50/p99 (consumer arrival minus
the caller's send time of the same frame), head loss (the caller's first frames that
were never streamed: the index of the first frame the consumer got), the echo round
trip (the caller's send → the caller hearing the same frame) in the first and last 2 s
of each call, overdue audio discarded (``OVERDUE_COUNTERS`` on /metrics, else n/a) and,
of it, the playback trimmed as standing delay (``STANDING_COUNTER``).

Usage::

    python bench/streaming.py                              # 20 calls of 15 s, both workloads
    python bench/streaming.py --calls 20,50 --duration 20 --json out.json
    python bench/streaming.py --workload voice-ai --workers 1,2 --rate 10
    python bench/streaming.py --workload voice-ai --calls 50 --pyspy profiles/
    python bench/streaming.py --workers 1,2 --calls 40,80,120 --cpu-per-worker 0.25

``--cpu-per-worker F`` (root: a cgroup, ``bench/cpu_limit.py``) gives the server ``workers *
F`` cores, so each worker gets the same CPU however many run, and prints, per workload
and workers value, the most calls that ran within the issue's bounds (``CAPACITY``):
how the calls one worker carries grows with workers, on a machine with fewer cores than
that needs.

Not part of the test suite (tests/bench/test_streaming.py runs a 2-call smoke).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from array import array
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cpu_limit import CpuLimit
from bench.sip_load import ApiClient, App, read_rtt, scrape, summarize_pyspy
from bench.stream_consumer import ID_BYTES, frame_id, parse_id
from callstream.media.rtp import build_packet
from tests.e2e.sipp import media_ports
from tests.helpers import ServerProcess, cli, create_api_key, free_port, free_udp_tcp_port

SIPP = shutil.which("sipp")
CLK_TCK = os.sysconf("SC_CLK_TCK")
TICK = 0.020  # one frame of audio
#: Edges of each call compared for the echo round trip, seconds.
EDGE_S = 2.0
#: Margins of the steady window: after the last call's first frame, before the first
#: call's last frame (set-up work and teardown stay out of the per-call cost).
SETTLE_S = 1.0
WIND_DOWN_S = 0.5
#: The caller keeps listening this long after its last frame, for the last echoes (a
#: playback queue that crept longer than this shows as unheard late frames).
LISTEN_AFTER_S = 3.0
#: How long the idle server's CPU is measured before the first call.
IDLE_S = 2.0
#: How often SIPp's log is read for answered calls (the callers' start delay).
LOG_POLL_S = 0.002
#: How often the server is checked for life while SIPp runs.
SERVER_POLL_S = 0.5
#: The server's RTP ports (the callers' sockets are ephemeral ones).
RTP_PORTS = ("40000", "49999")
WORKLOADS = ("inbound", "voice-ai")
#: A run is within capacity when every call was answered and streamed, at most this
#: much of the audio was lost either way and the inbound lag p99 stayed under this.
CAPACITY_LOSS_PCT = 0.1
CAPACITY_LAG_P99_MS = 20.0

SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<!-- One bench call: the SDP offers the bench's own RTP socket for this call ([field0],
     from the -inf file), and the answer's RTP port is logged with the call's bench
     number ([field1]) so that the bench starts sending to it. -->
<scenario name="streaming">
  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Bench" <sip:+1555[field1]@[local_ip]:[local_port]>;tag=[pid]T[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:sipp@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=bench 1 1 IN IP4 127.0.0.1
      s=-
      c=IN IP4 127.0.0.1
      t=0 0
      m=audio [field0] RTP/AVP 0
      a=rtpmap:0 PCMU/8000
      a=ptime:20
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rtd="true" timeout="{answer_timeout_ms}">
    <action>
      <ereg regexp="m=audio ([0-9]+)" search_in="body" check_it="true" assign_to="whole,port"/>
      <log message="ANSWERED [field1] [$port] ([$whole])"/>
    </action>
  </recv>
  <send>
    <![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Bench" <sip:+1555[field1]@[local_ip]:[local_port]>;tag=[pid]T[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <pause/>
  <send retrans="500">
    <![CDATA[
      BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Bench" <sip:+1555[field1]@[local_ip]:[local_port]>;tag=[pid]T[call_number]
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


# -- the callers' audio ----------------------------------------------------------------


class CallAudio(asyncio.DatagramProtocol):
    """One bench call's RTP socket: what it sent (and when), what it heard back."""

    def __init__(self, number: int, frames: int) -> None:
        self.number = number
        self.frames = frames
        self.sent = array("d")  # send time of frame i at [i]
        self.heard_index = array("i")
        self.heard_at = array("d")
        self.unmarked = 0  # packets heard without this call's id (e.g. silence played)
        self.transport: asyncio.DatagramTransport | None = None
        self.remote: tuple[str, int] | None = None
        self.ssrc = 0x5EED0000 + number
        self._t0 = 0.0  # loop time of frame 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        now = time.monotonic()
        # RTP header: 12 bytes plus 4 per CSRC (callstream sends no extension).
        ident = parse_id(data[12 + 4 * (data[0] & 0x0F):][:ID_BYTES]) if len(data) > 12 else None
        if ident is None or ident[0] != self.number:
            self.unmarked += 1
            return
        self.heard_index.append(ident[1])
        self.heard_at.append(now)

    def start(self, remote: tuple[str, int]) -> None:
        """Send the first frame now and one every 20 ms after it, on this call's own clock
        (a phone's: frames behind schedule go at once, none is skipped)."""
        self.remote = remote
        self._t0 = asyncio.get_running_loop().time()
        self._send()

    def _send(self) -> None:
        index = len(self.sent)
        if index >= self.frames or self.transport is None or self.transport.is_closing():
            return
        assert self.remote is not None
        packet = build_packet(0, index == 0, index & 0xFFFF, (index * 160) & 0xFFFFFFFF,
                              self.ssrc, frame_id(self.number, index))
        self.transport.sendto(packet, self.remote)
        self.sent.append(time.monotonic())
        asyncio.get_running_loop().call_at(self._t0 + (index + 1) * TICK, self._send)


class Callers:
    """Every bench call's audio.

    SIPp logs ``ANSWERED <call> <port>`` as it takes a call's 200 OK (within a
    millisecond, unbuffered); the call starts sending to that port when the line is read
    (polled every 2 ms), so a caller's audio starts 0-3 ms after its 200 OK.
    """

    def __init__(self, calls: int, frames: int) -> None:
        self.calls = [CallAudio(n, frames) for n in range(calls)]
        self.answered = 0
        self._log: BinaryIO | None = None
        self._pending = b""

    async def open(self) -> list[int]:
        loop = asyncio.get_running_loop()
        ports = []
        for call in self.calls:
            transport, _ = await loop.create_datagram_endpoint(
                lambda call=call: call, local_addr=("127.0.0.1", 0))  # type: ignore[misc]
            ports.append(transport.get_extra_info("sockname")[1])
        return ports

    def close(self) -> None:
        for call in self.calls:
            if call.transport is not None:
                call.transport.close()
        if self._log is not None:
            self._log.close()

    def answered_line(self, line: str) -> None:
        match = re.search(r"ANSWERED (\d+) (\d+)", line)
        if match is None:
            return
        call = self.calls[int(match[1])]
        if call.remote is None:
            call.start(("127.0.0.1", int(match[2])))
            self.answered += 1

    def read_log(self, path: Path) -> None:
        """Act on the lines SIPp added to its -trace_logs file since the last read."""
        if self._log is None:
            try:
                self._log = path.open("rb")
            except FileNotFoundError:  # SIPp creates it with the first line
                return
        *lines, self._pending = (self._pending + self._log.read()).split(b"\n")
        for line in lines:
            self.answered_line(line.decode(errors="replace"))

    async def follow_log(self, path: Path, stop: asyncio.Event) -> None:
        """Tail SIPp's log until ``stop``."""
        while not stop.is_set():
            self.read_log(path)
            await asyncio.sleep(LOG_POLL_S)


# -- the application: webhooks in, answer with the stream fields -------------------------


class Application:
    def __init__(self, api: ApiClient, answer: dict[str, Any]) -> None:
        self.api = api
        self.answer = answer
        self.initiated = 0
        self.answered = 0
        self.hungup = 0
        self.errors: dict[str, int] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    def on_event(self, data: dict[str, Any]) -> None:
        kind = data["event_type"]
        if kind == "call.initiated":
            self.initiated += 1
            task = asyncio.get_running_loop().create_task(
                self._answer(data["payload"]["call_control_id"]))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        elif kind == "call.answered":
            self.answered += 1
        elif kind == "call.hangup":
            self.hungup += 1

    async def _answer(self, ccid: str) -> None:
        try:
            status, payload, _ = await self.api.post(f"/v2/calls/{ccid}/actions/answer",
                                                     self.answer)
        except (OSError, asyncio.IncompleteReadError) as exc:
            key = f"answer: {type(exc).__name__}"
        else:
            if status == 200:
                return
            key = f"answer: {status} {payload[:120]!r}"
        self.errors[key] = self.errors.get(key, 0) + 1


def answer_fields(workload: str, stream_url: str) -> dict[str, Any]:
    if workload == "inbound":
        return {"stream_url": stream_url, "stream_track": "inbound_track"}
    return {"stream_url": stream_url, "stream_track": "both_tracks",
            "stream_bidirectional_mode": "rtp", "stream_bidirectional_codec": "PCMU"}


# -- measuring ---------------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """``pid`` and every descendant (the workers of ``serve --workers``)."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            for child in task.read_text().split():
                found += process_tree(int(child))
    return found


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of one process (every thread), seconds; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def runqueue_wait(pid: int) -> float | None:
    """Seconds the process's main thread (its event loop) waited, runnable, for a CPU."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except OSError:
        return None


#: The load's processes: the consumer, this script (the callers), SIPp.
LOAD = ("consumer", "callers", "sipp")
#: What the sampler follows: CPU and run-queue wait of the server (summed over its process
#: tree) and of each process of the load.
SERIES = ("server", *LOAD, *(f"{name}_wait" for name in ("server", *LOAD)))


class Sampler:
    """CPU time of the server and of the load, sampled every 100 ms with its time."""

    def __init__(self, server_pid: int, consumer_pid: int) -> None:
        self.server_pid = server_pid
        self.pids = {"consumer": consumer_pid, "callers": os.getpid()}
        self.times = array("d")
        self.series = {name: array("d") for name in SERIES}
        self.per_process: dict[int, float] = {}  # the server's processes, last reading

    def follow(self, name: str, pid: int) -> None:
        self.pids[name] = pid

    def sample(self) -> None:
        tree = process_tree(self.server_pid)
        readings: dict[str, float | None] = {"server_wait": sum(
            w for w in map(runqueue_wait, tree) if w is not None)}
        for pid in tree:
            if (value := cpu_seconds(pid)) is not None:
                self.per_process[pid] = value
        readings["server"] = sum(self.per_process.values())  # ended workers keep their time
        for name, pid in self.pids.items():
            readings[name] = cpu_seconds(pid)
            readings[f"{name}_wait"] = runqueue_wait(pid)
        self.times.append(time.monotonic())
        for name, series in self.series.items():
            value = readings.get(name)
            series.append(value if value is not None else (series[-1] if series else 0.0))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.sample()
            await asyncio.sleep(0.1)

    def at(self, when: float, name: str = "server") -> float:
        return float(np.interp(when, np.frombuffer(self.times),
                               np.frombuffer(self.series[name])))

    def share(self, name: str, lo: float, hi: float) -> float:
        """Percent of one core ``name`` used (or, for the wait, waited) from lo to hi."""
        return round(100 * (self.at(hi, name) - self.at(lo, name)) / (hi - lo), 1)


def pct(values: npt.NDArray[np.float64], q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def ms(value: float | None) -> float | None:
    return None if value is None else round(1000 * value, 1)


#: Audio dropped for being late (issue 17): playback toward callers after a stall, and
#: inbound frames past the latency bound (the all-streams total, not the per-stream one).
OVERDUE_COUNTERS = ("callstream_media_playback_discarded_frames_total",
                    "callstream_stream_frames_overdue_all_total")


def overdue_discarded(before: dict[str, float], after: dict[str, float]) -> int | None:
    """Delta of the overdue-audio counters, None if the server has none of them."""
    names = [k for k in after if k.split("{")[0] in OVERDUE_COUNTERS]
    if not names:
        return None
    return int(sum(after[k] - before.get(k, 0.0) for k in names))


#: Of those, the playback trimmed as standing delay (CALLSTREAM_PLAYBACK_STANDING_MS).
STANDING_COUNTER = 'callstream_media_playback_discarded_frames_total{reason="standing"}'


def standing_trimmed(before: dict[str, float], after: dict[str, float]) -> int | None:
    """Delta of the standing-queue trim counter, None if the server has none."""
    if STANDING_COUNTER not in after:
        return None
    return int(after[STANDING_COUNTER] - before.get(STANDING_COUNTER, 0.0))


@dataclass
class Result:
    workload: str
    workers: int
    calls: int
    duration_s: float
    offered_cps: float
    supported: bool = True  # False: this serve has no --workers; nothing was run
    answered: int = 0
    streams_started: int = 0
    failed_calls: int = 0
    setup_cps: float | None = None
    setup_p50_ms: float | None = None
    setup_p99_ms: float | None = None
    steady_window_s: float | None = None
    server_cpu_pct: float | None = None  # over the steady window; one core = 100
    idle_cpu_pct: float | None = None  # the same server before the first call
    server_wait_pct: float | None = None  # its event loop(s) runnable, waiting for a CPU
    load_cpu_pct: dict[str, float] = field(default_factory=dict)  # consumer, callers, SIPp
    load_wait_pct: dict[str, float] = field(default_factory=dict)  # their main threads' wait
    cpu_us_per_call_tick: float | None = None
    calls_per_core: int | None = None
    worker_cpu_s: list[float] = field(default_factory=list)  # per process, whole run
    worker_spread: float | None = None  # busiest / quietest child process, by CPU
    frames_sent: int = 0
    inbound_frames: int = 0
    stream_connections: int = 0  # WebSocket connections the consumer took (1 a call)
    unmarked_inbound_frames: int = 0  # inbound media frames without a frame id
    inbound_loss_pct: float | None = None
    outbound_loss_pct: float | None = None
    outbound_track_frames: int | None = None  # voice-AI: the echo as the stream saw it play
    unmarked_packets_heard: int | None = None  # voice-AI: RTP to the callers with no frame id
    inbound_lag_p50_ms: float | None = None
    inbound_lag_p99_ms: float | None = None
    head_loss_p50_ms: float | None = None
    head_loss_p99_ms: float | None = None
    head_loss_max_ms: float | None = None
    echo_early_p50_ms: float | None = None
    echo_early_p99_ms: float | None = None
    echo_late_p50_ms: float | None = None
    echo_late_p99_ms: float | None = None
    #: Share of the last 2 s of frames whose echo the caller heard before hanging up (a
    #: playback delay beyond --listen-after leaves them unheard: no late figure then).
    echo_late_heard_pct: float | None = None
    # The way back alone: the consumer's echo (sent as the frame arrived) → the caller.
    back_early_p50_ms: float | None = None
    back_late_p50_ms: float | None = None
    overdue_discarded: int | None = None
    standing_trimmed: int | None = None
    stream_frames_dropped: int = 0
    cpu_budget_cores: float | None = None  # --cpu-per-worker: the server's cgroup quota
    throttled_pct: float | None = None  # share of the run the server's cgroup was throttled
    server_affinity: list[int] = field(default_factory=list)
    load_affinity: list[int] = field(default_factory=list)
    api_errors: dict[str, int] = field(default_factory=dict)
    profile: dict[str, Any] | None = None  # --pyspy: the server's samples by area
    wall_s: float = 0.0


def analyse(res: Result, callers: Callers, seen: dict[str, Any], cpu: Sampler,
            workload: str) -> None:
    """Fill ``res`` from what the callers and the consumer recorded (see the docstring)."""
    sent = [np.frombuffer(c.sent) for c in callers.calls]
    res.frames_sent = int(sum(len(s) for s in sent))
    res.streams_started = int(json.loads(str(seen["events"])).get("start", 0))
    calls_up = [n for n, s in enumerate(sent) if len(s)]
    if not calls_up:
        return
    inbound_figures(res, sent, calls_up, seen)
    if workload == "voice-ai":
        echo_figures(res, sent, calls_up, callers, seen)
    cost_figures(res, sent, calls_up, cpu)


def first_of_each(index: npt.NDArray[np.int32], when: npt.NDArray[np.float64],
                  frames: int) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float64]]:
    """Distinct frame indexes below ``frames``, sorted, with the first time of each."""
    order = np.lexsort((when, index))
    index, when = index[order], when[order]
    index, first = np.unique(index, return_index=True)
    when = when[first]
    valid = index < frames
    return index[valid], when[valid]


def inbound_figures(res: Result, sent: list[npt.NDArray[np.float64]], calls_up: list[int],
                    seen: dict[str, Any]) -> None:
    """Inbound loss and lag at the consumer, and head loss."""
    lags: list[npt.NDArray[np.float64]] = []
    heads: list[int] = []
    expected = received = 0
    for n in calls_up:
        mask = seen["call"] == n
        idx, arr = first_of_each(seen["index"][mask], seen["arrival"][mask], len(sent[n]))
        res.inbound_frames += len(idx)
        if not len(idx):
            heads.append(len(sent[n]))
            continue
        head = int(idx[0])
        heads.append(head)
        expected += len(sent[n]) - head
        received += len(idx)
        lags.append(arr - sent[n][idx])
    res.stream_connections = int(seen["connections"])
    res.unmarked_inbound_frames = int(seen["unmarked"])
    if expected:
        res.inbound_loss_pct = round(100 * (1 - received / expected), 3)
    lag = np.concatenate(lags) if lags else np.zeros(0)
    res.inbound_lag_p50_ms, res.inbound_lag_p99_ms = ms(pct(lag, 50)), ms(pct(lag, 99))
    head_ms = np.array(heads, np.float64) * TICK
    res.head_loss_p50_ms, res.head_loss_p99_ms = ms(pct(head_ms, 50)), ms(pct(head_ms, 99))
    res.head_loss_max_ms = ms(float(head_ms.max()))


def echo_figures(res: Result, sent: list[npt.NDArray[np.float64]], calls_up: list[int],
                 callers: Callers, seen: dict[str, Any]) -> None:
    """Outbound loss, and the echo round trip in the first and last 2 s of each call."""
    early: list[npt.NDArray[np.float64]] = []
    late: list[npt.NDArray[np.float64]] = []
    back_early: list[npt.NDArray[np.float64]] = []
    back_late: list[npt.NDArray[np.float64]] = []
    heard = late_sent = 0
    for n in calls_up:
        call = callers.calls[n]
        idx, at = first_of_each(np.frombuffer(call.heard_index, np.int32),
                                np.frombuffer(call.heard_at), len(sent[n]))
        heard += len(idx)
        sent_at = sent[n][idx]
        rtt = at - sent_at
        is_early, is_late = sent_at < sent[n][0] + EDGE_S, sent_at >= sent[n][-1] - EDGE_S
        early.append(rtt[is_early])
        late.append(rtt[is_late])
        late_sent += int((sent[n] >= sent[n][-1] - EDGE_S).sum())
        mask = seen["call"] == n
        got, arrival = first_of_each(seen["index"][mask], seen["arrival"][mask],
                                     len(sent[n]))
        arrived = np.full(len(sent[n]), np.nan)
        arrived[got] = arrival
        back = at - arrived[idx]
        back_early.append(back[is_early])
        back_late.append(back[is_late])
    res.unmarked_packets_heard = sum(callers.calls[n].unmarked for n in calls_up)
    echoed = int(seen["echoed"])
    res.outbound_track_frames = int(seen["outbound"])
    if echoed:
        res.outbound_loss_pct = round(100 * (1 - heard / echoed), 3)
    e, lt = np.concatenate(early), np.concatenate(late)
    res.echo_late_heard_pct = round(100 * len(lt) / late_sent, 1) if late_sent else None
    res.echo_early_p50_ms, res.echo_early_p99_ms = ms(pct(e, 50)), ms(pct(e, 99))
    res.echo_late_p50_ms, res.echo_late_p99_ms = ms(pct(lt, 50)), ms(pct(lt, 99))
    be, bl = (np.concatenate(b) for b in (back_early, back_late))
    res.back_early_p50_ms = ms(pct(be[~np.isnan(be)], 50))
    res.back_late_p50_ms = ms(pct(bl[~np.isnan(bl)], 50))


def cost_figures(res: Result, sent: list[npt.NDArray[np.float64]], calls_up: list[int],
                 cpu: Sampler) -> None:
    """Server CPU per call per 20 ms over the steady window, and the load beside it."""
    # The steady window: every call up. Too short a run (a smoke test): all of it.
    starts = np.array([sent[n][0] for n in calls_up])
    ends = np.array([sent[n][-1] for n in calls_up])
    lo, hi = float(starts.max()) + SETTLE_S, float(ends.min()) - WIND_DOWN_S
    if hi - lo < 1.0:
        lo, hi = float(starts.min()), float(ends.max())
    call_ticks = float(np.clip(np.minimum(ends, hi) - np.maximum(starts, lo), 0, None).sum()
                       / TICK)
    server_cpu = cpu.at(hi) - cpu.at(lo)
    res.steady_window_s = round(float(hi - lo), 2)
    res.server_cpu_pct = cpu.share("server", lo, hi)
    res.server_wait_pct = cpu.share("server_wait", lo, hi)
    res.load_cpu_pct = {name: cpu.share(name, lo, hi) for name in LOAD}
    res.load_wait_pct = {name: cpu.share(f"{name}_wait", lo, hi) for name in LOAD}
    if call_ticks:
        per_tick = server_cpu / call_ticks * 1e6
        res.cpu_us_per_call_tick = round(per_tick, 1)
        res.calls_per_core = int(TICK * 1e6 / per_tick) if per_tick else None


# -- the run -------------------------------------------------------------------------------


def read_profile(path: Path) -> dict[str, Any] | None:
    """py-spy's samples by area (bench/sip_load.py's areas); None if it recorded nothing."""
    return summarize_pyspy(str(path)) if path.is_file() and path.stat().st_size else None


def serve_has_workers(callstream_path: str | None) -> bool:
    env = {**os.environ, **({"PYTHONPATH": callstream_path} if callstream_path else {})}
    out = subprocess.run([sys.executable, "-m", "callstream", "serve", "--help"],
                         capture_output=True, text=True, env=env, timeout=60, check=False)
    return "--workers" in out.stdout


def split_cores(workers: int) -> tuple[set[int], set[int]]:
    """(server cores, load cores): the server gets up to ``workers`` cores of its own and the
    load at least one; on one core everything shares it."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return set(cores), set(cores)
    take = max(1, min(workers, len(cores) - 1))
    return set(cores[:take]), set(cores[take:])


class Bench:
    def __init__(self, args: argparse.Namespace, root: Path, has_workers: bool) -> None:
        self.args = args
        self.root = root
        self.has_workers = has_workers
        self.all_cores = os.sched_getaffinity(0)

    def start_server(self, data: Path, key: str, env: dict[str, str], workers: int,
                     cores: set[int], limit: CpuLimit | None) -> ServerProcess:
        server = ServerProcess(data, free_port(), free_udp_tcp_port(), key, env=env)
        argv = [sys.executable, "-m", "callstream", "serve", "--data-dir", str(data),
                "--http", f"127.0.0.1:{server.http_port}",
                "--sip", f"127.0.0.1:{server.sip_port}"]
        if self.has_workers:
            argv += ["--workers", str(workers)]
        server.log_path = data / "server.log"

        def before_exec() -> None:
            os.sched_setaffinity(0, cores)
            if limit is not None:
                limit.join()

        with server.log_path.open("ab") as log:
            server.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env},
                preexec_fn=before_exec,
            )
        return server

    async def start_pyspy(self, pid: int, name: str) -> asyncio.subprocess.Process | None:
        """py-spy on the server (and its workers) into --pyspy/<run>.txt, if asked."""
        if not self.args.pyspy:
            return None
        return await asyncio.create_subprocess_exec(
            "py-spy", "record", "-p", str(pid), "--subprocesses", "-r", "200", "-f", "raw",
            "-o", str(Path(self.args.pyspy) / f"{name}.txt"), "--nonblocking",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)

    async def wait_healthy(self, server: ServerProcess) -> None:
        assert server.proc is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                raise RuntimeError(f"server exited {server.proc.returncode}:\n{server.log()}")
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                reader, writer = await asyncio.open_connection("127.0.0.1", server.http_port)
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                head = await reader.read()
                writer.close()
                if head.startswith(b"HTTP/1.1 200"):
                    return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"server did not start:\n{server.log()}")

    async def run_one(self, workload: str, workers: int, calls: int) -> Result:
        args = self.args
        res = Result(workload, workers, calls, args.duration, args.rate)
        if workers != 1 and not self.has_workers:
            res.supported = False
            return res
        assert SIPP is not None
        workdir = self.root / f"{workload}-w{workers}-c{calls}"
        data = workdir / "server"
        data.mkdir(parents=True)
        server_cores, load_cores = split_cores(workers)
        res.server_affinity, res.load_affinity = sorted(server_cores), sorted(load_cores)
        os.sched_setaffinity(0, load_cores)  # SIPp, the consumer and us
        frames = round(args.duration / TICK)
        callers = Callers(calls, frames)
        ports = await callers.open()
        (workdir / "calls.csv").write_text(
            "SEQUENTIAL\n" + "".join(f"{port};{n};\n" for n, port in enumerate(ports)))
        seen_path = workdir / "consumer.npz"
        consumer = await asyncio.create_subprocess_exec(
            sys.executable, str(Path(__file__).with_name("stream_consumer.py")),
            "--out", str(seen_path), *(["--echo"] if workload == "voice-ai" else []),
            stdout=asyncio.subprocess.PIPE)
        assert consumer.stdout is not None
        line = (await asyncio.wait_for(consumer.stdout.readline(), 30)).decode()
        stream_url = f"ws://127.0.0.1:{int(line.split()[1])}/media"
        if args.callstream:  # that tree's own store and CLI
            key = cli("keys", "create", data_dir=data).strip()
        else:  # as `callstream keys create` does, without a process's start-up
            key = await asyncio.to_thread(create_api_key, data)
        api = ApiClient(0, key)
        app = Application(api, answer_fields(workload, stream_url))
        loop = asyncio.get_running_loop()
        hooks = await loop.create_server(lambda: App(app), "127.0.0.1", 0,  # type: ignore[arg-type]
                                         backlog=1024)
        env = {
            "CALLSTREAM_WEBHOOK_URL": f"http://127.0.0.1:{hooks.sockets[0].getsockname()[1]}/",
            "CALLSTREAM_RTP_PORT_MIN": RTP_PORTS[0], "CALLSTREAM_RTP_PORT_MAX": RTP_PORTS[1],
            "CALLSTREAM_LOG_LEVEL": "warning",
            # One source places every call: admission's per-source limits are not measured.
            "CALLSTREAM_SIP_RATE_LIMIT_PER_SEC": "0",
            "CALLSTREAM_SIP_MAX_PARKED_PER_SOURCE": "0",
        }
        if args.callstream:
            env["PYTHONPATH"] = args.callstream
        budget = None
        if args.cpu_per_worker:
            budget = CpuLimit(workers * args.cpu_per_worker,
                              f"callstream-bench-{os.getpid()}-{workdir.name}")
            res.cpu_budget_cores = budget.cores
        server = self.start_server(data, key, env, workers, server_cores, budget)
        stop = asyncio.Event()
        tasks: list[asyncio.Task[None]] = []
        spy = sipp = None
        try:
            await self.wait_healthy(server)
            assert server.proc is not None
            api.port = server.http_port
            metrics0 = await scrape(server.http_port, key)
            cpu = Sampler(server.proc.pid, consumer.pid)
            tasks = [loop.create_task(cpu.run(stop))]
            # What the server burns with no call (timers, the webhook worker): part of
            # every per-call figure below, the more so the fewer the calls.
            cpu.sample()
            idle_from = cpu.times[-1]
            await asyncio.sleep(args.idle)
            cpu.sample()
            res.idle_cpu_pct = cpu.share("server", idle_from, cpu.times[-1])
            (workdir / "streaming.xml").write_text(SCENARIO.format(answer_timeout_ms=15000))
            hold_ms = int((args.duration + args.listen_after) * 1000)
            limit = calls / args.rate + args.duration + 60
            wall0 = time.monotonic()
            with (workdir / "sipp.stderr").open("wb") as sipp_err:  # SIPp keeps its copy
                sipp = await asyncio.create_subprocess_exec(
                    SIPP, "-sf", "streaming.xml", "-inf", "calls.csv", "-i", "127.0.0.1",
                    "-p", str(free_udp_tcp_port()), "-mp", str(media_ports(free_udp_tcp_port())),
                    "-r", str(args.rate), "-rp", "1000", "-m", str(calls), "-l", str(calls),
                    "-d", str(hold_ms), "-s", "+15550002222", "-nostdin",
                    "-timeout", str(int(limit)), "-timeout_error", "-trace_err", "-trace_logs",
                    "-trace_rtt", "-rtt_freq", "1", "-max_socket", "50000",
                    f"127.0.0.1:{server.sip_port}",
                    cwd=workdir, stdout=asyncio.subprocess.DEVNULL, stderr=sipp_err)
            cpu.follow("sipp", sipp.pid)
            spy = await self.start_pyspy(server.proc.pid, workdir.name)
            log = workdir / f"streaming_{sipp.pid}_logs.log"
            tasks.append(loop.create_task(callers.follow_log(log, stop)))
            await wait_calls(sipp, server, callers, log, workdir)
            res.wall_s = round(time.monotonic() - wall0, 1)
            if budget is not None:
                res.throttled_pct = round(100 * budget.throttled_s() / res.wall_s, 1)
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                await spy.wait()
                res.profile = read_profile(Path(args.pyspy) / f"{workdir.name}.txt")
            # Every call ended at the server, the last webhooks in, before the counters.
            deadline = time.monotonic() + 30
            metrics1 = metrics0
            while time.monotonic() < deadline:
                metrics1 = await scrape(server.http_port, key)
                if (metrics1.get("callstream_active_calls", 0.0) == 0 and not app.tasks
                        and app.hungup >= app.answered):
                    break
                await asyncio.sleep(0.25)
            stop.set()
            await asyncio.gather(*tasks)
            rtt = read_rtt(workdir)
            res.answered = len(rtt)
            res.failed_calls = calls - len(rtt)
            if len(rtt) > 1:
                first_invite = min(t - m / 1000 for t, m in rtt)
                span = max(max(t for t, _ in rtt) - first_invite, 1e-3)
                res.setup_cps = round((len(rtt) - 1) / span, 1)
                setup = np.array([m for _, m in rtt])
                res.setup_p50_ms = round(float(np.percentile(setup, 50)), 1)
                res.setup_p99_ms = round(float(np.percentile(setup, 99)), 1)
            res.overdue_discarded = overdue_discarded(metrics0, metrics1)
            res.standing_trimmed = standing_trimmed(metrics0, metrics1)
            res.stream_frames_dropped = int(
                metrics1.get("callstream_stream_frames_dropped_all_total", 0.0)
                - metrics0.get("callstream_stream_frames_dropped_all_total", 0.0))
            res.worker_cpu_s = [round(v, 2) for v in cpu.per_process.values()]
            children = [v for pid, v in cpu.per_process.items() if pid != server.proc.pid]
            if len(children) >= 2 and min(children) > 0:
                res.worker_spread = round(max(children) / min(children), 2)
            res.api_errors = dict(app.errors)
            consumer.send_signal(signal.SIGTERM)
            await asyncio.wait_for(consumer.wait(), 30)
            with np.load(seen_path) as seen:
                analyse(res, callers, dict(seen), cpu, workload)
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            for proc in (consumer, spy, sipp):
                if proc is not None and proc.returncode is None:
                    proc.kill()
                    await proc.wait()
            callers.close()
            await api.close()
            hooks.close()
            await loop.run_in_executor(None, server.stop)
            if budget is not None:
                budget.close()
            os.sched_setaffinity(0, self.all_cores)
        return res


async def wait_calls(sipp: asyncio.subprocess.Process, server: ServerProcess,
                     callers: Callers, log: Path, workdir: Path) -> None:
    """Wait for SIPp to end its calls; fail at once if the server dies meanwhile, or if
    SIPp ends without a call answered or on an error of its own (calls never placed)."""
    assert server.proc is not None
    while sipp.returncode is None:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{workdir.name}: the server exited {server.proc.returncode} "
                               f"while the calls ran:\n{tail(server.log())}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(sipp.wait(), SERVER_POLL_S)
    callers.read_log(log)  # the last ANSWERED lines
    # SIPp: 0 every call succeeded, 1 some failed (a figure of the run), else it gave up.
    if sipp.returncode in (0, 1) and callers.answered:
        return
    raise RuntimeError(sipp_failure(sipp.returncode, callers, server, workdir))


def sipp_failure(code: int | None, callers: Callers, server: ServerProcess,
                 workdir: Path) -> str:
    """Why the calls did not run: what SIPp and the server said."""
    traces = [workdir / "sipp.stderr", *workdir.glob("streaming_*_errors.log")]
    said = "\n".join(f"{path.name}:\n{tail(path.read_text(errors='replace'))}"
                     for path in traces if path.exists() and path.stat().st_size)
    return (f"{workdir.name}: SIPp exited {code} with {callers.answered} of "
            f"{len(callers.calls)} calls answered (see {workdir}):\n{said or 'no SIPp output'}"
            f"\nserver log:\n{tail(server.log())}")


def tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.splitlines()[-lines:])


COLUMNS = [
    ("workload", "workload", 8), ("workers", "wrk", 3), ("calls", "calls", 5),
    ("duration_s", "dur s", 5), ("setup_cps", "setup/s", 7),
    ("cpu_us_per_call_tick", "µs/call/20ms", 12), ("calls_per_core", "calls/core", 10),
    ("server_cpu_pct", "srv CPU%", 8), ("server_wait_pct", "srv wait%", 9),
    ("inbound_loss_pct", "in loss%", 8),
    ("outbound_loss_pct", "out loss%", 9), ("inbound_lag_p50_ms", "lag p50", 7),
    ("inbound_lag_p99_ms", "lag p99", 7), ("head_loss_p50_ms", "head p50", 8),
    ("head_loss_p99_ms", "head p99", 8), ("echo_early_p50_ms", "echo 1st p50", 12),
    ("echo_late_p50_ms", "echo last p50", 13), ("echo_late_p99_ms", "last p99", 8),
    ("echo_late_heard_pct", "heard%", 6),
    ("overdue_discarded", "overdue", 7), ("standing_trimmed", "standing", 8),
]


def cell(value: object) -> str:
    return "n/a" if value is None else str(value)


def print_header() -> None:
    print(" ".join(f"{title:>{width}}" for _, title, width in COLUMNS), flush=True)


def print_row(res: Result) -> None:
    values = asdict(res)
    if not res.supported:
        print(f"{res.workload:>8} {res.workers:>3} {res.calls:>5}  n/a: this serve has no "
              "--workers option", flush=True)
        return
    print(" ".join(f"{cell(values[name]):>{width}}" for name, _, width in COLUMNS), flush=True)
    notes = []
    if res.failed_calls:
        notes.append(f"{res.failed_calls} calls not answered")
    if res.streams_started < res.answered:
        notes.append(f"{res.answered - res.streams_started} calls without a stream")
    if res.api_errors:
        notes.append(f"API errors {res.api_errors}")
    if notes:
        print(f"{'':>8} " + "; ".join(notes), flush=True)
    if res.profile:
        print(f"{'':>8} server profile (py-spy, {res.profile['samples']} samples): " + ", ".join(
            f"{area} {share} %" for area, share in res.profile["areas_pct"].items()), flush=True)


def within_capacity(res: Result) -> bool:
    """Every call answered and streamed, loss and inbound lag within the bounds."""
    if not res.supported or res.failed_calls or res.streams_started < res.calls:
        return False
    losses = (res.inbound_loss_pct, res.outbound_loss_pct)
    return (res.inbound_lag_p99_ms is not None
            and res.inbound_lag_p99_ms <= CAPACITY_LAG_P99_MS
            and all(loss is None or loss <= CAPACITY_LOSS_PCT for loss in losses)
            and res.inbound_loss_pct is not None)


def capacity(results: list[Result]) -> dict[str, dict[int, int | None]]:
    """Per workload and workers value, the most calls of a run within capacity (``None``:
    no run was)."""
    found: dict[str, dict[int, int | None]] = {}
    for res in results:
        best = found.setdefault(res.workload, {}).setdefault(res.workers, None)
        if within_capacity(res) and (best is None or res.calls > best):
            found[res.workload][res.workers] = res.calls
    return found


def print_capacity(found: dict[str, dict[int, int | None]]) -> None:
    print(f"capacity: the most calls within {CAPACITY_LOSS_PCT} % loss and inbound lag p99 "
          f"≤ {CAPACITY_LAG_P99_MS:g} ms", flush=True)
    for workload, by_workers in found.items():
        base = by_workers.get(1)
        cells = []
        for workers, calls in sorted(by_workers.items()):
            ratio = f" ({calls / base:.2f}x)" if calls and base and workers != 1 else ""
            cells.append(f"{workers} worker{'s' if workers > 1 else ''}: "
                         f"{'none' if calls is None else calls}{ratio}")
        print(f"  {workload}: " + ", ".join(cells), flush=True)


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int_list, default=[20],
                        help="calls per run, comma-separated for several runs (default 20)")
    parser.add_argument("--rate", type=float, default=10.0, help="new calls per second")
    parser.add_argument("--duration", type=float, default=15.0,
                        help="seconds of audio each call sends")
    parser.add_argument("--workload", choices=(*WORKLOADS, "both"), default="both")
    parser.add_argument("--idle", type=float, default=IDLE_S,
                        help=f"seconds the idle server's CPU is measured (default {IDLE_S:g})")
    parser.add_argument("--listen-after", type=float, default=LISTEN_AFTER_S,
                        help="seconds each caller listens after its last frame, for the "
                        f"last echoes (default {LISTEN_AFTER_S:g})")
    parser.add_argument("--workers", type=int_list, default=[1, 2],
                        help="serve --workers values to compare (n/a where serve lacks it)")
    parser.add_argument("--cpu-per-worker", type=float, metavar="CORES",
                        help="give the server a cgroup of workers * CORES cores (root) and "
                        "print each workers value's capacity")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--callstream", help="run the server from this source tree "
                        "(PYTHONPATH), e.g. an older commit's, to compare")
    parser.add_argument("--pyspy", help="record each run's server with py-spy (raw) into "
                        "this folder, and summarize where its time went (costs CPU beside it)")
    parser.add_argument("--keep", help="work in this (new) folder and keep it: server logs, "
                        "SIPp traces, what the consumer saw")
    args = parser.parse_args()
    if SIPP is None:
        sys.exit("sipp is missing: apt-get install sip-tester")
    if args.duration < 1:
        parser.error("--duration: at least 1 s")
    if args.idle <= 0 or args.listen_after <= 0:
        parser.error("--idle and --listen-after: more than 0 s")
    for name in ("json", "keep", "callstream", "pyspy"):
        if getattr(args, name):
            setattr(args, name, str(Path(getattr(args, name)).resolve()))
    if args.pyspy:
        Path(args.pyspy).mkdir(parents=True, exist_ok=True)
    if args.callstream:
        os.chdir(args.callstream)  # `python -m callstream` imports from its folder first
    workloads = WORKLOADS if args.workload == "both" else (args.workload,)
    has_workers = serve_has_workers(args.callstream)
    try:
        import uvloop
    except ImportError:
        uvloop = None  # type: ignore[assignment]
    results: list[Result] = []
    with contextlib.ExitStack() as stack:
        if args.keep:
            tmp = args.keep
            Path(tmp).mkdir(parents=True)
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="streaming_"))
        bench = Bench(args, Path(tmp), has_workers)
        print_header()

        async def all_runs() -> None:
            for calls in args.calls:
                for workload in workloads:
                    for workers in args.workers:
                        res = await bench.run_one(workload, workers, calls)
                        results.append(res)
                        print_row(res)

        started = time.monotonic()
        uvloop.run(all_runs()) if uvloop else asyncio.run(all_runs())
        print(f"total {time.monotonic() - started:.0f} s", flush=True)
        if args.cpu_per_worker:
            print_capacity(capacity(results))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_bytes(orjson.dumps({
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "platform": platform.platform(), "load_avg": os.getloadavg()},
            "serve_has_workers": has_workers,
            "args": {k: v for k, v in vars(args).items() if k not in ("json", "keep")},
            "results": [asdict(r) for r in results],
            "capacity": ({workload: {str(w): c for w, c in found.items()}
                          for workload, found in capacity(results).items()}
                         if args.cpu_per_worker else None),
        }, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
