"""The browser leg's audio conversions: aiortc's 48 kHz frames <-> the hub's 16 kHz PCM.

Both directions use the hub's own :class:`~callstream.media.codecs.resample.Resampler`
(libswresample, 1 ms of delay at these rates): :class:`FromBrowser` feeds it the decoded
Opus frame's interleaved samples, downmix and rate in one step; the way back is a plain
``Resampler(HUB_RATE, OPUS_RATE)``. Primed resamplers give exactly 20 ms for each 20 ms
from the first frame: the browser's audio reaches the hub in the turn of the event loop
that decoded it (a converter that held back its filter's ~1 ms left 19 ms of every frame
waiting for the next one), and every pull of aiortc's sender gets a whole frame.
"""

from __future__ import annotations

import av

from callstream.media.codecs.resample import MAX_CHANNELS, Resampler
from callstream.media.exceptions import CodecError

__all__ = ["HUB_RATE", "OPUS_RATE", "FromBrowser"]

#: The leg's rate in the hub (L16/16 kHz: wideband, and a byte swap from RTP).
HUB_RATE = 16000
#: Opus's rate, which aiortc decodes to and encodes from.
OPUS_RATE = 48000


class FromBrowser:
    """Decoded browser audio (aiortc's: packed s16, 48 kHz) to mono 16 kHz PCM, in order."""

    __slots__ = ("_resampler",)

    def __init__(self) -> None:
        self._resampler: Resampler | None = None

    def process(self, frame: av.AudioFrame) -> bytes:
        """The 16 kHz samples of ``frame`` (20 ms in, 20 ms out).

        Raises:
            CodecError: not packed s16 at 48 kHz with 1 or 2 channels (aiortc's decoder
                gives stereo s16), or the channel count changed mid-stream.
        """
        channels = len(frame.layout.channels)
        if (frame.format.name != "s16" or frame.sample_rate != OPUS_RATE
                or channels > MAX_CHANNELS):
            raise CodecError(f"decoded audio is {frame.format.name}, {frame.sample_rate} Hz, "
                             f"{channels} channels; expected s16 at {OPUS_RATE} Hz")
        resampler = self._resampler
        if resampler is None:
            resampler = self._resampler = Resampler(OPUS_RATE, HUB_RATE, channels=channels)
        elif resampler.channels != channels:
            raise CodecError(f"decoded audio went from {resampler.channels} to "
                             f"{channels} channels")
        # Packed s16: plane 0 holds the interleaved samples, and may be padded past them.
        return resampler.process(bytes(frame.planes[0])[: 2 * channels * frame.samples])
