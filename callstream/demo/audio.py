"""The bundled demo recordings and what they say.

Both are 8 kHz mono 16-bit WAV, synthesised for callstream with espeak-ng
(voice ``en-us``; authoring only, not needed at run time): no third-party audio,
so they ship under the project's licence. Whisper tiny.en, the bundled model,
decodes the caller's utterance after a PCMU round trip as
"Hello, I would like to work a table for two people tomorrow evening. Please."
(one substitution in 14 words), and the greeting word for word.

``CALLER_TEXT`` is what the caller recording says; ``GREETING_TEXT`` what the
demo bot greets with.

How they were made (espeak-ng 1.51)::

    espeak-ng -v en-us -s 135 -w greeting.wav "<GREETING_TEXT>"
    espeak-ng -v en-us -s 140 -w caller.wav "<CALLER_TEXT>"

then resampled from 22,050 Hz to 8 kHz (soxr), trimmed to 150 ms of silence at each
end and peak-normalised to 0.7 full scale.
"""

from __future__ import annotations

from pathlib import Path

AUDIO_DIR = Path(__file__).resolve().parent / "audio"

GREETING_WAV = AUDIO_DIR / "greeting.wav"
GREETING_TEXT = "Hello, I am a robot. Please say something, and I will repeat it back to you."

CALLER_WAV = AUDIO_DIR / "caller.wav"
CALLER_TEXT = "Hello, I would like to book a table for two people tomorrow evening, please."

SAMPLE_RATE = 8000  # both files

__all__ = [
    "AUDIO_DIR",
    "CALLER_TEXT",
    "CALLER_WAV",
    "GREETING_TEXT",
    "GREETING_WAV",
    "SAMPLE_RATE",
]
