"""The codec interfaces: an encoder and a decoder per direction.

PCM on both sides is :mod:`callstream.media.codecs`' internal format:
``bytes`` of signed 16-bit little-endian mono samples at the codec's audio
sample rate. Stateful codecs (G.722) keep their state in the instance, so a
call leg holds one encoder and one decoder and never shares them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

__all__ = ["Decoder", "Encoder"]


class Encoder(ABC):
    """Turns PCM into RTP payload bytes."""

    __slots__ = ()

    #: Whether equal input always encodes to equal output, whatever came before
    #: (G.711, L16; not ADPCM): then a frame's encoding may be reused.
    stateless: ClassVar[bool] = False

    @abstractmethod
    def encode(self, pcm: bytes) -> bytes:
        """Encode PCM (any whole number of samples; 20 ms on the hot path)."""


class Decoder(ABC):
    """Turns RTP payload bytes into PCM."""

    __slots__ = ()

    #: Whether a payload decodes the same whatever came before (G.711, L16; not
    #: ADPCM): then a decode nobody reads may be left out, or done later.
    stateless: ClassVar[bool] = False

    @abstractmethod
    def decode(self, payload: bytes) -> bytes:
        """Decode one RTP payload to PCM."""
