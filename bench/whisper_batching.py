"""What batching several tracks' interims into one CTranslate2 call would save.

An interim is an encoder pass over the utterance so far plus 3 s of silence, then a
greedy decode. Each decoder step of tiny.en costs ~4 ms on one core whatever the
batch, so B tracks' decodes in one ``generate`` call cost far less than B calls. This
measures it on real speech: the first 4 s of the first corpus clips (phone band,
through PCMU, 16 kHz), each as one track's interim, encoded and decoded alone and then
B at a time. Process CPU on one thread (``cpu_threads=1``, as the server runs it).

Usage::

    python bench/whisper_batching.py --json bench/results/whisper-batching.json

Not part of the test suite. The server batches interims this way
(``callstream/transcription/batching.py``); ``bench/transcription_tracks.py`` measures it
with tracks at once.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soxr

from callstream.transcription.models import resolve_model
from callstream.transcription.whisper import INTERIM_PAD_S, WhisperEngine
from tests.corpus import corpus, phone_band
from tests.transcription.test_whisper import over_pcmu

SPEECH_S = 4.0
REPEATS = 5


def cpu_ms(fn: Callable[[], Any]) -> float:
    fn()  # warm
    started = time.process_time()
    for _ in range(REPEATS):
        fn()
    return (time.process_time() - started) / REPEATS * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--batches", default="1,2,4,8")
    parser.add_argument("--core", type=int, default=1, help="CPU to pin to")
    parser.add_argument("--json")
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.core})
    data_dir = Path.home() / ".cache/callstream-bench"
    engine = WhisperEngine(resolve_model(args.model, data_dir=data_dir), name=args.model)
    model = engine.model
    sizes = [int(b) for b in args.batches.split(",")]
    window = int((SPEECH_S + INTERIM_PAD_S) * 16000)
    features = []
    for clip in list(corpus())[: max(sizes)]:
        pcm = over_pcmu(phone_band(clip))
        audio = soxr.resample(np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0,
                              8000, 16000).astype(np.float32)[: int(SPEECH_S * 16000)]
        padded = np.zeros(window, dtype=np.float32)
        padded[: len(audio)] = audio
        features.append(model.feature_extractor(padded, padding=0)[:, : window // 160])
    prompt = list(engine.tokenizer(None).sot_sequence)

    def generate(encoded: Any, n: int) -> Any:
        return model.model.generate(encoded, [prompt] * n, beam_size=1, max_length=80,
                                    suppress_blank=True, suppress_tokens=engine.suppress_tokens,
                                    max_initial_timestamp_index=50)

    rows = []
    for size in sizes:
        batch = np.stack(features[:size])
        encode_ms = cpu_ms(lambda batch=batch: model.encode(batch))
        encoded = model.encode(batch)
        decode_ms = cpu_ms(lambda encoded=encoded, size=size: generate(encoded, size))
        rows.append({"tracks_per_call": size, "encode_ms_per_track": round(encode_ms / size, 1),
                     "decode_ms_per_track": round(decode_ms / size, 1),
                     "interim_ms_per_track": round((encode_ms + decode_ms) / size, 1)})
    one = rows[0]["interim_ms_per_track"]
    print(f"{'tracks per call':>16} {'encode ms/track':>16} {'decode ms/track':>16} "
          f"{'interim ms/track':>17} {'vs 1':>6}")
    for row in rows:
        print(f"{row['tracks_per_call']:>16} {row['encode_ms_per_track']:>16} "
              f"{row['decode_ms_per_track']:>16} {row['interim_ms_per_track']:>17} "
              f"{row['interim_ms_per_track'] / one:>6.2f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"model": args.model, "speech_s": SPEECH_S,
                                               "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
