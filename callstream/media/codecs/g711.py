"""G.711 µ-law (PCMU) and A-law (PCMA): one byte per sample at 8 kHz.

The codec work is stdlib ``audioop`` (C, about 0.5 µs per 20 ms) where it
exists: Python 3.11-3.12, or ``audioop-lts`` on 3.13+. Everywhere else, and on
big-endian hosts where ``audioop`` would speak native order, numpy lookup
tables do it; they are computed with the same algorithm as CPython's
``audioop.c`` and are bit-exact with it for all 65,536 inputs (tested).

This module is also the one place that imports ``audioop``: the other PCM
helpers reach it through :data:`AUDIOOP`.
"""

from __future__ import annotations

import functools
import sys
import warnings
from types import ModuleType

import numpy as np
import numpy.typing as npt

from callstream.media.codecs.base import Decoder, Encoder


def _import_audioop() -> ModuleType | None:
    if sys.byteorder != "little":
        return None  # audioop works in native order; our PCM is little-endian
    with warnings.catch_warnings():
        # 3.11/3.12 warn at import that audioop goes away in 3.13.
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import audioop
        except ImportError:
            return None
    return audioop


AUDIOOP: ModuleType | None = _import_audioop()
"""The ``audioop`` module when usable, else None (numpy fallbacks are used)."""

__all__ = [
    "AUDIOOP",
    "PcmaDecoder",
    "PcmaEncoder",
    "PcmuDecoder",
    "PcmuEncoder",
    "alaw_decode",
    "alaw_encode",
    "numpy_alaw_decode",
    "numpy_alaw_encode",
    "numpy_ulaw_decode",
    "numpy_ulaw_encode",
    "ulaw_decode",
    "ulaw_encode",
]

_I16 = np.dtype("<i2")
# CPython audioop.c segment end points (14-bit µ-law, 13-bit A-law).
_SEG_UEND = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)
_SEG_AEND = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)
_ULAW_BIAS = 0x84


@functools.cache
def _ulaw_encode_table() -> npt.NDArray[np.uint8]:
    """µ-law code of every int16, indexed by ``sample ^ 0x8000`` as uint16."""
    pcm = np.arange(-32768, 32768, dtype=np.int32) >> 2  # audioop feeds 14 bits
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(pcm), 32635) + (_ULAW_BIAS >> 2)
    seg = np.searchsorted(_SEG_UEND, mag, side="left")
    code = (np.minimum(seg, 7) << 4) | ((mag >> (np.minimum(seg, 7) + 1)) & 0x0F)
    code = np.where(seg >= 8, 0x7F, code)
    # Indexed by sample + 32768: the sample's bits as uint16 with the sign flipped.
    return (code ^ mask).astype(np.uint8)


@functools.cache
def _alaw_encode_table() -> npt.NDArray[np.uint8]:
    """A-law code of every int16, indexed by ``sample ^ 0x8000`` as uint16."""
    pcm = np.arange(-32768, 32768, dtype=np.int32) >> 3  # audioop feeds 13 bits
    mask = np.where(pcm >= 0, 0xD5, 0x55)
    mag = np.where(pcm >= 0, pcm, -pcm - 1)
    seg = np.searchsorted(_SEG_AEND, mag, side="left")
    segc = np.minimum(seg, 7)
    quant = np.where(segc < 2, mag >> 1, mag >> np.maximum(segc, 1)) & 0x0F
    code = np.where(seg >= 8, 0x7F, (segc << 4) | quant)
    # Indexed by sample + 32768: the sample's bits as uint16 with the sign flipped.
    return (code ^ mask).astype(np.uint8)


@functools.cache
def _ulaw_decode_table() -> npt.NDArray[np.int16]:
    code = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((code & 0x0F) << 3) + _ULAW_BIAS) << ((code & 0x70) >> 4)
    return np.where(code & 0x80, _ULAW_BIAS - t, t - _ULAW_BIAS).astype(_I16)


@functools.cache
def _alaw_decode_table() -> npt.NDArray[np.int16]:
    code = np.arange(256, dtype=np.int32) ^ 0x55
    seg = (code & 0x70) >> 4
    t = (code & 0x0F) << 4
    t = np.where(seg == 0, t + 8, (t + 0x108) << np.maximum(seg - 1, 0))
    return np.where(code & 0x80, t, -t).astype(_I16)


def numpy_ulaw_encode(pcm: bytes) -> bytes:
    """µ-law encode little-endian int16 PCM with numpy (audioop's exact output)."""
    index = np.frombuffer(pcm, dtype="<u2") ^ np.uint16(0x8000)
    codes: npt.NDArray[np.uint8] = _ulaw_encode_table()[index]
    return codes.tobytes()


def numpy_alaw_encode(pcm: bytes) -> bytes:
    """A-law encode little-endian int16 PCM with numpy (audioop's exact output)."""
    index = np.frombuffer(pcm, dtype="<u2") ^ np.uint16(0x8000)
    codes: npt.NDArray[np.uint8] = _alaw_encode_table()[index]
    return codes.tobytes()


def numpy_ulaw_decode(payload: bytes) -> bytes:
    """Decode µ-law to little-endian int16 PCM with numpy."""
    return _ulaw_decode_table()[np.frombuffer(payload, dtype=np.uint8)].tobytes()


def numpy_alaw_decode(payload: bytes) -> bytes:
    """Decode A-law to little-endian int16 PCM with numpy."""
    return _alaw_decode_table()[np.frombuffer(payload, dtype=np.uint8)].tobytes()


if AUDIOOP is not None:
    _audioop = AUDIOOP

    def ulaw_encode(pcm: bytes) -> bytes:
        """µ-law encode little-endian int16 PCM."""
        result: bytes = _audioop.lin2ulaw(pcm, 2)
        return result

    def ulaw_decode(payload: bytes) -> bytes:
        """Decode µ-law to little-endian int16 PCM."""
        result: bytes = _audioop.ulaw2lin(payload, 2)
        return result

    def alaw_encode(pcm: bytes) -> bytes:
        """A-law encode little-endian int16 PCM."""
        result: bytes = _audioop.lin2alaw(pcm, 2)
        return result

    def alaw_decode(payload: bytes) -> bytes:
        """Decode A-law to little-endian int16 PCM."""
        result: bytes = _audioop.alaw2lin(payload, 2)
        return result

else:
    ulaw_encode = numpy_ulaw_encode
    ulaw_decode = numpy_ulaw_decode
    alaw_encode = numpy_alaw_encode
    alaw_decode = numpy_alaw_decode


class PcmuEncoder(Encoder):
    """PCMU encoder (stateless)."""

    __slots__ = ()
    stateless = True

    encode = staticmethod(ulaw_encode)  # no Python frame of its own: every call, every tick


class PcmuDecoder(Decoder):
    """PCMU decoder (stateless)."""

    __slots__ = ()
    stateless = True

    decode = staticmethod(ulaw_decode)  # no Python frame of its own: every call, every tick


class PcmaEncoder(Encoder):
    """PCMA encoder (stateless)."""

    __slots__ = ()
    stateless = True

    encode = staticmethod(alaw_encode)  # no Python frame of its own: every call, every tick


class PcmaDecoder(Decoder):
    """PCMA decoder (stateless)."""

    __slots__ = ()
    stateless = True

    decode = staticmethod(alaw_decode)  # no Python frame of its own: every call, every tick
