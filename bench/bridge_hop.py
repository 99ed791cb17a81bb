"""What a bridge across workers costs: a hop against a bridge in one process.

Two calls bridged in one process are joined by :func:`~callstream.media.hub.bridge`
between their hubs (one hub per call, as the server has). Two calls held by different
workers are joined by a hop (:mod:`callstream.media.hop`): each worker's half is a
:class:`~callstream.calls.remote_bridge.RemoteBridge`, which shows the other call as a
leg of its own hub and carries that leg's audio over loopback UDP. Here both halves run
in the one bench process, so the hop's figure is what the two workers pay together.

Every 20 ms (a timer on the event loop, as the server's pacer), each pair gets one
inbound frame on each call's leg (a tone, as RTP playout would push it), then every hub
ticks; between ticks the loop runs, so the hop's datagrams are received. ``local`` and
``hop`` runs alternate, round after round (their order swapped each round), so a noisy
machine slows both alike. The figure is the process's CPU time (``getrusage``: user and
system, so the hop's socket calls count) over the measured window, per bridged call
(a pair is two) per tick; user and system are also given apart.

Checks that the audio arrived: each hop's frames received over frames sent (100 %
expected), the share of ticks in which each call's leg played something, and the peak of
the last frame each leg played (the other caller's tone, not silence). Rates: ``8k``
(both legs 8 kHz) and ``8k-16k`` (one leg at each: the bridge resamples; a hop carries
16 kHz both ways). A run whose timer skipped more than 1 % of its ticks (the process was
starved of CPU) measured catch-up bursts, not the steady path; the medians are of the
clean runs where there are any, and say how many.

Usage::

    python bench/bridge_hop.py                                    # 50 and 200 pairs
    python bench/bridge_hop.py --pairs 200 --seconds 10 --rounds 5 --json out.json

Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import resource
import socket
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from callstream.calls.features import LegMedia
from callstream.calls.remote_bridge import RemoteBridge
from callstream.media.hop import HopEndpoint, open_hop
from callstream.media.hub import MediaHub, bridge
from callstream.media.transport import MAX_CATCHUP_TICKS

MODES = ("local", "hop")
#: Each variant's two legs' rates.
RATES = {"8k": (8000, 8000), "8k-16k": (8000, 16000)}
TICK = 0.020
#: Seconds of ticking before the window opens.
SETTLE_S = 0.5
#: A run whose timer skipped more than this share of its ticks is not "clean".
MAX_SKIPPED = 0.01
#: Polls 10 ms apart, after the last tick, for the hops' datagrams still in flight.
DRAIN_POLLS = 100
#: The callers' tones: a whole number of periods in 20 ms, so every frame is the same.
TONE_HZ = (400, 600)
TONE_PEAK = 8000
#: A played frame whose peak is below this is silence (PCM s16le).
SILENT_PEAK = 100


def tone(hz: int, rate: int) -> bytes:
    """One 20 ms frame of a sine of ``hz`` at ``rate``, PCM s16le."""
    samples = rate // 50
    return b"".join(
        round(TONE_PEAK * math.sin(2 * math.pi * hz * i / rate)).to_bytes(2, "little", signed=True)
        for i in range(samples))


def peak(pcm: bytes) -> int:
    return max((abs(int.from_bytes(pcm[i:i + 2], "little", signed=True))
                for i in range(0, len(pcm), 2)), default=0)


@dataclass
class Call:
    """One call of a pair: its hub and leg, what its caller says, what it played."""

    hub: MediaHub
    leg: str
    pcm: bytes
    played: int = 0
    last: bytes = b""


@dataclass
class Bench:
    """Every pair of one run, ``local`` or ``hop``, and the ticks that drive them."""

    calls: list[Call] = field(default_factory=list)
    halves: list[RemoteBridge] = field(default_factory=list)
    closers: list[Callable[[], None]] = field(default_factory=list)

    @property
    def hops(self) -> list[HopEndpoint]:
        return [half.hop for half in self.halves]

    def tick(self, now: float) -> None:
        calls = self.calls
        for call in calls:  # each caller's frame, as the leg's playout pushes it
            call.hub.push_inbound(call.leg, call.pcm, now)
        for call in calls:
            name = call.leg
            for leg, pcm in call.hub.tick(now):
                if pcm is not None and leg == name:
                    call.played += 1
                    call.last = pcm

    def close(self) -> None:
        for close in self.closers:
            close()
        for call in self.calls:
            call.hub.close()


def _call(name: str, rate: int, hz: int) -> Call:
    hub = MediaHub(name)
    hub.add_leg(name, rate)
    return Call(hub, name, tone(hz, rate))


def _no_owner_to_tell(other: str, call: str, ssrc: int) -> None:
    """A half's "left the bridge" notice: both halves are here, closed together."""


