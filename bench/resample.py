"""The streaming resampler: delay, quality and cost, against the soxr mode it replaced.

Two converters, each fed 20 ms chunks from a fresh, primed instance, as the media path
feeds them:

* **swr** — :class:`callstream.media.codecs.resample.Resampler` (libswresample via PyAV);
* **soxr** — soxr's ``ResampleStream`` in variable-rate mode, HQ (callstream's resampler
  before; its fixed-rate mode hands out nothing for ~100 ms at a time).

For each rate pair: *delay* — where an impulse fed mid-stream peaks, in ms;
*tone* — SNR of a 1 kHz tone against the best-fitting sine; *sweep* — SNR of an
exponential sweep from 100 Hz to 45 % of the lower rate against the ideal sweep at the best
fractional delay; *alias* — downsampling: the level of a tone between the two Nyquist
frequencies that comes out (a good filter leaves nothing; int16 then rounds it to 0 and
the figure reads ≤ -120 dB); upsampling: the share of a 0.4 x in-rate tone's output energy
above the input's Nyquist (images); *µs* — per 20 ms chunk, best of ``--rounds``.

Usage::

    python bench/resample.py [--rounds 5] [--json out.json]

Not part of the test suite.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from callstream.media.codecs.resample import Resampler

soxr: Any = importlib.import_module("soxr")  # no type information

PAIRS = [(8000, 16000), (16000, 8000), (16000, 48000), (48000, 16000), (48000, 8000),
         (24000, 16000), (22050, 8000)]
Floats = npt.NDArray[np.float64]
Convert = Callable[[npt.NDArray[np.int16]], npt.NDArray[np.int16]]


def swr(in_rate: int, out_rate: int) -> Convert:
    resampler = Resampler(in_rate, out_rate)
    return lambda chunk: np.frombuffer(resampler.process(chunk.tobytes()), dtype="<i2")


def soxr_hq(in_rate: int, out_rate: int) -> Convert:
    stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality="HQ", vr=True)
    silence = np.zeros(in_rate // 50, dtype="<i2")
    for _ in range(8):  # primed as the old Resampler was: 20 ms in, 20 ms out
        if len(stream.resample_chunk(silence)) == out_rate // 50:
            break
    return lambda chunk: np.asarray(stream.resample_chunk(chunk), dtype="<i2")


CONVERTERS: dict[str, Callable[[int, int], Convert]] = {"swr": swr, "soxr": soxr_hq}


def run(make: Callable[[int, int], Convert], in_rate: int, out_rate: int,
        signal: Floats) -> Floats:
    convert = make(in_rate, out_rate)
    pcm = signal.astype("<i2")
    step = in_rate // 50
    out = [convert(pcm[i:i + step]) for i in range(0, len(pcm) - step + 1, step)]
    return np.concatenate(out).astype(np.float64)


def sweep(rate: int, seconds: float, high: float, delay: float = 0.0) -> Floats:
    t = np.arange(int(rate * seconds)) / rate - delay
    k = np.log(high / 100)
    return 8000.0 * np.sin(2 * np.pi * 100 * seconds / k * (np.exp(t / seconds * k) - 1))


def sine(hz: float, rate: int, amplitude: float = 8000.0) -> Floats:
    return amplitude * np.sin(2 * np.pi * hz * np.arange(rate) / rate)


def db(ratio: float) -> float:
    return float(10 * np.log10(max(ratio, 1e-12)))


def measure(make: Callable[[int, int], Convert], in_rate: int, out_rate: int,
            rounds: int) -> dict[str, float]:
    impulse = np.zeros(in_rate // 2)
    at = 5 * (in_rate // 50) + 7
    impulse[at] = 20000
    out = run(make, in_rate, out_rate, impulse)
    delay = float(np.argmax(np.abs(out))) - at * out_rate / in_rate

    y = run(make, in_rate, out_rate, sine(1000, in_rate))[out_rate // 10:]
    t = np.arange(len(y)) / out_rate
    basis = np.column_stack([np.sin(2 * np.pi * 1000 * t), np.cos(2 * np.pi * 1000 * t)])
    fitted = basis @ np.linalg.lstsq(basis, y, rcond=None)[0]
    tone = db(np.sum(fitted**2) / np.sum((y - fitted) ** 2))

    high = 0.45 * min(in_rate, out_rate)
    y = run(make, in_rate, out_rate, sweep(in_rate, 1.0, high))
    middle = slice(out_rate // 10, len(y) - out_rate // 10)
    best = -np.inf
    for lag in np.arange(round(delay) - 1, round(delay) + 1, 0.01):
        ideal = sweep(out_rate, 1.0, high, lag / out_rate)[middle]
        best = max(best, db(np.sum(ideal**2) / np.sum((y[middle] - ideal) ** 2)))

    if out_rate < in_rate:
        hz = (out_rate / 2 + min(in_rate / 2, out_rate)) / 2
        y = run(make, in_rate, out_rate, sine(hz, in_rate, 10000))[out_rate // 10:]
        alias = db(float(np.mean(y**2)) / (10000**2 / 2))
    else:
        y = run(make, in_rate, out_rate, sine(0.4 * in_rate, in_rate, 10000))[out_rate // 10:]
        spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y)))) ** 2
        hz_axis = np.fft.rfftfreq(len(y), 1 / out_rate)
        alias = db(spectrum[hz_axis > in_rate / 2].sum() / spectrum.sum())

    chunk = (1000 * np.random.default_rng(1).standard_normal(in_rate // 50)).astype("<i2")
    times = []
    for _ in range(rounds):
        convert = make(in_rate, out_rate)
        start = time.perf_counter()
        for _ in range(1000):
            convert(chunk)
        times.append((time.perf_counter() - start) / 1000 * 1e6)
    return {"delay_ms": delay / out_rate * 1000, "tone_snr_db": tone, "sweep_snr_db": best,
            "alias_db": alias, "us_per_frame": min(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json")
    args = parser.parse_args()
    results: list[dict[str, Any]] = []
    print(f"{'converter':<9} {'pair':>13} {'delay ms':>9} {'tone dB':>8} {'sweep dB':>9} "
          f"{'alias dB':>9} {'µs/20 ms':>9}")
    for name, make in CONVERTERS.items():
        for in_rate, out_rate in PAIRS:
            row = measure(make, in_rate, out_rate, args.rounds)
            results.append({"converter": name, "in_rate": in_rate, "out_rate": out_rate, **row})
            print(f"{name:<9} {in_rate:>6}>{out_rate:<6} {row['delay_ms']:>9.2f} "
                  f"{row['tone_snr_db']:>8.1f} {row['sweep_snr_db']:>9.1f} "
                  f"{max(row['alias_db'], -120):>9.1f} {row['us_per_frame']:>9.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
