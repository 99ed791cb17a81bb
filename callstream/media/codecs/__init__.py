"""Audio codecs and the registry that names them.

Internal PCM
------------
Everywhere inside ``callstream.media`` — decoder output, encoder input, the
jitter buffer, the media hub, taps and audio sources — audio is ``bytes`` of
**signed 16-bit little-endian mono samples** in 20 ms frames. ``bytes`` is
what ``audioop`` and the ``G722`` package take and give without a copy, and
what a WebSocket payload or an RTP packet is built from; numpy arrays would
cost a wrap and an unwrap on each hop for nothing.

The **sample rate is the codec's own audio rate** (``CodecInfo.sample_rate``):
8 kHz for PCMU/PCMA, 16 kHz for G.722 and L16. Most calls are G.711, and at
8 kHz they never resample; a wideband call keeps its band for transcription
and L16 streams. Rates are converted only where two of them meet — a bridge
between a G.711 and a G.722 leg, a bidirectional stream at 24 kHz — by
:class:`~callstream.media.codecs.resample.Resampler` (libswresample, 1-2 ms
of delay).

Opus
----
Opus is a stream codec only (Telnyx's ``stream_codec`` ``OPUS``), never offered in SDP:
:func:`opus_codec` gives its :class:`CodecInfo` at a stream rate, outside the RTP
registry below (``get_codec("OPUS")`` stays unknown). Its packets vary in size, so
its ``frame_bytes`` is 0 and ``samples_for``/``ticks_for`` do not apply.

Registry
--------
:func:`get_codec` returns a :class:`CodecInfo` (name, RTP clock rate, audio
sample rate, default payload type, bytes per 20 ms) that also builds fresh
encoders and decoders. :class:`Transcoder` converts between any two codecs,
or between a codec and raw PCM at a given rate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache, partial

from callstream.media.codecs.base import Decoder, Encoder
from callstream.media.codecs.g711 import PcmaDecoder, PcmaEncoder, PcmuDecoder, PcmuEncoder
from callstream.media.codecs.g722 import G722Decoder, G722Encoder
from callstream.media.codecs.l16 import L16Decoder, L16Encoder
from callstream.media.codecs.opus import OPUS_SAMPLE_RATES, OpusDecoder, OpusEncoder
from callstream.media.codecs.resample import Resampler
from callstream.media.exceptions import CodecError, UnknownCodecError

__all__ = [
    "FRAMES_PER_SECOND",
    "FRAME_MS",
    "G722",
    "L16",
    "L16_8K",
    "OPUS_SAMPLE_RATES",
    "PCMA",
    "PCMU",
    "TELEPHONE_EVENT",
    "TELEPHONE_EVENT_PT",
    "CodecInfo",
    "Decoder",
    "Encoder",
    "Transcoder",
    "codec_for_payload_type",
    "get_codec",
    "opus_codec",
    "registered_codecs",
]

FRAME_MS = 20
FRAMES_PER_SECOND = 1000 // FRAME_MS
# Our default dynamic payload types (RFC 3551 §3 leaves 96-127 to SDP).
TELEPHONE_EVENT_PT = 101
L16_16K_PT = 96
L16_8K_PT = 97
OPUS_PT = 111  # never negotiated (streams only); the value browsers use for opus/48000/2
TELEPHONE_EVENT = "telephone-event"


@dataclass(frozen=True, slots=True)
class CodecInfo:
    """What a codec is on the wire and in memory.

    Attributes:
        name: the SDP encoding name (``a=rtpmap``), upper case.
        clock_rate: RTP timestamp units per second (8000 for G.722).
        sample_rate: the PCM rate its encoder takes and decoder gives.
        payload_type: its static payload type, or our default dynamic one.
        frame_bytes: encoded bytes per 20 ms; 0 for Opus, whose packets vary.
    """

    name: str
    clock_rate: int
    sample_rate: int
    payload_type: int
    frame_bytes: int
    encoder_factory: Callable[[], Encoder] = field(repr=False, compare=False)
    decoder_factory: Callable[[], Decoder] = field(repr=False, compare=False)

    @property
    def frame_samples(self) -> int:
        """PCM samples per 20 ms."""
        return self.sample_rate // FRAMES_PER_SECOND

    @property
    def pcm_frame_bytes(self) -> int:
        """Internal PCM bytes per 20 ms."""
        return 2 * self.frame_samples

    @property
    def frame_ticks(self) -> int:
        """RTP timestamp increment per 20 ms."""
        return self.clock_rate // FRAMES_PER_SECOND

    @property
    def rtpmap(self) -> str:
        """The ``a=rtpmap`` value after the payload type, e.g. ``G722/8000``."""
        return f"{self.name}/{self.clock_rate}"

    def samples_for(self, payload_length: int) -> int:
        """PCM samples carried by a payload of ``payload_length`` bytes."""
        # frame_samples inlined: called for every packet the jitter buffer files and plays
        return payload_length * (self.sample_rate // FRAMES_PER_SECOND) // self.frame_bytes

    def ticks_for(self, payload_length: int) -> int:
        """RTP timestamp units covered by a payload of ``payload_length`` bytes."""
        return payload_length * self.frame_ticks // self.frame_bytes

    def new_encoder(self) -> Encoder:
        """Return a fresh encoder (one per direction of one call)."""
        return self.encoder_factory()

    def new_decoder(self) -> Decoder:
        """Return a fresh decoder (one per direction of one call)."""
        return self.decoder_factory()


PCMU = CodecInfo("PCMU", 8000, 8000, 0, 160, PcmuEncoder, PcmuDecoder)
PCMA = CodecInfo("PCMA", 8000, 8000, 8, 160, PcmaEncoder, PcmaDecoder)
G722 = CodecInfo("G722", 8000, 16000, 9, 160, G722Encoder, G722Decoder)
L16 = CodecInfo("L16", 16000, 16000, L16_16K_PT, 640, L16Encoder, L16Decoder)
L16_8K = CodecInfo("L16", 8000, 8000, L16_8K_PT, 320, L16Encoder, L16Decoder)

# (name, clock rate) -> codec; the first registered rate of a name is its default.
_REGISTRY: dict[tuple[str, int], CodecInfo] = {}
_DEFAULT_RATE: dict[str, int] = {}
_STATIC_PT: dict[int, CodecInfo] = {}


def _register(codec: CodecInfo, *, static: bool = False) -> None:
    _REGISTRY[codec.name, codec.clock_rate] = codec
    _DEFAULT_RATE.setdefault(codec.name, codec.clock_rate)
    if static:
        _STATIC_PT[codec.payload_type] = codec


_register(PCMU, static=True)
_register(PCMA, static=True)
_register(G722, static=True)
_register(L16)
_register(L16_8K)


def get_codec(name: str, clock_rate: int | None = None) -> CodecInfo:
    """Look a codec up by SDP name, case-insensitively.

    Args:
        name: ``"PCMU"``, ``"pcma"``, ``"G722"``, ``"L16"`` or an rtpmap-style
            ``"L16/8000"``.
        clock_rate: the RTP clock rate; the name's default when omitted
            (16000 for L16).

    Raises:
        UnknownCodecError: no such codec or rate.
    """
    key = name.upper()
    if "/" in key:
        key, _, rate_text = key.partition("/")
        rate_text = rate_text.partition("/")[0]  # drop a channel count
        if not rate_text.isdigit():
            raise UnknownCodecError(name)
        clock_rate = int(rate_text)
    if clock_rate is None:
        if key not in _DEFAULT_RATE:
            raise UnknownCodecError(name)
        clock_rate = _DEFAULT_RATE[key]
    try:
        return _REGISTRY[key, clock_rate]
    except KeyError:
        raise UnknownCodecError(name, clock_rate) from None


@cache
def opus_codec(sample_rate: int) -> CodecInfo:
    """Opus for a media stream at ``sample_rate`` (``start.media_format.sample_rate``).

    Its ``clock_rate`` is the stream's rate too: Telnyx reports that rate, and no RTP
    (whose Opus clock is always 48000, RFC 7587 §4.1) is involved.

    Raises:
        UnknownCodecError: not one of :data:`OPUS_SAMPLE_RATES`.
    """
    if sample_rate not in OPUS_SAMPLE_RATES:
        raise UnknownCodecError("OPUS", sample_rate)
    return CodecInfo("OPUS", sample_rate, sample_rate, OPUS_PT, 0,
                     partial(OpusEncoder, sample_rate), partial(OpusDecoder, sample_rate))


def codec_for_payload_type(payload_type: int) -> CodecInfo | None:
    """Return the codec a static payload type means (RFC 3551 §6), if we have it."""
    return _STATIC_PT.get(payload_type)


def registered_codecs() -> tuple[CodecInfo, ...]:
    """Every registered codec, in registration (preference) order."""
    return tuple(_REGISTRY.values())


class Transcoder:
    """Converts audio from one codec (or PCM rate) to another, statefully.

    ``source`` and ``target`` are each a :class:`CodecInfo` or an int sample
    rate meaning internal PCM at that rate. Identical codecs pass payloads
    through untouched. Feed one direction of one stream, in order; output
    length follows input length (20 ms in gives 20 ms out).

    Example::

        to_g722 = Transcoder(PCMU, G722)        # payload -> payload
        to_pcm16 = Transcoder(PCMU, 16000)      # payload -> 16 kHz PCM
        from_pcm = Transcoder(24000, PCMU)      # 24 kHz PCM -> payload
    """

    __slots__ = ("_decoder", "_encoder", "_passthrough", "_resampler", "source", "target")

    def __init__(self, source: CodecInfo | int, target: CodecInfo | int) -> None:
        self.source = source
        self.target = target
        self._passthrough = source == target
        self._decoder = source.new_decoder() if isinstance(source, CodecInfo) else None
        self._encoder = target.new_encoder() if isinstance(target, CodecInfo) else None
        in_rate = source.sample_rate if isinstance(source, CodecInfo) else source
        out_rate = target.sample_rate if isinstance(target, CodecInfo) else target
        self._resampler = Resampler(in_rate, out_rate) if in_rate != out_rate else None

    def transcode(self, data: bytes) -> bytes:
        """Convert one chunk (a payload, or PCM when the source is a rate).

        Raises:
            CodecError: PCM input has an odd number of bytes.
        """
        if self._passthrough:
            return data
        pcm = self._decoder.decode(data) if self._decoder is not None else data
        if len(pcm) & 1:
            raise CodecError("PCM has an odd number of bytes")
        if self._resampler is not None:
            pcm = self._resampler.process(pcm)
        return self._encoder.encode(pcm) if self._encoder is not None else pcm
