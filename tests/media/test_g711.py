"""G.711: audioop and the numpy fallback agree bit for bit on every input."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import warnings

import numpy as np
import pytest

from callstream.media.codecs import g711
from callstream.media.codecs.g711 import (
    PcmaDecoder,
    PcmaEncoder,
    PcmuDecoder,
    PcmuEncoder,
    numpy_alaw_decode,
    numpy_alaw_encode,
    numpy_ulaw_decode,
    numpy_ulaw_encode,
)

from .helpers import aligned_snr, samples, tone

ALL_SAMPLES = np.arange(-32768, 32768, dtype="<i2").tobytes()
ALL_CODES = bytes(range(256))


@pytest.fixture(scope="module")
def audioop():  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop as module
    return module


def test_audioop_is_used_here() -> None:
    assert g711.AUDIOOP is not None


def test_ulaw_encode_bit_exact(audioop) -> None:  # type: ignore[no-untyped-def]
    assert numpy_ulaw_encode(ALL_SAMPLES) == audioop.lin2ulaw(ALL_SAMPLES, 2)


def test_alaw_encode_bit_exact(audioop) -> None:  # type: ignore[no-untyped-def]
    assert numpy_alaw_encode(ALL_SAMPLES) == audioop.lin2alaw(ALL_SAMPLES, 2)


def test_ulaw_decode_bit_exact(audioop) -> None:  # type: ignore[no-untyped-def]
    assert numpy_ulaw_decode(ALL_CODES) == audioop.ulaw2lin(ALL_CODES, 2)


def test_alaw_decode_bit_exact(audioop) -> None:  # type: ignore[no-untyped-def]
    assert numpy_alaw_decode(ALL_CODES) == audioop.alaw2lin(ALL_CODES, 2)


def test_known_codes() -> None:
    silence = bytes(320)
    assert PcmuEncoder().encode(silence) == b"\xff" * 160
    assert PcmaEncoder().encode(silence) == b"\xd5" * 160
    assert PcmuDecoder().decode(b"\xff") == b"\x00\x00"
    assert PcmaDecoder().decode(b"\xd5") == b"\x08\x00"  # A-law has no zero: +8


@pytest.mark.parametrize(
    ("encoder", "decoder"), [(PcmuEncoder(), PcmuDecoder()), (PcmaEncoder(), PcmaDecoder())]
)
def test_tone_round_trip(encoder, decoder) -> None:  # type: ignore[no-untyped-def]
    pcm = tone(1000, 8000, 0.5)
    payload = encoder.encode(pcm)
    assert len(payload) == len(pcm) // 2
    snr, lag = aligned_snr(samples(pcm), samples(decoder.decode(payload)), max_lag=4)
    assert lag == 0
    assert snr > 30


def test_importing_codecs_never_warns() -> None:
    # audioop's DeprecationWarning must stay inside g711.py.
    code = "import callstream.media.codecs, callstream.media.session, callstream.media.transport"
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_without_audioop_the_numpy_fallback_takes_over(audioop) -> None:  # type: ignore[no-untyped-def]
    """As on Python 3.13 without audioop-lts: same bytes, through numpy."""
    code = """
import hashlib, sys
sys.modules["audioop"] = None  # makes "import audioop" raise ImportError
import numpy as np
from callstream.media.codecs import PCMA, PCMU, g711, pcm
assert g711.AUDIOOP is None and pcm.AUDIOOP is None
samples = np.arange(-32768, 32768, dtype="<i2").tobytes()
codes = bytes(range(256))
out = b"".join([
    PCMU.new_encoder().encode(samples), PCMA.new_encoder().encode(samples),
    PCMU.new_decoder().decode(codes), PCMA.new_decoder().decode(codes),
])
print(hashlib.sha256(out).hexdigest())
"""
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    expected = b"".join(
        [
            audioop.lin2ulaw(ALL_SAMPLES, 2),
            audioop.lin2alaw(ALL_SAMPLES, 2),
            audioop.ulaw2lin(ALL_CODES, 2),
            audioop.alaw2lin(ALL_CODES, 2),
        ]
    )
    assert result.stdout.strip() == hashlib.sha256(expected).hexdigest()