async def open_bench(mode: str, pairs: int, rates: tuple[int, int]) -> Bench:
    bench = Bench()
    for n in range(pairs):
        a = _call(f"a{n}", rates[0], TONE_HZ[0])
        b = _call(f"b{n}", rates[1], TONE_HZ[1])
        bench.calls += [a, b]
        if mode == "local":
            bench.closers.append(bridge(a.hub, a.leg, b.hub, b.leg).close)
            continue
        halves = []
        for me, other in ((a, b), (b, a)):
            rate = me.hub.sample_rate(me.leg)
            hop = await open_hop("127.0.0.1")
            halves.append(RemoteBridge(LegMedia(me.hub, me.leg, "L16", rate, 0), hop,
                                       me.leg, other.leg, _no_owner_to_tell))
        halves[0].connect(halves[1].offer)
        halves[1].connect(halves[0].offer)
        bench.halves += halves
        bench.closers += [half.close for half in halves]
    return bench


class Ticker:
    """The 20 ms timer, as the server's pacer: late ticks catch up (at most
    MAX_CATCHUP_TICKS at once), longer stalls are skipped and counted."""

    def __init__(self, tick: Callable[[float], None]) -> None:
        self._tick = tick
        self._loop = asyncio.get_running_loop()
        self._next = self._loop.time() + TICK
        self._handle = self._loop.call_at(self._next, self._run)
        self.ticks = self.late_ticks = self.skipped_ticks = 0

    def _run(self) -> None:
        now = self._loop.time()
        ran = 0
        while self._next <= now and ran < MAX_CATCHUP_TICKS:
            if ran:
                self.late_ticks += 1
            self._tick(self._next)
            self._next += TICK
            self.ticks += 1
            ran += 1
        if self._next <= now:
            missed = int((now - self._next) / TICK) + 1
            self.skipped_ticks += missed
            self._next += missed * TICK
        self._handle = self._loop.call_at(self._next, self._run)

    def stop(self) -> None:
        self._handle.cancel()


def _cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


async def run_one(mode: str, pairs: int, rate_name: str, seconds: float) -> dict[str, Any]:
    """One run: ``pairs`` bridged pairs for ``seconds`` measured."""
    bench = await open_bench(mode, pairs, RATES[rate_name])
    gc.collect()
    ticker = Ticker(bench.tick)
    try:
        await asyncio.sleep(SETTLE_S)
        user0, system0 = _cpu()
        ticks0, skipped0 = ticker.ticks, ticker.skipped_ticks
        played0 = sum(c.played for c in bench.calls)
        await asyncio.sleep(seconds)
        user1, system1 = _cpu()
        ticks, skipped = ticker.ticks - ticks0, ticker.skipped_ticks - skipped0
        played = sum(c.played for c in bench.calls) - played0
        ticker.stop()
        hops = bench.hops
        for _ in range(DRAIN_POLLS):
            if all(h.frames_received >= h.frames_sent for h in hops):
                break
            await asyncio.sleep(0.01)
        sent = sum(h.frames_sent for h in hops)
        received = sum(h.frames_received for h in hops)
        calls = 2 * pairs
        per = 1e6 / ticks / calls if ticks else math.nan
        return {
            "mode": mode, "rates": rate_name, "pairs": pairs, "calls": calls,
            "seconds": seconds, "ticks": ticks, "late_ticks": ticker.late_ticks,
            "skipped_ticks": skipped,
            "us_per_call_per_20ms": ((user1 - user0) + (system1 - system0)) * per,
            "user_us_per_call_per_20ms": (user1 - user0) * per,
            "system_us_per_call_per_20ms": (system1 - system0) * per,
            "played_pct": 100 * played / (ticks * calls) if ticks else 0.0,
            "far_peak_min": min(peak(c.last) for c in bench.calls),
            "hop_frames_sent": sent if hops else None,
            "hop_frames_received": received if hops else None,
            "hop_received_pct": 100 * received / sent if sent else None,
            "hop_dropped": sum(h.dropped for h in hops) if hops else None,
        }
    finally:
        ticker.stop()
        bench.close()


