"""G.722 at 64 kbit/s through the ``g722`` package (module ``G722``, public domain).

Audio is 16 kHz: 320 samples in, 160 bytes out per 20 ms. Its RTP clock is
nevertheless 8000 Hz (RFC 3551 §4.5.2), so the registry says ``clock_rate``
8000 and ``sample_rate`` 16000. The codec is ADPCM and stateful: one encoder
and one decoder per direction of a call, fed in order.

``G722.G722.encode`` reads a ``bytes`` argument as one sample per byte, so PCM
goes in as ``array('h')``; decode returns ``array('h')`` (numpy disabled).
"""

from __future__ import annotations

from array import array

import G722

from callstream.media.codecs.base import Decoder, Encoder

__all__ = ["G722_BITRATE", "G722Decoder", "G722Encoder"]

G722_SAMPLE_RATE = 16000
G722_BITRATE = 64000


class G722Encoder(Encoder):
    """16 kHz PCM to G.722 (stateful)."""

    __slots__ = ("_codec",)

    def __init__(self) -> None:
        self._codec = G722.G722(G722_SAMPLE_RATE, G722_BITRATE)

    def encode(self, pcm: bytes) -> bytes:
        result: bytes = self._codec.encode(array("h", pcm))
        return result


class G722Decoder(Decoder):
    """G.722 to 16 kHz PCM (stateful)."""

    __slots__ = ("_codec",)

    def __init__(self) -> None:
        self._codec = G722.G722(G722_SAMPLE_RATE, G722_BITRATE, use_numpy=False)

    def decode(self, payload: bytes) -> bytes:
        samples: array[int] = self._codec.decode(payload)
        return samples.tobytes()
