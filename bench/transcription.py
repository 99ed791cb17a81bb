"""Live transcription benchmark: accuracy, latency and CPU on real calls.

The real-speech corpus (``tests/corpus.py``: 15 utterances, 241 words, from registry
packages) is put in phone band (8 kHz, 300-3400 Hz), laid end to end with gaps of
silence into one track, encoded as PCMU RTP and played by SIPp on real calls to a real
``callstream serve``, which transcribes the inbound track and posts
``call.transcription`` webhooks to a local receiver. The server is pinned to one core
with one recognition thread.

Measured:

* **WER** of the finals, and of the last interim before each final, against the
  references (normalised: lower case, digits spelled out, "Mr." = "mister");
* **first interim**: from each clip's speech onset (first 20 ms frame within 20 dB of
  the clip's loudest) to the first interim after it;
* **final**: from each clip's speech end (last such frame) to the first final after it;
* **CPU per track**: server CPU seconds (``/proc``) per second of audio, for one call;
* **capacity**: ``--calls K`` concurrent calls on the one core; whether it kept up
  (no dropped frames, few skipped interims, final latency) is read from ``/metrics``.

Times are server-side: a webhook's ``occurred_at`` minus the call's ``call.answered``
``occurred_at`` (SIPp starts its pcap as it sends the ACK that answers the call), so
webhook delivery is not included.

``--stress`` runs the stress evaluation instead (``bench/transcription_stress.py``):
synthetic voices and the real corpus at three tempos, each fed straight to the
recogniser with a simulated real-time clock, against the same model offline.

Usage::

    python bench/transcription.py --clips 5               # quick look, tiny.en
    python bench/transcription.py --model base            # Whisper base, same audio
    python bench/transcription.py --calls 8 --clips 4     # capacity on one core
    python bench/transcription.py --json bench/results/transcription.json
    python bench/transcription.py --stress --json bench/results/transcription-stress.json
    python bench/transcription.py --stress --final-model base   # two-pass finals

Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callstream.transcription.vad import VadOptions
from tests.audio import rtp_packets, write_pcap
from tests.corpus import Clip, corpus, phone_band, word_errors
from tests.e2e.sipp import DATA, sipp
from tests.helpers import free_udp_tcp_port, running_server
from tests.receiver import Receiver, webhook_receiver

RATE = 8000
LEAD_S = 1.5
GAP_S = 1.5
FRAME = 160  # samples in 20 ms


@dataclass
class Placed:
    clip: Clip
    onset: float  # seconds into the track
    end: float


@dataclass
class Result:
    finals: list[tuple[float, str]] = field(default_factory=list)
    interims: list[tuple[float, str]] = field(default_factory=list)


def speech_span(pcm: bytes) -> tuple[float, float]:
    """First and last 20 ms frame within 20 dB of the loudest (seconds)."""
    samples = np.frombuffer(pcm, "<i2").astype(np.float64)
    n = len(samples) // FRAME
    rms = np.sqrt(np.mean(samples[: n * FRAME].reshape(n, FRAME) ** 2, axis=1))
    loud = np.nonzero(rms > rms.max() * 0.1)[0]
    return loud[0] * FRAME / RATE, (loud[-1] + 1) * FRAME / RATE


def build_track(clips: list[Clip]) -> tuple[bytes, list[Placed]]:
    parts = [b"\0\0" * int(LEAD_S * RATE)]
    placed = []
    at = LEAD_S
    for item in clips:
        pcm = phone_band(item)
        onset, end = speech_span(pcm)
        placed.append(Placed(item, at + onset, at + end))
        parts += [pcm, b"\0\0" * int(GAP_S * RATE)]
        at += len(pcm) / 2 / RATE + GAP_S
    return b"".join(parts), placed


def iso_seconds(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.split()[-1])
    return total


def run_calls(server: Any, hooks: Receiver, workdir: Path, track: bytes, calls: int,
              *, interims: bool) -> tuple[list[Result], float, float]:
    """Play ``track`` on ``calls`` concurrent calls; return per-call results, the server
    CPU seconds and the wall seconds they took."""
    pcap = workdir / "call.pcap"
    write_pcap(pcap, rtp_packets(track, "PCMU"))
    hold = len(track) / 2 / RATE + 2.0
    known = {d.payload["call_control_id"] for d in hooks.events("call.initiated")}
    procs = []
    cpu0, wall0 = cpu_seconds(server.proc.pid), time.monotonic()
    ids: list[str] = []
    with server.client() as http:
        for _ in range(calls):
            procs.append(sipp(
                "-sf", str(DATA / "uac_call_pcap.xml"), "-i", "127.0.0.1",
                "-p", str(free_udp_tcp_port()), "-mp", str(free_udp_tcp_port()), "-m", "1",
                "-d", str(int(hold * 1000)), "-s", "+15550002222", server_target(server),
                cwd=workdir, timeout=hold + 60))
            d = hooks.wait_for(lambda d: d.event_type == "call.initiated"
                               and d.payload["call_control_id"] not in known)
            ccid = d.payload["call_control_id"]
            known.add(ccid)
            ids.append(ccid)
            http.post(f"/v2/calls/{ccid}/actions/answer", json={
                "transcription": True, "transcription_config": {
                    "transcription_engine": "B",
                    "transcription_engine_config": {"interim_results": interims}}},
            ).raise_for_status()
        for proc in procs:
            proc.wait(hold + 90)
    for ccid in ids:
        hooks.wait_event("call.hangup", ccid, timeout=60)
    time.sleep(1.0)  # finals of the last words follow the hangup at worst
    cpu, wall = cpu_seconds(server.proc.pid) - cpu0, time.monotonic() - wall0
    results = []
    for ccid in ids:
        t0 = iso_seconds(hooks.wait_event("call.answered", ccid).json["data"]["occurred_at"])
        result = Result()
        for d in hooks.events("call.transcription"):
            if d.payload["call_control_id"] != ccid:
                continue
            data = d.payload["transcription_data"]
            at = iso_seconds(d.json["data"]["occurred_at"]) - t0
            (result.finals if data["is_final"] else result.interims).append(
                (at, data["transcript"]))
        result.finals.sort()
        result.interims.sort()
        results.append(result)
    return results, cpu, wall


def server_target(server: Any) -> str:
    return f"127.0.0.1:{server.sip_port}"


def last_interims(finals: list[tuple[float, str]],
                  interims: list[tuple[float, str]]) -> list[str]:
    """The last interim before each final (by arrival time): what a live reader saw last."""
    kept, since = [], -1.0
    for at, _ in finals:
        before = [text for t, text in interims if since < t <= at]
        if before:
            kept.append(before[-1])
        since = at
    return kept


def score(placed: list[Placed], result: Result) -> dict[str, Any]:
    reference = " ".join(p.clip.reference for p in placed)
    finals = " ".join(text for _, text in result.finals)
    errors, words = word_errors(reference, finals)
    i_errors, _ = word_errors(reference, " ".join(last_interims(result.finals,
                                                                 result.interims)))
    first_interim, to_final = [], []
    for p in placed:
        later = [t - p.onset for t, _ in result.interims if t > p.onset]
        if later and later[0] < p.end - p.onset + 1.0:
            first_interim.append(later[0])
        after = [t - p.end for t, _ in result.finals if t > p.end - 0.3]
        if after:
            to_final.append(after[0])
    return {"words": words, "wer_finals": errors / words, "wer_last_interims": i_errors / words,
            "first_interim_s": first_interim, "final_after_end_s": to_final,
            "finals": finals}


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny.en", help="tiny.en, base, or a directory")
    parser.add_argument("--clips", type=int, default=0, help="first N corpus clips (0: all)")
    parser.add_argument("--calls", type=int, default=1, help="concurrent calls")
    parser.add_argument("--no-interims", action="store_true")
    parser.add_argument("--core", type=int, default=1, help="CPU the server is pinned to")
    parser.add_argument("--json")
    parser.add_argument("--stress", action="store_true",
                        help="the stress evaluation (in process, no calls)")
    parser.add_argument("--final-model", help="--stress: decode finals with this model")
    parser.add_argument("--synthetic", type=int, default=12,
                        help="--stress: (text, voice) pairs, each at 3 tempos")
    parser.add_argument("--human", type=int, default=15,
                        help="--stress: corpus clips, each at 3 tempos")
    parser.add_argument("--no-offline", action="store_true",
                        help="--stress: skip the offline decodes")
    parser.add_argument("--tempos", default="0.9,1.0,1.1",
                        help="--stress: comma-separated playback speeds")
    parser.add_argument("--end-silence-ms", type=int, default=VadOptions().min_silence_ms,
                        help="--stress: silence that ends an utterance (the server's default)")
    args = parser.parse_args()
    if args.stress:
        stress(args)
        return

    clips = list(corpus())[: args.clips or None]
    track, placed = build_track(clips)
    audio_s = len(track) / 2 / RATE
    speech_s = sum(p.end - p.onset for p in placed)
    with TemporaryDirectory() as tmp, webhook_receiver() as hooks:
        env = {"CALLSTREAM_WEBHOOK_URL": hooks.url, "CALLSTREAM_TRANSCRIPTION_MODEL": args.model,
               "CALLSTREAM_TRANSCRIPTION_THREADS": "1", "CALLSTREAM_TRANSCRIPTION_DEVICE": "cpu",
               "CALLSTREAM_RTP_PORT_MIN": "34000", "CALLSTREAM_RTP_PORT_MAX": "35999",
               "OMP_NUM_THREADS": "1"}
        with running_server(Path(tmp) / "data", env=env) as server:
            assert server.proc is not None
            os.sched_setaffinity(server.proc.pid, {args.core})
            # Warm-up: the model loads on the first transcription.
            run_calls(server, hooks, Path(tmp), b"\0\0" * RATE, 1, interims=False)
            results, cpu, wall = run_calls(server, hooks, Path(tmp), track, args.calls,
                                           interims=not args.no_interims)
            with server.client() as http:
                metrics_text = http.get("/metrics").text
    scores = [score(placed, r) for r in results]
    first = [x for s in scores for x in s["first_interim_s"]]
    final = [x for s in scores for x in s["final_after_end_s"]]
    cpu_per_audio_s = cpu / (audio_s * args.calls)
    out = {
        "model": args.model, "calls": args.calls, "clips": len(clips), "words": scores[0]["words"],
        "audio_s": round(audio_s, 1), "speech_share": round(speech_s / audio_s, 2),
        "wer_finals": [round(s["wer_finals"], 4) for s in scores],
        "wer_last_interims": [round(s["wer_last_interims"], 4) for s in scores],
        "first_interim_p50_s": pct(first, 0.5), "first_interim_p95_s": pct(first, 0.95),
        "final_p50_s": pct(final, 0.5), "final_p95_s": pct(final, 0.95),
        "server_cpu_s": round(cpu, 2), "wall_s": round(wall, 1),
        "cpu_per_track": round(cpu_per_audio_s, 4),
        "tracks_per_core_estimate": round(1 / cpu_per_audio_s, 1) if cpu else None,
        "dropped_frames": metric(metrics_text, "callstream_transcription_dropped_frames_total"),
        "interims_skipped": metric(metrics_text,
                                   "callstream_transcription_interims_skipped_total"),
        "interims": sum(len(r.interims) for r in results),
        "finals_text": scores[0]["finals"],
        "machine": f"{platform.machine()} {os.cpu_count()} vCPU, Python "
                   f"{platform.python_version()}",
    }
    for key, value in out.items():
        if key != "finals_text":
            print(f"{key:26} {value}")
    print("finals:", out["finals_text"])
    print(f"median WER finals {statistics.median(out['wer_finals']):.3f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2))


def stress(args: argparse.Namespace) -> None:
    from bench.transcription_stress import evaluate
    from callstream.transcription.models import resolve_model
    from callstream.transcription.vad import VadOptions
    from callstream.transcription.whisper import WhisperEngine

    os.sched_setaffinity(0, {args.core})
    data_dir = Path.home() / ".cache/callstream-bench"

    def load(spec: str) -> WhisperEngine:
        return WhisperEngine(resolve_model(spec, data_dir=data_dir), name=spec,
                             vad=VadOptions(min_silence_ms=args.end_silence_ms))

    engine = load(args.model)
    final = load(args.final_model) if args.final_model else None
    out = evaluate(engine, final_engine=final, synthetic=args.synthetic, human=args.human,
                   offline=not args.no_offline,
                   tempos=tuple(float(t) for t in args.tempos.split(",")))
    out["model"], out["final_model"] = args.model, args.final_model
    out["end_silence_ms"] = args.end_silence_ms
    out["machine"] = (f"{platform.machine()} {os.cpu_count()} vCPU, Python "
                      f"{platform.python_version()}")
    print(f"{'pooled':10} " + " ".join(f"{k}" for k in next(iter(out["pooled"].values()))))
    for group, figures in out["pooled"].items():
        print(f"{group:10} " + " ".join(str(v) for v in figures.values()))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
