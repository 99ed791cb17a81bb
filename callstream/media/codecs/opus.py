"""Opus (RFC 6716) for media streams, through libopus as PyAV's wheels bundle it.

Telnyx's ``stream_codec`` / ``stream_bidirectional_codec`` ``OPUS`` carries **one
Opus packet per ``media`` message**: 20 ms of mono audio at the stream's rate
(``start.media_format.sample_rate``), no RTP header, no Ogg page — what Pipecat's
Telnyx serializer with Opus support sends and expects (pipecat-ai/pipecat PR #3602,
libopus ``VOIP`` application, 20 ms frames). Opus is never a call (RTP) codec here:
SDP does not offer it, so the registry in :mod:`callstream.media.codecs` keeps it
apart from the RTP codecs.

Why PyAV: its manylinux wheels bundle FFmpeg with libopus (no system library to
install), it is already a dependency of faster-whisper, and it is maintained.
``opuslib`` needs Debian's ``libopus0`` and has had no release since 2018.

Two quirks of FFmpeg's libopus wrapper shape this module:

* its **decoder always gives 48 kHz** (``libopusdec.c`` sets the rate), so a decoder
  for a lower rate resamples with :class:`~callstream.media.codecs.resample.Resampler`
  (libswresample), which costs ~1 ms of delay and ~17 µs a frame;
* an **empty packet** would mean "end of stream" to FFmpeg and end the decoder, so an
  empty payload is answered with no audio and never reaches it (RFC 7587 §4.2 lets a
  receiver treat a zero-length payload as lost);
* PyAV's public ``encode()`` passes every frame through an FFmpeg filter graph (to cut
  frames to the encoder's frame size), and that graph starts one thread per core for
  each encoder: 2 per stream here, 64 on a 64-core host. Our frames already have
  exactly the encoder's format and size, so :class:`OpusEncoder` hands them to the codec
  with ``_send_frame_and_recv``, the step ``encode()`` ends with; PyAV is pinned and
  ``tests/media/test_opus.py`` checks that no thread appears.

A packet is checked against RFC 6716 §3.1-3.2 (:func:`packet_samples`) before libopus
sees it, so the common malformations get a precise error; libopus rejects the rest.
"""

from __future__ import annotations

import importlib
from fractions import Fraction
from functools import cache
from typing import Any

import numpy as np

from callstream.media.codecs.base import Decoder, Encoder
from callstream.media.codecs.resample import Resampler
from callstream.media.exceptions import CodecError, OpusPacketError

__all__ = [
    "MAX_PACKET_BYTES",
    "OPUS_BITRATES",
    "OPUS_SAMPLE_RATES",
    "OpusDecoder",
    "OpusEncoder",
    "packet_samples",
]

#: The stream rates Opus codes natively (its 12 kHz is no stream rate; 22050 is no Opus rate).
OPUS_SAMPLE_RATES = (8000, 16000, 24000, 48000)
#: Encoder bit rate per rate: a step above the Opus project's guidance for speech
#: (narrowband 8-12, wideband 16-20, fullband 28-40 kbit/s), since a stream feeds
#: speech recognisers, which gain from the headroom; the top of it at 48 kHz.
OPUS_BITRATES = {8000: 16000, 16000: 24000, 24000: 32000, 48000: 40000}
#: Largest packet accepted from a consumer. libopus's own documentation sizes packet
#: buffers at 4000 bytes ("the recommended size"); one 20 ms frame at our rates is
#: under 200. Anything longer is refused before decoding.
MAX_PACKET_BYTES = 4000
#: Opus's clock: durations in RFC 6716 are counted in 48 kHz samples.
OPUS_CLOCK = 48000
#: A packet lasts at most 120 ms (RFC 6716 §3.2.5: "M MUST NOT be zero, and the audio
#: duration contained within a packet MUST NOT exceed 120 ms").
MAX_PACKET_SAMPLES = OPUS_CLOCK * 120 // 1000
FRAME_MS = 20

# RFC 6716 §3.1 Table 2: frame size per configuration number, in 48 kHz samples.
_SILK_SIZES = (480, 960, 1920, 2880)  # configs 0-11: 10, 20, 40, 60 ms
_HYBRID_SIZES = (480, 960)  # configs 12-15: 10, 20 ms
_CELT_SIZES = (120, 240, 480, 960)  # configs 16-31: 2.5, 5, 10, 20 ms


