"""Streaming sample-rate conversion between the rates calls, streams and browsers use.

libswresample (FFmpeg's, through PyAV, which the Opus codecs already need) does the
work: a polyphase filter of 32 taps a phase, cut at 97 % of the lower Nyquist. It holds
back only half its filter, 1-2 ms (soxr's streaming mode, used before, held back
10-30 ms a hop), passes a 1 kHz tone at 81-83 dB SNR and a sweep to 45 % of the lower
rate at ≈ 80 dB, and a tone that has no place at the lower rate comes out below one
LSB; ≈ 15-19 µs a 20 ms chunk (``python bench/resample.py``; docs/benchmarks.md).

A new :class:`Resampler` is primed with 20 ms of silence, so a frame-paced caller gets
exactly 20 ms out for each 20 ms in from the first call (what the filter still holds
of the silence comes out in front of the audio): the price is that same 1-2 ms.
"""

from __future__ import annotations

import fractions
from typing import cast

import av
import av.filter

from callstream.media.exceptions import CodecError

__all__ = ["MAX_CHANNELS", "SUPPORTED_RATES", "Resampler"]

SUPPORTED_RATES = frozenset({8000, 16000, 22050, 24000, 32000, 44100, 48000})
#: Interleaved input channels :class:`Resampler` mixes down (a browser's stereo Opus).
MAX_CHANNELS = 2
# 20 ms at every supported rate is a whole number of samples.
_CHUNKS_PER_SECOND = 50
_LAYOUTS = {1: "mono", 2: "stereo"}


class Resampler:
    """Converts a stream of PCM chunks from ``in_rate`` to mono ``out_rate``.

    Stateful: feed one direction of one stream, in order. ``channels`` is the input's
    (interleaved int16); the output is mono, the channels averaged.

    Raises:
        CodecError: a rate is not in :data:`SUPPORTED_RATES`, or ``channels`` is not
            1..:data:`MAX_CHANNELS`.
    """

    __slots__ = ("_frame_bytes", "_pts", "_swr", "_time_base", "channels", "in_rate",
                 "out_rate")

    def __init__(self, in_rate: int, out_rate: int, *, channels: int = 1) -> None:
        for rate in (in_rate, out_rate):
            if rate not in SUPPORTED_RATES:
                raise CodecError(f"sample rate {rate} Hz is not supported")
        if channels not in _LAYOUTS:
            raise CodecError(f"{channels} channels: a resampler takes 1 to {MAX_CHANNELS}")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.channels = channels
        self._frame_bytes = 2 * channels  # one sample of every channel
        self._pts = 0
        self._time_base = fractions.Fraction(1, in_rate)
        self._swr: av.filter.Graph | None = None
        if in_rate != out_rate or channels != 1:
            self._swr = _graph(in_rate, out_rate, channels)
            self.process(bytes(self._frame_bytes * (in_rate // _CHUNKS_PER_SECOND)))

    def process(self, pcm: bytes) -> bytes:
        """Convert one chunk (int16 little-endian); returns the samples ready so far.

        Raises:
            CodecError: ``pcm`` is not a whole number of samples (of every channel).
        """
        if len(pcm) % self._frame_bytes:
            raise CodecError(f"PCM of {len(pcm)} bytes is not a whole number of "
                             f"{self.channels}-channel 16-bit samples")
        swr = self._swr
        if swr is None:
            return pcm
        if not pcm:
            return b""
        samples = len(pcm) // self._frame_bytes
        frame = av.AudioFrame(format="s16", layout=_LAYOUTS[self.channels], samples=samples)
        frame.planes[0].update(pcm)
        frame.sample_rate = self.in_rate
        frame.time_base = self._time_base
        frame.pts = self._pts
        self._pts += samples
        swr.push(frame)
        out: list[bytes] = []
        while True:
            try:
                done = cast(av.AudioFrame, swr.pull())  # an audio graph's
            except (av.BlockingIOError, av.EOFError):
                break
            # Packed mono s16: plane 0 may be padded past the samples.
            out.append(bytes(done.planes[0])[: 2 * done.samples])
        return b"".join(out)


def _graph(in_rate: int, out_rate: int, channels: int) -> av.filter.Graph:
    """The filter graph PyAV's ``AudioResampler`` builds (abuffer, aformat, whose input
    FFmpeg converts with libswresample, abuffersink), but on this thread alone: FFmpeg's
    default starts one idle worker thread per CPU for every graph, so a worker with
    hundreds of resamplers held hundreds of threads (bench/bridge_hop.py found it)."""
    graph = av.filter.Graph()
    graph.threads = 1
    source = graph.add("abuffer", sample_rate=str(in_rate), sample_fmt="s16",
                       channel_layout=_LAYOUTS[channels], time_base=f"1/{in_rate}")
    convert = graph.add("aformat", sample_rates=str(out_rate), sample_fmts="s16",
                        channel_layouts="mono")
    sink = graph.add("abuffersink")
    source.link_to(convert)
    convert.link_to(sink)
    graph.configure()
    return graph
