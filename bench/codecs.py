"""CPU cost of each stream codec: µs per 20 ms frame to encode and to decode.

Every codec callstream streams (PCMU, PCMA, G.722, L16, and OPUS at 8, 16, 24 and
48 kHz) encodes and decodes the same real speech (the test corpus's clip, at the
codec's rate), one 20 ms frame at a time, as the stream path does. One fresh encoder
and decoder per round; the best of ``--rounds`` rounds is reported (the least disturbed
by other load on the machine), with the median beside it. Opus also reports its average
packet size (it is variable-rate).

Usage::

    python bench/codecs.py [--seconds 10] [--rounds 5] [--json out.json]

Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from callstream.media.codecs import G722, L16, PCMA, PCMU, CodecInfo, opus_codec
from tests.audio import speech

CODECS: list[tuple[str, CodecInfo]] = [
    ("PCMU", PCMU), ("PCMA", PCMA), ("G722", G722), ("L16", L16),
    *((f"OPUS/{rate}", opus_codec(rate)) for rate in (8000, 16000, 24000, 48000)),
]


def clip(rate: int, seconds: float) -> list[bytes]:
    pcm = speech("two_cities", rate)
    step = 2 * rate // 50
    count = int(seconds * 50)
    pcm = (pcm * (1 + count * step // len(pcm)))[: count * step]
    return [pcm[i:i + step] for i in range(0, len(pcm), step)]


def measure(codec: CodecInfo, frames: list[bytes]) -> tuple[float, float, float]:
    """(µs encode, µs decode, bytes per packet) for one pass over ``frames``."""
    encoder, decoder = codec.new_encoder(), codec.new_decoder()
    start = time.perf_counter()
    packets = [encoder.encode(f) for f in frames]
    middle = time.perf_counter()
    for p in packets:
        decoder.decode(p)
    end = time.perf_counter()
    n = len(frames)
    return ((middle - start) / n * 1e6, (end - middle) / n * 1e6,
            sum(map(len, packets)) / n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="audio per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    results: list[dict[str, Any]] = []
    print(f"{'codec':<11} {'encode µs':>10} {'decode µs':>10} {'both µs':>8} "
          f"{'(median)':>9} {'bytes/20ms':>11}")
    for name, codec in CODECS:
        frames = clip(codec.sample_rate, args.seconds)
        runs = [measure(codec, frames) for _ in range(args.rounds)]
        best = min(runs, key=lambda r: r[0] + r[1])
        median = statistics.median(r[0] + r[1] for r in runs)
        row = {"codec": name, "sample_rate": codec.sample_rate, "encode_us": round(best[0], 1),
               "decode_us": round(best[1], 1), "total_us": round(best[0] + best[1], 1),
               "total_us_median": round(median, 1), "bytes_per_frame": round(best[2], 1)}
        results.append(row)
        print(f"{name:<11} {row['encode_us']:>10} {row['decode_us']:>10} "
              f"{row['total_us']:>8} {row['total_us_median']:>9} {row['bytes_per_frame']:>11}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"seconds": args.seconds, "rounds": args.rounds,
                                         "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
