"""examples/pipecat_bot: Pipecat's Telnyx serializer and FastAPI transport, unchanged, on a
real callstream stream; its greeting and its echo reach a real caller."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.audio import cache_dir, read_wav, write_wav
from tests.e2e.calling import (
    JITTER_BUFFER_MS,
    clip,
    incoming,
    samples,
    start_caller,
    through_codec,
)
from tests.e2e.conftest import make_rig
from tests.examples.procs import EXAMPLES, example, python_example

pytestmark = pytest.mark.slow

#: How alike (normalised cross-correlation, 1 = identical) what the caller heard must be
#: to what Pipecat was given: both pass G.711 twice and Pipecat's resampler once.
MIN_LIKENESS = 0.9


def silence(seconds: float) -> bytes:
    return bytes(2 * int(seconds * 8000))


def likeness(reference: bytes, recording: bytes) -> tuple[float, float]:
    """The best normalised cross-correlation of ``reference`` within ``recording``, and
    where (seconds into the recording)."""
    ref, rec = samples(reference).astype(np.float64), samples(recording).astype(np.float64)
    n = len(ref)
    size = 1 << int(np.ceil(np.log2(len(rec) + n)))
    corr = np.fft.irfft(np.fft.rfft(rec, size) * np.conj(np.fft.rfft(ref, size)), size)[
        : len(rec) - n + 1]
    energy = np.convolve(rec * rec, np.ones(n), "valid")
    ref_energy = float(ref @ ref)
    # Windows far quieter than the reference are not it (and would divide by ~0).
    loud = energy > ref_energy / 100
    score = np.where(loud, corr / np.sqrt(np.maximum(energy, 1.0) * ref_energy), 0.0)
    best = int(np.argmax(score))
    return float(score[best]), best / 8000


def pipecat_python() -> str:
    """The bot's own environment, as its README makes it: Pipecat pins soxr 1.0.x, older than
    callstream needs, so it cannot share the suite's. Built once into the test cache."""
    venv = cache_dir() / "pipecat-venv"
    python = venv / "bin" / "python"
    requirements = EXAMPLES / "pipecat_bot" / "requirements.txt"
    stamp = venv / "requirements.txt"
    if not stamp.exists() or stamp.read_text() != requirements.read_text():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(requirements)],
                       check=True, timeout=900)
        shutil.copyfile(requirements, stamp)
    return str(python)


def test_pipecat_bot_greets_then_echoes(tmp_path: Path) -> None:
    greeting = clip("two_cities", seconds=1.5)
    speech = clip("beckett", seconds=3.0)
    write_wav(tmp_path / "greeting.wav", greeting, 8000)
    write_wav(tmp_path / "caller.wav", silence(3.0) + speech + silence(2.5), 8000)
    recording = tmp_path / "heard.wav"

    with example(*python_example("pipecat_bot/bot.py", "--port", "0", "--greeting",
                                 str(tmp_path / "greeting.wav"), "--echo-delay", "0.5",
                                 python=pipecat_python())) as proc, \
         make_rig(tmp_path / "data", (38800, 38899),
                  {"CALLSTREAM_JITTER_BUFFER_MS": JITTER_BUFFER_MS}) as rig:
        url = proc.wait_for(r"listening on (ws://\S+)", timeout=60).group(1)
        caller = start_caller(f"sip:pipecat@{rig.sip_target}", "--play",
                              str(tmp_path / "caller.wav"), "--record", str(recording),
                              "--codec", "PCMU")
        try:
            ccid = incoming(rig, "pipecat")
            rig.sdk.calls.actions.answer(
                ccid, stream_url=url, stream_track="inbound_track", stream_codec="PCMU",
                stream_bidirectional_mode="rtp", stream_bidirectional_codec="PCMU")
            code, summary, err = caller.finish(60)
        finally:
            caller.kill()
        assert code == 0 and summary["status"] == "answered", err
        proc.wait_for(rf"call {ccid}: stream ended", timeout=20)

    printed = proc.output()
    assert f"call {ccid}: stream " in printed and "PCMU" in printed
    assert "greeting queued (1.5 s)" in printed and "echoing the caller 0.5 s later" in printed
    heard, _ = read_wav(recording)
    greeted, greeted_at = likeness(through_codec(greeting, "PCMU"), heard)
    echoed, echoed_at = likeness(through_codec(speech, "PCMU"), heard)
    print(f"\n[measured] pipecat bot: greeting likeness {greeted:.3f} at {greeted_at:.2f} s, "
          f"echo likeness {echoed:.3f} at {echoed_at:.2f} s of the recording")
    assert greeted >= MIN_LIKENESS and echoed >= MIN_LIKENESS
    assert echoed_at > greeted_at + 1.5  # the echo comes after the whole greeting