def clean(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in runs if r["skipped_ticks"] <= r["ticks"] * MAX_SKIPPED]


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per pairs and rates: each mode's medians (of its clean runs, or of all), the hop's
    extra cost per call per 20 ms, and the checks."""
    rows = []
    for pairs in sorted({r["pairs"] for r in runs}):
        for rates in RATES:
            row: dict[str, Any] = {"pairs": pairs, "rates": rates}
            for mode in MODES:
                mine = [r for r in runs if (r["pairs"], r["rates"], r["mode"]) ==
                        (pairs, rates, mode)]
                if not mine:
                    break
                use = clean(mine) or mine
                for name in ("us_per_call_per_20ms", "user_us_per_call_per_20ms",
                             "system_us_per_call_per_20ms"):
                    row[f"{mode}_{name}"] = statistics.median(r[name] for r in use)
                row[f"{mode}_clean_runs"] = len(clean(mine))
                row[f"{mode}_runs"] = len(mine)
                row[f"{mode}_played_pct_min"] = min(r["played_pct"] for r in mine)
                row[f"{mode}_far_peak_min"] = min(r["far_peak_min"] for r in mine)
            else:
                hop = [r for r in runs if (r["pairs"], r["rates"], r["mode"]) ==
                       (pairs, rates, "hop")]
                row["hop_received_pct_min"] = min(r["hop_received_pct"] for r in hop)
                row["hop_dropped"] = sum(r["hop_dropped"] for r in hop)
                row["extra_us_per_call_per_20ms"] = (row["hop_us_per_call_per_20ms"]
                                                     - row["local_us_per_call_per_20ms"])
                rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", default="50,200",
                        help="comma-separated numbers of bridged pairs (a pair is two calls)")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured window per run")
    parser.add_argument("--rounds", type=int, default=3,
                        help="runs per mode, pairs and rates, local and hop alternating")
    parser.add_argument("--rates", choices=(*RATES, "both"), default="both")
    parser.add_argument("--json", help="write every run and the medians here")
    args = parser.parse_args()
    import uvloop

    pair_counts = [int(p) for p in args.pairs.split(",") if p]
    variants = list(RATES) if args.rates == "both" else [args.rates]
    print(f"{args.seconds:g} s measured, {args.rounds} rounds, load {os.getloadavg()[0]:.2f}; "
          "µs of CPU per bridged call per 20 ms", flush=True)
    runs: list[dict[str, Any]] = []

    async def all_runs() -> None:
        for round_ in range(args.rounds):
            modes = MODES if round_ % 2 == 0 else MODES[::-1]
            for pairs in pair_counts:
                for rates in variants:
                    for mode in modes:
                        res = await run_one(mode, pairs, rates, args.seconds)
                        runs.append({"round": round_, **res})
                        hop = ("" if res["hop_received_pct"] is None else
                               f", hop received {res['hop_received_pct']:.2f} %")
                        print(f"  round {round_ + 1} {pairs:>4} pairs {rates:>6} {mode:>5}: "
                              f"{res['us_per_call_per_20ms']:6.2f} µs (user "
                              f"{res['user_us_per_call_per_20ms']:.2f}, system "
                              f"{res['system_us_per_call_per_20ms']:.2f}), played "
                              f"{res['played_pct']:.1f} %, far peak {res['far_peak_min']}"
                              f"{hop}, late {res['late_ticks']}, skipped "
                              f"{res['skipped_ticks']}", flush=True)

    uvloop.run(all_runs())
    rows = summarise(runs)
    print(f"\n{'pairs':>5} {'rates':>6} {'local µs':>9} {'hop µs':>8} {'extra µs':>9} "
          f"{'hop user/sys':>13} {'received %':>10} {'played %':>8} {'clean':>9}")
    for row in rows:
        print(f"{row['pairs']:>5} {row['rates']:>6} {row['local_us_per_call_per_20ms']:>9.2f} "
              f"{row['hop_us_per_call_per_20ms']:>8.2f} "
              f"{row['extra_us_per_call_per_20ms']:>9.2f} "
              f"{row['hop_user_us_per_call_per_20ms']:>6.2f}/"
              f"{row['hop_system_us_per_call_per_20ms']:<6.2f} "
              f"{row['hop_received_pct_min']:>10.2f} "
              f"{min(row['local_played_pct_min'], row['hop_played_pct_min']):>8.1f} "
              f"{row['local_clean_runs']}/{row['local_runs']},"
              f"{row['hop_clean_runs']}/{row['hop_runs']}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "machine": {"cpus": os.cpu_count(), "load_avg": os.getloadavg(),
                        "host": socket.gethostname()},
            "args": vars(args), "runs": runs, "medians": rows}, indent=2))


if __name__ == "__main__":
    main()
