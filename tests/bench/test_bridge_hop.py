"""bench/bridge_hop.py: each mode bridges for real (each caller hears the other), and a
tiny run reports every figure with the audio checks passed (a smoke run, not a
measurement: no timing asserts)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.bridge_hop import MODES, RATES, SILENT_PEAK, TICK, TONE_PEAK, open_bench, peak

ROOT = Path(__file__).resolve().parents[2]
PAIRS = 2

RUN_FIGURES = (
    "mode", "rates", "pairs", "calls", "ticks", "late_ticks", "skipped_ticks",
    "us_per_call_per_20ms", "user_us_per_call_per_20ms", "system_us_per_call_per_20ms",
    "played_pct", "far_peak_min", "hop_frames_sent", "hop_frames_received",
    "hop_received_pct", "hop_dropped",
)


@pytest.mark.parametrize("mode", MODES)
async def test_each_caller_hears_the_other(mode: str) -> None:
    """Both legs at 8 kHz: each leg plays the other caller's frame, bit-exact, whether
    the pair is bridged in one process or through a hop on loopback."""
    bench = await open_bench(mode, 1, RATES["8k"])
    try:
        a, b = bench.calls
        assert a.pcm != b.pcm and peak(a.pcm) == TONE_PEAK
        for n in range(5):  # a hop's frame is played the tick after it arrives
            bench.tick(n * TICK)
            await asyncio.sleep(0.02)
        assert a.last == b.pcm and b.last == a.pcm
        assert a.played >= 4 and b.played >= 4
        assert all(hop.frames_received == hop.frames_sent == 5 for hop in bench.hops)
        assert len(bench.hops) == (2 if mode == "hop" else 0)
    finally:
        bench.close()


def test_a_tiny_run_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "hop.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bridge_hop.py"), "--pairs", str(PAIRS),
         "--seconds", "0.5", "--rounds", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "extra µs" in proc.stdout  # the table
    report = json.loads(out.read_text())
    runs = report["runs"]
    assert {(r["mode"], r["rates"]) for r in runs} == {(m, r) for m in MODES for r in RATES}
    for run in runs:
        assert set(RUN_FIGURES) <= set(run), run
        assert run["pairs"] == PAIRS and run["calls"] == 2 * PAIRS and run["ticks"] > 0
        assert run["us_per_call_per_20ms"] > 0
        assert 0 < run["played_pct"] <= 100
        assert run["far_peak_min"] > SILENT_PEAK  # the other caller's tone, not silence
        if run["mode"] == "hop":
            assert run["hop_frames_sent"] > 0 and run["hop_received_pct"] == 100.0
            assert run["hop_dropped"] == 0
        else:
            assert run["hop_frames_sent"] is None and run["hop_received_pct"] is None
    medians = report["medians"]
    assert [(m["pairs"], m["rates"]) for m in medians] == [(PAIRS, r) for r in RATES]
    for row in medians:
        assert row["hop_us_per_call_per_20ms"] > 0 and row["local_us_per_call_per_20ms"] > 0
        assert row["extra_us_per_call_per_20ms"] == pytest.approx(
            row["hop_us_per_call_per_20ms"] - row["local_us_per_call_per_20ms"])
        assert row["hop_received_pct_min"] == 100.0 and row["hop_dropped"] == 0
