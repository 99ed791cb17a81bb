"""The bundled recordings: present, in the format the docs promise, and small."""

from __future__ import annotations

import wave

from callstream.demo import audio

MAX_TOTAL_BYTES = 200_000


def test_bundled_wavs_are_small_8khz_mono_16_bit() -> None:
    total = 0
    for path, seconds in ((audio.GREETING_WAV, (4.0, 8.0)), (audio.CALLER_WAV, (3.0, 7.0))):
        with wave.open(str(path)) as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (
                audio.SAMPLE_RATE, 1, 2)
            assert seconds[0] <= w.getnframes() / w.getframerate() <= seconds[1]
        total += path.stat().st_size
    assert total < MAX_TOTAL_BYTES
    assert audio.GREETING_TEXT and audio.CALLER_TEXT
