"""The streaming hot path alone: CPU per call per 20 ms, one code tree against another.

Each run is two processes on loopback:

* the **server** (measured): per call a real :class:`~callstream.media.hub.MediaHub`, a
  real RTP endpoint on the shared 20 ms :class:`~callstream.media.transport.Pacer` and a
  real :class:`~callstream.streaming.session.StreamSession` (``websockets`` client, frame
  builder, encoder, bidirectional playback) — everything a streamed call costs per tick
  except SIP, the store and webhooks, which a call pays at set-up and hang-up;
* the **peer**: each call's caller (a UDP socket sending 50 PCMU packets a second,
  symmetric RTP) and the WebSocket consumer, which in the ``voice-ai`` workload sends
  every inbound ``media`` frame straight back as a ``media`` message.

Workloads: ``inbound`` (``inbound_track``) and ``voice-ai`` (``both_tracks`` and
bidirectional ``rtp``/PCMU, the consumer echoing). The figure is the server process's
CPU time (``getrusage``: user + system, so socket system calls count) over the measured
window, divided by the pacer's ticks and the calls; user (Python and the loop's C code)
and system (the kernel) are also given apart.

``--callstream A,B`` runs the server from each source tree in turn (e.g. a worktree of
the old commit and this one), alternating, ``--rounds`` times, and prints the medians
side by side: a noisy machine slows both alike. A run in which the pacer skipped more
than 1 % of its ticks (the process was starved of CPU for over 60 ms at a time: a loaded
machine) measured bursts of catch-up, not the steady path, and its figure is off (CPU
divided by the ticks that ran, the work not that of the ticks); the medians are of the
"clean" runs where a tree has any, of all its runs otherwise, and say which.

Usage::

    python bench/hot_path.py                                   # this tree, 50 calls
    python bench/hot_path.py --callstream /tmp/old,. --rounds 5 --json out.json
    python bench/hot_path.py --callstream .,floor --calls 200 --syscalls  # + perf stat counts

Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

WORKLOADS = ("inbound", "voice-ai")
#: ``--callstream floor``: not a tree but :func:`floor_server`, the path's system calls alone.
FLOOR = "floor"
TICK = 0.020
#: A run whose pacer skipped more than this share of its ticks is not "clean".
MAX_SKIPPED = 0.01
#: Seconds after every stream has started before the window opens.
SETTLE_S = 2.0
#: One PCMU frame of a quiet tone (not silence: the codec path sees real bytes).
PCMU_FRAME = bytes((0xF0 + (i % 8)) for i in range(160))


# -- peer: the callers and the consumer ---------------------------------------------------


class Caller(asyncio.DatagramProtocol):
    """One call's caller: 50 packets a second to whoever sent to it first."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.remote: tuple[str, int] | None = None
        self.seq = random.randrange(65536)
        self.ts = random.randrange(1 << 32)
        self.ssrc = random.randrange(1 << 32)
        self.received = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.remote is None and len(data) >= 12 and data[1] & 0x7F == 0:
            self.remote = addr  # the server's RTP socket (RTCP goes elsewhere)
        self.received += 1

    def send(self) -> None:
        if self.remote is None or self.transport is None:
            return
        self.seq = (self.seq + 1) & 0xFFFF
        self.ts = (self.ts + 160) & 0xFFFFFFFF
        header = struct.pack("!BBHII", 0x80, 0, self.seq, self.ts, self.ssrc)
        self.transport.sendto(header + PCMU_FRAME, self.remote)


async def peer(calls: int, echo: bool) -> None:
    from websockets.asyncio.server import ServerConnection, serve
    from websockets.exceptions import ConnectionClosed

    loop = asyncio.get_running_loop()
    callers: list[Caller] = []
    ports = []
    for _ in range(calls):
        _, caller = await loop.create_datagram_endpoint(Caller, local_addr=("127.0.0.1", 0))
        assert caller.transport is not None
        ports.append(caller.transport.get_extra_info("sockname")[1])
        callers.append(caller)
    counts = {"media_in": 0, "echoed": 0}

    async def handler(ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):  # the server process just ends
            async for message in ws:
                if '"event":"media"' not in message[:40]:
                    continue
                counts["media_in"] += 1
                if echo and '"track":"inbound"' in message:
                    payload = json.loads(message)["media"]["payload"]
                    await ws.send(json.dumps({"event": "media", "media": {"payload": payload}}))
                    counts["echoed"] += 1

    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        ws_port = next(iter(server.sockets)).getsockname()[1]
        print(json.dumps({"ws": ws_port, "rtp": ports}), flush=True)
        next_at = loop.time()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        stop = asyncio.ensure_future(reader.readline())
        while not stop.done():
            for caller in callers:
                caller.send()
            next_at += TICK
            await asyncio.wait({stop}, timeout=max(0.0, next_at - loop.time()))
        print(json.dumps({**counts, "rtp_in": sum(c.received for c in callers)}), flush=True)


