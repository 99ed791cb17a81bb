"""Whole-file MP3 decoding for ``mp3``-mode bidirectional streams (spec §5.4).

In ``mp3`` mode every ``media`` payload is a complete MP3 file, so a
whole-buffer decoder fits: ``miniaudio`` (dr_mp3, a self-contained wheel;
≈3.7 µs per 20 ms of audio, research/telephony.md). Stereo is mixed down to
mono. Files at a rate our resampler does not take (MPEG-2.5's 11025/12000 Hz)
are converted to 16 kHz by miniaudio itself.
"""

from __future__ import annotations

import miniaudio  # type: ignore[import-untyped]
import numpy as np

from callstream.media.codecs.resample import SUPPORTED_RATES

__all__ = ["FALLBACK_RATE", "Mp3Error", "decode_mp3"]

FALLBACK_RATE = 16000


class Mp3Error(ValueError):
    """The bytes are not an MP3 file we can decode."""


def decode_mp3(data: bytes) -> tuple[bytes, int]:
    """Decode a whole MP3 file to mono s16le PCM.

    Returns:
        ``(pcm, sample_rate)``; ``sample_rate`` is one :data:`SUPPORTED_RATES` holds.

    Raises:
        Mp3Error: not MP3, or no audio in it.
    """
    try:
        sound = miniaudio.mp3_read_s16(data)
        if sound.sample_rate not in SUPPORTED_RATES:
            sound = miniaudio.decode(
                data,
                output_format=miniaudio.SampleFormat.SIGNED16,
                nchannels=1,
                sample_rate=FALLBACK_RATE,
            )
    except miniaudio.MiniaudioError as exc:
        raise Mp3Error(f"not an MP3 file ({exc})") from None
    if sound.num_frames == 0 or sound.nchannels < 1:
        raise Mp3Error("the MP3 file holds no audio")
    samples = np.frombuffer(sound.samples, dtype="<i2")
    if sound.nchannels > 1:  # mix down; the mean of int16 always fits int16
        samples = samples.reshape(-1, sound.nchannels).mean(axis=1).astype("<i2")
    rate: int = sound.sample_rate
    return samples.tobytes(), rate
