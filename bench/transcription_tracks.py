"""CPU per track and latency with several tracks at once on one core, in process.

Each of ``--tracks`` tracks is the first ``--clips`` human clips of the corpus
(``tests/corpus.py``), phone band, through PCMU, laid end to end with 1.5 s gaps as in
``bench/transcription.py``, track *i* starting at clip *i* so that utterances do not
line up. All tracks play at once in real time: a coroutine per track hands its arrived
20 ms frames (at least 60 ms) to a thread pool one batch at a time, with interims off
for a batch whose oldest frame is over 0.5 s old, as the server's track workers do.
One engine (``workers=1``, one CTranslate2 thread), the process pinned to one core.

Measured per run: process CPU seconds per second of audio per track (and the tracks a
core that implies), the share of batches that skipped interims (the track was
behind), interims per model call, WER of the finals and of the last interim before
each, onset -> first interim and end of speech -> final (p50/p95, wall clock).

Usage::

    python bench/transcription_tracks.py --tracks 1,4,8 --json out.json
    python bench/transcription_tracks.py --pool-threads 1   # one feed at a time

``--pool-threads``: the pool's threads (default: one per track, as the server gives
each busy track its own thread; 1 is the server before interim batching, with one
worker). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prometheus_client import REGISTRY

from bench.transcription import Placed, Result, build_track, pct, score
from callstream.transcription.engine import RecognizerOptions, TrackRecognizer
from callstream.transcription.manager import INTERIM_MAX_LAG_S, MIN_BATCH_FRAMES
from callstream.transcription.models import resolve_model
from callstream.transcription.whisper import WhisperEngine
from tests.corpus import corpus
from tests.transcription.test_whisper import over_pcmu

FRAME_S = 0.02
FRAME_BYTES = 320
BATCH_SIZE = "callstream_transcription_interim_batch_size"


def batch_counts() -> tuple[float, float]:
    """(model calls for interims, interims in them) so far; zeros before batching."""
    return (REGISTRY.get_sample_value(f"{BATCH_SIZE}_count") or 0.0,
            REGISTRY.get_sample_value(f"{BATCH_SIZE}_sum") or 0.0)


async def play(pcm: bytes, recognizer: TrackRecognizer, pool: ThreadPoolExecutor,
               t0: float, skipped: list[int]) -> Result:
    loop = asyncio.get_running_loop()
    result = Result()
    total = len(pcm) // FRAME_BYTES
    sent = 0
    while sent < total:
        now = loop.time() - t0
        arrived = min(total, int(now / FRAME_S))
        if arrived - sent < min(MIN_BATCH_FRAMES, total - sent):
            await asyncio.sleep((sent + MIN_BATCH_FRAMES) * FRAME_S - now)
            continue
        interims = now - (sent + 1) * FRAME_S < INTERIM_MAX_LAG_S
        skipped[0] += not interims
        skipped[1] += 1
        chunk, sent = pcm[sent * FRAME_BYTES: arrived * FRAME_BYTES], arrived
        segments = await loop.run_in_executor(pool, functools.partial(
            recognizer.feed, chunk, 8000, interims=interims))
        at = loop.time() - t0
        for s in segments:
            (result.finals if s.is_final else result.interims).append((at, s.text))
    segments = await loop.run_in_executor(pool, recognizer.flush)
    at = loop.time() - t0
    result.finals += [(at, s.text) for s in segments]
    return result


async def run(engine: WhisperEngine, tracks: list[tuple[bytes, list[Placed]]],
              pool_threads: int) -> dict[str, Any]:
    recognizers = [engine.new_track(RecognizerOptions(interim_results=True))
                   for _ in tracks]
    skipped = [0, 0]
    calls0, items0 = batch_counts()
    with ThreadPoolExecutor(pool_threads) as pool:
        cpu0 = time.process_time()
        t0 = asyncio.get_running_loop().time()
        results = await asyncio.gather(*(play(pcm, rec, pool, t0, skipped)
                                         for (pcm, _), rec in zip(tracks, recognizers,
                                                                  strict=True)))
        cpu = time.process_time() - cpu0
    calls, items = (a - b for a, b in zip(batch_counts(), (calls0, items0), strict=True))
    audio_s = sum(len(pcm) / 2 / 8000 for pcm, _ in tracks)
    scores = [score(placed, result) for (_, placed), result in zip(tracks, results,
                                                                   strict=True)]
    words = sum(s["words"] for s in scores)
    first = [t for s in scores for t in s["first_interim_s"]]
    final = [t for s in scores for t in s["final_after_end_s"]]
    return {
        "tracks": len(tracks), "audio_s": round(audio_s, 1), "cpu_s": round(cpu, 2),
        "cpu_per_track": round(cpu / audio_s, 4),
        "tracks_per_core": round(audio_s / cpu, 2),
        "interims_skipped_share": round(skipped[0] / max(skipped[1], 1), 3),
        "interims_per_call": round(items / calls, 2) if calls else None,
        "wer_finals": round(sum(s["wer_finals"] * s["words"] for s in scores) / words, 4),
        "wer_last_interims": round(
            sum(s["wer_last_interims"] * s["words"] for s in scores) / words, 4),
        "first_interim_p50_s": pct(first, 0.5), "first_interim_p95_s": pct(first, 0.95),
        "final_p50_s": pct(final, 0.5), "final_p95_s": pct(final, 0.95),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--tracks", default="1,4,8", help="concurrent tracks, per run")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--pool-threads", type=int, default=0, help="0: one per track")
    parser.add_argument("--core", type=int, default=1, help="CPU to pin to")
    parser.add_argument("--json")
    args = parser.parse_args()
    for thread in os.listdir("/proc/self/task"):  # those started at import too
        os.sched_setaffinity(int(thread), {args.core})
    engine = WhisperEngine(resolve_model(args.model, data_dir=Path.home()
                                         / ".cache/callstream-bench"), name=args.model)
    clips = list(corpus())[: args.clips]
    warm = engine.new_track(RecognizerOptions(interim_results=True))
    warm.feed(over_pcmu(build_track(clips[:1])[0]), 8000)
    rows = []
    for count in (int(n) for n in args.tracks.split(",")):
        tracks = []
        for i in range(count):
            pcm, placed = build_track(clips[i % len(clips):] + clips[: i % len(clips)])
            tracks.append((over_pcmu(pcm), placed))
        row = asyncio.run(run(engine, tracks, args.pool_threads or count))
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\n{'tracks':>6} {'CPU/track':>9} {'tracks/core':>11} {'skipped':>7} "
          f"{'per call':>8} {'WER':>6} {'interim WER':>11} {'first p50/p95':>13} "
          f"{'final p50/p95':>13}")
    for r in rows:
        first = f"{r['first_interim_p50_s']:.2f}/{r['first_interim_p95_s']:.2f}"
        final = f"{r['final_p50_s']:.2f}/{r['final_p95_s']:.2f}"
        print(f"{r['tracks']:>6} {r['cpu_per_track']:>9} {r['tracks_per_core']:>11} "
              f"{r['interims_skipped_share']:>7} {r['interims_per_call'] or '-':>8} "
              f"{r['wer_finals']:>6} {r['wer_last_interims']:>11} {first:>13} {final:>13}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({
            "model": args.model, "clips": args.clips, "pool_threads": args.pool_threads,
            "rows": rows, "load": os.getloadavg(),
            "machine": f"{platform.machine()} {os.cpu_count()} vCPU",
            "median_cpu_per_track": statistics.median(r["cpu_per_track"] for r in rows),
        }, indent=2))


if __name__ == "__main__":
    main()