# -- server: the measured side ------------------------------------------------------------


async def server(calls: int, workload: str, seconds: float, ws_port: int,
                 rtp_ports: list[int], pyspy: str | None, syscalls: bool) -> dict[str, Any]:
    from callstream.calls.features import LegMedia
    from callstream.calls.model import Call
    from callstream.calls.state import CallState
    from callstream.media.codecs import PCMU
    from callstream.media.hub import MediaHub
    from callstream.media.session import RtpSession
    from callstream.media.transport import Pacer, PortAllocator, open_rtp_endpoint
    from callstream.outbound.policy import DEFAULT_POLICY
    from callstream.store.records import CallRecord
    from callstream.streaming.session import StreamParams, StreamSession

    class Host:
        outbound = DEFAULT_POLICY
        account_id = "bench"

        def __init__(self, media: LegMedia) -> None:
            self.media = media

        async def emit(self, session: StreamSession, event_type: str,
                       extra: dict[str, Any]) -> None:
            pass

        def ended(self, session: StreamSession) -> None:
            pass

        def playback_targets(self, session: StreamSession) -> list[LegMedia]:
            return [self.media]

    loop = asyncio.get_running_loop()
    base = random.randrange(20000, 28000, 2)
    ports = PortAllocator(base, base + 4 * calls + 64)
    pacer = Pacer()
    endpoints = []
    sessions = []
    voice_ai = workload == "voice-ai"
    for c in range(calls):
        hub = MediaHub(f"call{c}")
        hub.add_leg("a", 8000)
        rtp = RtpSession(PCMU, rng=random.Random(c), media_timeout=None)
        endpoint = await open_rtp_endpoint(rtp, hub, "a", host="127.0.0.1", ports=ports,
                                           pacer=pacer)
        rtp.set_remote_address(("127.0.0.1", rtp_ports[c]))
        hub.set_send_silence_when_idle("a", True)
        endpoints.append(endpoint)
        media = LegMedia(hub, "a", "PCMU", 8000, 0)
        record = CallRecord(
            call_control_id=f"v3:bench-{c}", call_leg_id=f"leg-{c}", call_session_id=f"s-{c}",
            connection_id="default", direction="incoming", from_="+15550001111",
            to="sip:bot@127.0.0.1", state="answered", is_alive=True,
            start_time="2026-12-05T00:00:00Z", owner="bench")
        params = StreamParams(
            stream_id=f"00000000-0000-4000-8000-{c:012d}", stream_url=f"ws://127.0.0.1:{ws_port}/",
            stream_track="both_tracks" if voice_ai else "inbound_track",
            bidirectional=voice_ai, stream_bidirectional_mode="rtp",
            stream_bidirectional_codec="PCMU")
        session = StreamSession(Host(media), Call(record=record, state=CallState.ANSWERED),
                                params, clock=loop.time)
        session.attach(media)
        session.start()
        sessions.append(session)
    await asyncio.sleep(SETTLE_S)
    spy = None
    if pyspy:  # the window only, not the imports and set-up; --nonblocking: no pauses
        spy = await asyncio.create_subprocess_exec(
            "py-spy", "record", "-p", str(os.getpid()), "-d", str(round(seconds)), "-r", "200",
            "-f", "raw", "-o", pyspy, "--nonblocking", stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
    counter = await count_syscalls(seconds) if syscalls else None
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    ticks0 = pacer.ticks
    frames0 = sum(s.counters.frames_sent for s in sessions)
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.perf_counter() - started
    ticks = pacer.ticks - ticks0
    frames = sum(s.counters.frames_sent for s in sessions) - frames0
    user = ru1.ru_utime - ru0.ru_utime  # Python and the loop's C code
    system = ru1.ru_stime - ru0.ru_stime  # the kernel: system calls, loopback delivery
    cpu = user + system
    if spy is not None:
        await spy.wait()
    counts = await syscalls_per_call_tick(counter, ticks * calls) if counter and ticks else {}
    sent = sum(e.session.packets_sent for e in endpoints)
    received = sum(e.session.packets_received for e in endpoints)
    for session in sessions:
        session.detach("hangup")
    for endpoint in endpoints:
        endpoint.close()
    await asyncio.sleep(0.5)
    return {
        "us_per_call_per_20ms": cpu / ticks / calls * 1e6 if ticks else None,
        "user_us_per_call_per_20ms": user / ticks / calls * 1e6 if ticks else None,
        "system_us_per_call_per_20ms": system / ticks / calls * 1e6 if ticks else None,
        "cpu_percent": 100 * cpu / wall,
        "ticks": ticks,
        "late_ticks": pacer.late_ticks,
        "skipped_ticks": pacer.skipped_ticks,
        "ws_frames_per_call_per_tick": frames / ticks / calls if ticks else None,
        "rtp_sent": sent,
        "rtp_received": received,
        "syscalls_per_call_tick": counts,
    }


# -- the floor: the same sockets and system calls, next to no Python -----------------------


class _FloorLeg(asyncio.DatagramProtocol):
    """One call of the floor server: each caller packet answered by a prebuilt frame."""

    def __init__(self, frames: list[bytes]) -> None:
        self.frames = frames
        self.rtp: asyncio.DatagramTransport | None = None
        self.ws: asyncio.Transport | None = None
        self.received = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.rtp = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received += 1
        if self.ws is not None:
            self.ws.writelines(self.frames)


class _Discard(asyncio.Protocol):
    """The consumer's echoes, read and dropped (what the kernel charges for them stays)."""

    def data_received(self, data: bytes) -> None:
        pass


async def floor_server(calls: int, workload: str, seconds: float, ws_port: int,
                       rtp_ports: list[int], syscalls: bool) -> dict[str, Any]:
    """What the per-tick path costs with no callstream in it: per call the same UDP
    socket (a uvloop datagram endpoint), the same WebSocket (``websockets``' handshake,
    then raw writes) and, per tick, one RTP packet out (one timer for all calls) and one
    write of prebuilt, masked ``media`` frames the size callstream's are for each packet
    in (two frames with ``both_tracks``); the consumer's echoes are read and dropped. Its
    CPU is the floor the Python above it adds to: mostly the kernel's."""
    from websockets.asyncio.client import connect

    from callstream.streaming.framing import MASKS
    from callstream.streaming.protocol.server import FrameBuilder

    loop = asyncio.get_running_loop()
    voice_ai = workload == "voice-ai"
    builder = FrameBuilder("00000000-0000-4000-8000-000000000000")
    builder.start({}, 0.0)
    tracks = ("outbound", "inbound") if voice_ai else ("inbound",)
    frames = MASKS.text_frames([builder.media(t, PCMU_FRAME, 12.345) for t in tracks])
    packet = struct.pack("!BBHII", 0x80, 0, 1, 160, 0x1234) + bytes(b"\xff" * 160)
    legs: list[_FloorLeg] = []
    sockets = []
    for _ in range(calls):
        _, leg = await loop.create_datagram_endpoint(
            lambda: _FloorLeg(frames), local_addr=("127.0.0.1", 0))
        ws = await connect(f"ws://127.0.0.1:{ws_port}/", compression=None)
        leg.ws = ws.transport  # type: ignore[assignment]
        ws.transport.set_protocol(_Discard())
        sockets.append(ws)
        legs.append(leg)
    ticks = 0

    def tick() -> None:
        nonlocal ticks, handle
        ticks += 1
        for c, leg in enumerate(legs):
            assert leg.rtp is not None
            leg.rtp.sendto(packet, ("127.0.0.1", rtp_ports[c]))
        handle = loop.call_at(start + (ticks + 1) * TICK, tick)

    start = loop.time()
    handle = loop.call_at(start + TICK, tick)
    await asyncio.sleep(SETTLE_S)
    counter = await count_syscalls(seconds) if syscalls else None
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    ticks0 = ticks
    await asyncio.sleep(seconds)
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    handle.cancel()
    n = ticks - ticks0
    counts = await syscalls_per_call_tick(counter, n * calls) if counter and n else {}
    user = ru1.ru_utime - ru0.ru_utime
    system = ru1.ru_stime - ru0.ru_stime
    return {
        "us_per_call_per_20ms": (user + system) / n / calls * 1e6,
        "user_us_per_call_per_20ms": user / n / calls * 1e6,
        "system_us_per_call_per_20ms": system / n / calls * 1e6,
        "cpu_percent": 100 * (user + system) / seconds, "ticks": n, "late_ticks": 0,
        "skipped_ticks": 0, "ws_frames_per_call_per_tick": len(frames),
        "rtp_sent": n * calls, "rtp_received": sum(leg.received for leg in legs),
        "syscalls_per_call_tick": counts,
    }


# -- system calls counted by the kernel -------------------------------------------------------

#: The system calls ``--syscalls`` counts (``perf stat`` on their tracepoints: exact counts,
#: no tracing overhead; needs ``perf`` and root or ``perf_event_paranoid`` ≤ 1 for them).
SYSCALLS = ("recvmsg", "sendmsg", "write", "writev", "read", "epoll_pwait", "epoll_ctl",
            "getrandom")


async def count_syscalls(seconds: float) -> asyncio.subprocess.Process:
    """``perf stat`` on this process for ``seconds``: every system call, and those above."""
    events = ",".join(["raw_syscalls:sys_enter", "context-switches",
                       *(f"syscalls:sys_enter_{name}" for name in SYSCALLS)])
    return await asyncio.create_subprocess_exec(
        "perf", "stat", "-x", ",", "-e", events, "-p", str(os.getpid()), "--", "sleep",
        f"{seconds:g}", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def syscalls_per_call_tick(proc: asyncio.subprocess.Process,
                                 call_ticks: int) -> dict[str, float]:
    """The counts ``perf stat`` printed, each per call-tick (``all``: every system call)."""
    _, err = await proc.communicate()
    counts = {}
    for line in err.decode().splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[0].isdigit():
            name = fields[2].removeprefix("syscalls:sys_enter_")
            counts["all" if name == "raw_syscalls:sys_enter" else name] = int(fields[0])
    return {name: round(count / call_ticks, 3) for name, count in counts.items()}


# -- driver ---------------------------------------------------------------------------------


def top_functions(path: Path, count: int = 10) -> list[tuple[float, str]]:
    """py-spy raw stacks → the ``count`` functions with the most samples of their own
    (share, name); a sample in the loop's C code (system calls) is its own line."""
    own: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")[1:]
        leaf = frames[-1] if frames else "?"
        if "asyncio/runners.py" in leaf or "uvloop/__init__" in leaf:
            leaf = "(uvloop, C: system calls and callbacks)"
        own[leaf] = own.get(leaf, 0) + int(float(n))
        total += int(float(n))
    ranked = sorted(own.items(), key=lambda item: -item[1])[:count]
    return [(100 * n / total, name) for name, n in ranked]


def run_one(tree: str, calls: int, workload: str, seconds: float,
            pyspy: Path | None = None, syscalls: bool = False) -> dict[str, Any]:
    me = str(Path(__file__).resolve())
    floor = tree == FLOOR
    if floor:  # the floor server, from this tree
        tree = str(Path(me).parents[1])
        pyspy = None
    env = {**os.environ, "PYTHONPATH": str(Path(tree).resolve())}
    peer_proc = subprocess.Popen(
        [sys.executable, me, "--role", "peer", "--calls", str(calls), "--workload", workload],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert peer_proc.stdout is not None and peer_proc.stdin is not None
        ports = json.loads(peer_proc.stdout.readline())
        spy = ["--pyspy", str(pyspy)] if pyspy else []
        if syscalls:
            spy.append("--syscalls")
        out = subprocess.run(
            [sys.executable, me, *spy, "--role", "floor" if floor else "server",
             "--calls", str(calls), "--workload",
             workload, "--seconds", str(seconds), "--ws-port", str(ports["ws"]),
             "--rtp-ports", ",".join(map(str, ports["rtp"]))],
            capture_output=True, text=True, env=env, cwd=tree, timeout=seconds + 120,
            check=True)
        result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        peer_proc.stdin.write("stop\n")
        peer_proc.stdin.flush()
        result["peer"] = json.loads(peer_proc.stdout.readline())
    finally:
        peer_proc.kill()
        peer_proc.wait()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=("driver", "server", "floor", "peer"),
                        default="driver")
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured window per run")
    parser.add_argument("--workload", choices=(*WORKLOADS, "both"), default="both")
    parser.add_argument("--callstream", default=".",
                        help="comma-separated source trees to run the server from")
    parser.add_argument("--rounds", type=int, default=3,
                        help="runs per tree and workload, alternating trees")
    parser.add_argument("--json", help="write every run and the medians here")
    parser.add_argument("--pyspy", help="record each server with py-spy (raw) into this "
                        "folder as <workload>-<tree>-<round>.txt")
    parser.add_argument("--syscalls", action="store_true",
                        help="count the server's system calls per call-tick in the window "
                        "(perf stat on the syscall tracepoints: exact, no tracing overhead)")
    parser.add_argument("--ws-port", type=int)
    parser.add_argument("--rtp-ports")
    args = parser.parse_args()
    import uvloop

    if args.role == "peer":
        uvloop.run(peer(args.calls, args.workload == "voice-ai"))
        return
    if args.role in ("server", "floor"):
        ports = [int(p) for p in args.rtp_ports.split(",")]
        if args.role == "floor":
            result = uvloop.run(floor_server(args.calls, args.workload, args.seconds,
                                             args.ws_port, ports, args.syscalls))
        else:
            result = uvloop.run(server(args.calls, args.workload, args.seconds, args.ws_port,
                                       ports, args.pyspy, args.syscalls))
        print(json.dumps(result), flush=True)
        return

    if args.pyspy:
        Path(args.pyspy).mkdir(parents=True, exist_ok=True)
    trees = [t for t in args.callstream.split(",") if t]
    workloads = WORKLOADS if args.workload == "both" else (args.workload,)
    runs: list[dict[str, Any]] = []
    print(f"{args.calls} calls, {args.seconds:.0f} s measured, {args.rounds} rounds; "
          f"µs of server CPU per call per 20 ms", flush=True)
    for round_ in range(args.rounds):
        for workload in workloads:
            for tree in trees:
                spy = (Path(args.pyspy) / f"{workload}-{Path(tree).resolve().name}-{round_}.txt"
                       if args.pyspy else None)
                res = run_one(tree, args.calls, workload, args.seconds, spy, args.syscalls)
                if spy is not None:
                    res["top"] = top_functions(spy)
                runs.append({"tree": tree, "workload": workload, "round": round_, **res})
                print(f"  round {round_ + 1} {workload:>8} {tree}: "
                      f"{res['us_per_call_per_20ms']:.1f} µs (user "
                      f"{res['user_us_per_call_per_20ms']:.1f}, system "
                      f"{res['system_us_per_call_per_20ms']:.1f}), ws frames/call/tick "
                      f"{res['ws_frames_per_call_per_tick']:.2f}, late {res['late_ticks']}, "
                      f"skipped {res['skipped_ticks']}, peer {res['peer']}", flush=True)
                if res.get("syscalls_per_call_tick"):
                    print("      system calls per call-tick: " + ", ".join(
                        f"{name} {count:g}" for name, count
                        in res["syscalls_per_call_tick"].items()), flush=True)
                if spy is not None:
                    for share, name in res["top"]:
                        print(f"      {share:5.1f} %  {name}")
    medians: dict[str, dict[str, float]] = {}
    split: dict[str, dict[str, tuple[float, float]]] = {}  # medians of user and system
    clean_runs: dict[str, dict[str, int]] = {}
    for workload in workloads:
        for tree in trees:
            mine = [r for r in runs if r["tree"] == tree and r["workload"] == workload]
            clean = [r for r in mine if r["skipped_ticks"] <= r["ticks"] * MAX_SKIPPED]
            medians.setdefault(workload, {})[tree] = statistics.median(
                r["us_per_call_per_20ms"] for r in clean or mine)
            split.setdefault(workload, {})[tree] = (
                statistics.median(r["user_us_per_call_per_20ms"] for r in clean or mine),
                statistics.median(r["system_us_per_call_per_20ms"] for r in clean or mine))
            clean_runs.setdefault(workload, {})[tree] = len(clean)
    print(f"\n{'workload':>8} " + " ".join(
        f"{t if t == FLOOR else Path(t).resolve().name:>40}" for t in trees))
    for workload, row in medians.items():
        print(f"{workload:>8} " + " ".join(
            f"{row[t]:>8.1f} µs (user {split[workload][t][0]:.1f}, system "
            f"{split[workload][t][1]:.1f}; {clean_runs[workload][t]}/{args.rounds} clean)"
            for t in trees))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "machine": {"cpus": os.cpu_count(), "load_avg": os.getloadavg(),
                        "host": socket.gethostname()},
            "args": vars(args), "runs": runs, "medians": medians, "user_system_medians": split,
            "clean_runs": clean_runs}, indent=2))


if __name__ == "__main__":
    main()
