"""The browser leg's audio conversions: aiortc's 48 kHz frames <-> the hub's 16 kHz PCM.

libswresample (through PyAV, which aiortc already uses for Opus) does the work, not the
hub's :class:`~callstream.media.codecs.resample.Resampler`: on this path it holds back
about 1 ms where soxr's streaming mode holds back 12-15 ms per hop, and costs ~15 µs a
20 ms frame against 25-50 µs (bench/webrtc.py, docs/webrtc.md "Figures"). Opus is
band-limited already, so swr's default filter is plenty.

* :class:`FromBrowser` takes a decoded Opus frame (48 kHz, stereo) to mono 16 kHz in one
  step (downmix and rate together);
* :class:`ToBrowser` takes the hub's 20 ms frames to exactly 20 ms at 48 kHz per call: the
  first output is padded with the ~1 ms swr holds back, so every pull of aiortc's sender
  gets a whole frame and its encoder never waits for a second one.
"""

from __future__ import annotations

import fractions

import av

__all__ = ["HUB_RATE", "OPUS_RATE", "FromBrowser", "ToBrowser"]

#: The leg's rate in the hub (L16/16 kHz: wideband, and a byte swap from RTP).
HUB_RATE = 16000
#: Opus's rate, which aiortc decodes to and encodes from.
OPUS_RATE = 48000
_HUB_TIME_BASE = fractions.Fraction(1, HUB_RATE)


def _pcm(frames: list[av.AudioFrame]) -> bytes:
    # Packed mono s16: plane 0 may be padded past the samples.
    return b"".join(bytes(f.planes[0])[: 2 * f.samples] for f in frames)


class FromBrowser:
    """Decoded browser audio (any s16 layout, 48 kHz) to mono 16 kHz PCM, in order."""

    __slots__ = ("_resampler",)

    def __init__(self) -> None:
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=HUB_RATE)

    def process(self, frame: av.AudioFrame) -> bytes:
        """The 16 kHz samples ready so far (steady state: as long as ``frame``)."""
        return _pcm(self._resampler.resample(frame))


class ToBrowser:
    """The hub's 16 kHz PCM to 48 kHz, exactly as long as each chunk fed."""

    __slots__ = ("_pending", "_pts", "_resampler")

    def __init__(self) -> None:
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=OPUS_RATE)
        self._pts = 0
        self._pending = bytearray()

    def process(self, pcm: bytes) -> bytes:
        """One hub chunk (a whole number of samples) as 48 kHz PCM of the same duration."""
        samples = len(pcm) // 2
        frame = av.AudioFrame(format="s16", layout="mono", samples=samples)
        frame.planes[0].update(pcm)
        frame.sample_rate = HUB_RATE
        frame.time_base = _HUB_TIME_BASE
        frame.pts = self._pts
        self._pts += samples
        self._pending += _pcm(self._resampler.resample(frame))
        want = 2 * samples * (OPUS_RATE // HUB_RATE)
        if len(self._pending) < want:
            # The first call (swr's ~1 ms of filter): silence in front, once.
            self._pending[:0] = bytes(want - len(self._pending))
        out = bytes(self._pending[:want])
        del self._pending[:want]
        return out

