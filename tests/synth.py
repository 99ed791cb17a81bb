"""Synthetic speech for the transcription tests and the stress bench: espeak-ng.

espeak-ng (Debian package ``espeak-ng``) speaks any text in many voices and at any
rate, so the tests can have speech whose length and wording they choose (an utterance
longer than Whisper's encoder window, numbers, names, addresses). Its output is the
same on every run for the same text, voice and rate.
"""

from __future__ import annotations

import shutil
import subprocess

from tests.audio import read_wav, resample

ESPEAK = shutil.which("espeak-ng")


def espeak(text: str, *, voice: str = "en-us", wpm: int = 160, pitch: int = 50,
           gap_ms: int = 0, rate: int = 8000) -> bytes:
    """``text`` spoken by espeak-ng as s16le mono at ``rate``.

    Args:
        voice: an espeak-ng voice, optionally with a variant (``"en-us+f3"``).
        wpm: words a minute.
        pitch: 0..99.
        gap_ms: extra pause between words (espeak's ``-g``, in 10 ms units rounded).
    """
    assert ESPEAK is not None, "espeak-ng is missing: apt-get install espeak-ng (.ci/run does)"
    proc = subprocess.run(
        [ESPEAK, "-v", voice, "-s", str(wpm), "-p", str(pitch),
         "-g", str(max(0, round(gap_ms / 10))), "--stdout", text],
        check=True, capture_output=True, timeout=60,
    )
    pcm, source_rate = read_wav(proc.stdout)
    return resample(pcm, source_rate, rate)