def packet_samples(packet: bytes) -> int:
    """The duration of an Opus packet in 48 kHz samples, checking its framing.

    Checks the TOC byte and frame count (RFC 6716 §3.1, §3.2: requirements R1, R3,
    R5-R7 as far as they can be seen without the frame lengths); libopus checks the rest.

    Raises:
        OpusPacketError: the packet is empty, too long, or its framing is invalid.
    """
    if not packet:
        raise OpusPacketError("an Opus packet has at least one byte (its TOC)")
    if len(packet) > MAX_PACKET_BYTES:
        raise OpusPacketError(
            f"an Opus packet is at most {MAX_PACKET_BYTES} bytes here; this one is {len(packet)}")
    toc = packet[0]
    config, code = toc >> 3, toc & 0x3
    if config < 12:
        size = _SILK_SIZES[config % 4]
    elif config < 16:
        size = _HYBRID_SIZES[config % 2]
    else:
        size = _CELT_SIZES[config % 4]
    if code == 0:
        count = 1
    elif code == 1:
        if (len(packet) - 1) % 2:
            raise OpusPacketError(
                "an Opus code 1 packet holds two frames of equal size: its length after "
                f"the TOC must be even, not {len(packet) - 1} (RFC 6716 §3.2.2, R3)")
        count = 2
    elif code == 2:
        if len(packet) < 2:
            raise OpusPacketError("an Opus code 2 packet needs a frame length byte "
                                  "after its TOC (RFC 6716 §3.2.3, R4)")
        count = 2
    else:
        if len(packet) < 2:
            raise OpusPacketError("an Opus code 3 packet needs a frame count byte "
                                  "after its TOC (RFC 6716 §3.2.5, R6)")
        count = packet[1] & 0x3F
        if count == 0:
            raise OpusPacketError("an Opus code 3 packet has a frame count of 0 "
                                  "(RFC 6716 §3.2.5, R5)")
    samples = count * size
    if samples > MAX_PACKET_SAMPLES:
        raise OpusPacketError(
            f"an Opus packet lasts at most 120 ms; this one has {count} frames of "
            f"{size * 1000 / OPUS_CLOCK:g} ms (RFC 6716 §3.2.5, R5)")
    return samples


@cache
def _pyav() -> Any:
    # Imported on first use: PyAV loads all of FFmpeg (measured 120-190 ms at import),
    # which a server that never streams Opus should not pay for at start-up.
    return importlib.import_module("av")


def _check_rate(sample_rate: int) -> None:
    if sample_rate not in OPUS_SAMPLE_RATES:
        raise CodecError(
            f"Opus streams run at {', '.join(map(str, OPUS_SAMPLE_RATES))} Hz, "
            f"not {sample_rate}")


class OpusEncoder(Encoder):
    """20 ms of PCM at ``sample_rate`` to one Opus packet (stateful, mono, VoIP mode).

    Raises:
        CodecError: ``sample_rate`` is not one of :data:`OPUS_SAMPLE_RATES`.
    """

    __slots__ = ("_context", "_frame_bytes", "_pts", "sample_rate")

    def __init__(self, sample_rate: int) -> None:
        _check_rate(sample_rate)
        self.sample_rate = sample_rate
        self._frame_bytes = 2 * sample_rate * FRAME_MS // 1000
        context: Any = _pyav().CodecContext.create("libopus", "w")
        context.sample_rate = sample_rate
        context.layout = "mono"
        context.format = "s16"
        context.bit_rate = OPUS_BITRATES[sample_rate]
        context.time_base = Fraction(1, sample_rate)
        context.options = {"application": "voip", "frame_duration": str(FRAME_MS)}
        context.thread_count = 1  # no codec threads (design rule 7)
        context.open()
        self._context = context
        self._pts = 0

    def encode(self, pcm: bytes) -> bytes:
        """Encode exactly one 20 ms frame.

        Raises:
            CodecError: ``pcm`` is not 20 ms at the encoder's rate (Opus packets have
                fixed durations; the stream path always feeds whole frames).
        """
        if len(pcm) != self._frame_bytes:
            raise CodecError(
                f"the Opus encoder takes 20 ms frames ({self._frame_bytes} bytes of PCM at "
                f"{self.sample_rate} Hz), not {len(pcm)} bytes")
        samples = np.frombuffer(pcm, dtype="<i2").reshape(1, -1)
        frame = _pyav().AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = self.sample_rate
        frame.pts = self._pts
        self._pts += samples.shape[1]
        packets = list(self._context._send_frame_and_recv(frame))  # no filter graph: above
        if len(packets) != 1:  # libopus codes each 20 ms frame at once, no look-ahead queue
            raise CodecError(f"libopus returned {len(packets)} packets for one frame")
        return bytes(packets[0])


class OpusDecoder(Decoder):
    """One Opus packet to PCM at ``sample_rate`` (stateful, mono).

    Raises:
        CodecError: ``sample_rate`` is not one of :data:`OPUS_SAMPLE_RATES`.
    """

    __slots__ = ("_context", "_resampler", "sample_rate")

    def __init__(self, sample_rate: int) -> None:
        _check_rate(sample_rate)
        self.sample_rate = sample_rate
        context: Any = _pyav().CodecContext.create("libopus", "r")
        context.sample_rate = OPUS_CLOCK
        context.layout = "mono"
        context.format = "s16"
        context.thread_count = 1  # no codec threads (design rule 7), as for the encoder
        context.open()
        self._context = context
        self._resampler = Resampler(OPUS_CLOCK, sample_rate) if sample_rate != OPUS_CLOCK else None

    def decode(self, payload: bytes) -> bytes:
        """Decode one packet; an empty payload decodes to nothing.

        Raises:
            OpusPacketError: the packet is malformed (the decoder stays usable).
        """
        if not payload:
            return b""
        packet_samples(payload)
        av = _pyav()
        try:
            frames = self._context.decode(av.Packet(payload))
        except av.error.FFmpegError as exc:
            raise OpusPacketError(f"libopus could not decode the packet: {exc.strerror}") from exc
        pcm = b"".join(bytes(frame.to_ndarray().astype("<i2", copy=False).tobytes())
                       for frame in frames)
        if self._resampler is not None:
            pcm = self._resampler.process(pcm)
        return pcm
