"""L16: uncompressed 16-bit linear PCM in network (big-endian) order (RFC 3551 §4.5.11).

The wire carries big-endian samples; internal PCM is little-endian, so both
directions are one byte swap. 16 kHz is the default rate (Telnyx's L16
stream codec); the 8 kHz variant is registered too.
"""

from __future__ import annotations

from callstream.media.codecs.base import Decoder, Encoder
from callstream.media.codecs.pcm import byteswap

__all__ = ["L16Decoder", "L16Encoder"]


class L16Encoder(Encoder):
    """Little-endian PCM to big-endian L16 payload."""

    __slots__ = ()
    stateless = True

    def encode(self, pcm: bytes) -> bytes:
        return byteswap(pcm)


class L16Decoder(Decoder):
    """Big-endian L16 payload to little-endian PCM."""

    __slots__ = ()
    stateless = True

    def decode(self, payload: bytes) -> bytes:
        if len(payload) & 1:
            payload = payload[:-1]  # a stray odd byte is not a sample
        return byteswap(payload)
