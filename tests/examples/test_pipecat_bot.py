"""examples/pipecat_bot: Pipecat's Telnyx serializer and FastAPI transport on a real
callstream stream: its greeting and its echo reach a real caller; it decodes the caller,
barges in with ``clear``, and its automatic hang-up reaches callstream after ``stop``."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.audio import cache_dir, read_wav, tone, write_wav
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


def tone_windows(pcm: bytes, freq: float, window: float = 0.1) -> list[bool]:
    """Per ``window`` seconds of ``pcm``: does ``freq`` hold most of its energy?"""
    x = samples(pcm).astype(np.float64)
    step = int(window * 8000)
    out = []
    for at in range(0, len(x) - step + 1, step):
        part = x[at:at + step]
        spectrum = np.abs(np.fft.rfft(part * np.hanning(step))) ** 2
        freqs = np.fft.rfftfreq(step, 1 / 8000)
        band = spectrum[np.abs(freqs - freq) <= 50].sum()
        out.append(bool(part.std() > 300 and band > 0.5 * spectrum.sum()))
    return out


def test_pipecat_bot_barges_in_then_hangs_up_when_its_stream_stops(tmp_path: Path) -> None:
    """The bot's real transport and serializer: it decodes the caller (a 440 Hz tone), its
    1 kHz greeting is heard until its InterruptionFrame sends ``clear``, and when the
    application stops the stream the bot ends its pipeline and Pipecat's automatic
    hang-up reaches callstream: the socket is still open after ``stop``."""
    write_wav(tmp_path / "greeting.wav", tone(1000, 8.0), 8000)
    write_wav(tmp_path / "caller.wav", tone(440, 20.0), 8000)
    recording = tmp_path / "heard.wav"

    with make_rig(tmp_path / "data", (38900, 38999),
                  {"CALLSTREAM_JITTER_BUFFER_MS": JITTER_BUFFER_MS}) as rig, \
         example(*python_example("pipecat_bot/bot.py", "--port", "0", "--greeting",
                                 str(tmp_path / "greeting.wav"), "--interrupt-after", "2",
                                 "--api-url", rig.server.base_url,
                                 "--api-key", rig.server.api_key,
                                 python=pipecat_python())) as proc:
        url = proc.wait_for(r"listening on (ws://\S+)", timeout=60).group(1)
        caller = start_caller(f"sip:pipecat@{rig.sip_target}", "--play",
                              str(tmp_path / "caller.wav"), "--record", str(recording),
                              "--codec", "PCMU")
        try:
            ccid = incoming(rig, "pipecat")
            rig.sdk.calls.actions.answer(
                ccid, stream_url=url, stream_track="inbound_track", stream_codec="PCMU",
                stream_bidirectional_mode="rtp", stream_bidirectional_codec="PCMU")
            proc.wait_for(r"interrupted the greeting after 2 s", timeout=30)
            time.sleep(1.5)  # silence after the clear, on the recording
            rig.sdk.calls.actions.stop_streaming(ccid)
            hung_up = proc.wait_for(rf"call {ccid}: hung up through \S+: HTTP (\d+)",
                                    timeout=20)
            code, summary, err = caller.finish(30)
        finally:
            caller.kill()
        hangup = rig.hooks.wait_event("call.hangup", ccid)

    printed = proc.output()
    assert hung_up.group(1) == "200", printed
    assert code == 0 and summary["status"] == "answered", err
    assert summary["ended_by"] == "remote"  # callstream hung up: the bot's request
    assert hangup.payload["hangup_cause"] == "normal_clearing"
    heard = re.search(rf"call {ccid}: heard the caller: ([\d.]+) s decoded, loudest at "
                      rf"(\d+) Hz", printed)
    assert heard, printed
    assert float(heard.group(1)) >= 2.0 and abs(int(heard.group(2)) - 440) <= 10

    played, _ = read_wav(recording)
    windows = tone_windows(played, 1000)
    first = windows.index(True)
    last = len(windows) - 1 - windows[::-1].index(True)
    tone_seconds = sum(windows) * 0.1
    print(f"\n[measured] pipecat bot: 1 kHz greeting heard for {tone_seconds:.1f} s of 8 s "
          f"(interrupted at 2 s), from {first * 0.1:.1f} to {last * 0.1:.1f} s of the "
          f"recording; bot's hang-up HTTP {hung_up.group(1)}")
    assert 1.0 <= tone_seconds <= 3.5  # heard, then silenced by clear long before its end
    assert sum(windows[first:last + 1]) >= 0.9 * (last - first + 1)  # one run, then none
