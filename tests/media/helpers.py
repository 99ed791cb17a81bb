"""Shared helpers of the media tests: signals, SNR, a fake wire between sessions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from callstream.media.codecs.g711 import PcmuDecoder
from callstream.media.session import Address, RtpSession

DATA = Path(__file__).parent / "data"

A_ADDR: Address = ("10.0.0.1", 4000)
B_ADDR: Address = ("10.0.0.2", 5000)


def fixture(name: str) -> bytes:
    return (DATA / name).read_bytes()


def tone(
    freq: float, rate: int, seconds: float, amplitude: float = 8000.0, phase: float = 0.0
) -> bytes:
    """A sine tone as internal PCM (int16 little-endian)."""
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t + phase)).astype("<i2").tobytes()


def samples(pcm: bytes) -> npt.NDArray[np.float64]:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)


def frames(pcm: bytes, size: int) -> list[bytes]:
    """Cut PCM (or payload) into chunks of ``size`` bytes, dropping a short tail."""
    return [pcm[i : i + size] for i in range(0, len(pcm) - size + 1, size)]


def aligned_snr(
    reference: npt.NDArray[np.float64], test: npt.NDArray[np.float64], max_lag: int = 2000
) -> tuple[float, int]:
    """SNR in dB of ``test`` against ``reference`` at the best delay (test lags)."""
    best = (-np.inf, 0)
    n = min(len(reference), len(test)) - max_lag
    if n <= 0:
        raise ValueError("signals are too short for the lag range")
    # Skip the first 50 ms: codecs and resamplers settle there.
    skip = 400
    ref = reference[skip : skip + n - skip]
    for lag in range(max_lag):
        seg = test[skip + lag : skip + lag + len(ref)]
        if len(seg) < len(ref):
            break
        noise = np.sum((ref - seg) ** 2)
        snr = 10 * np.log10(np.sum(ref**2) / max(noise, 1e-9))
        if snr > best[0]:
            best = (float(snr), lag)
    return best


class Wire:
    """Carries datagrams between two sessions, as a network would (no sockets)."""

    def __init__(self, a: RtpSession, b: RtpSession) -> None:
        self.a = a
        self.b = b
        self.a_to_b: list[bytes] = []
        self.b_to_a: list[bytes] = []

    def deliver(self, now: float) -> None:
        """Move every queued RTP and RTCP datagram to the other side."""
        for data, addr in self.a.datagrams_to_send():
            assert addr == B_ADDR
            self.a_to_b.append(data)
            self.b.receive_rtp(data, A_ADDR, now)
        for data, _ in self.a.rtcp_datagrams_to_send():
            self.b.receive_rtcp(data, (A_ADDR[0], A_ADDR[1] + 1), now)
        for data, addr in self.b.datagrams_to_send():
            assert addr == A_ADDR
            self.b_to_a.append(data)
            self.a.receive_rtp(data, B_ADDR, now)
        for data, _ in self.b.rtcp_datagrams_to_send():
            self.a.receive_rtcp(data, (B_ADDR[0], B_ADDR[1] + 1), now)


def tone_snr(signal: npt.NDArray[np.float64], freq: float, rate: int, skip: int = 0) -> float:
    """SNR in dB of ``signal`` against the best-fitting tone at ``freq`` (any phase).

    Phase-agnostic, so a resampler's fractional-sample delay costs nothing.
    """
    x = signal[skip:]
    t = np.arange(len(x)) / rate
    basis = np.column_stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)])
    coef, *_ = np.linalg.lstsq(basis, x, rcond=None)
    fitted = basis @ coef
    noise = np.sum((x - fitted) ** 2)
    return float(10 * np.log10(np.sum(fitted**2) / max(noise, 1e-9)))


class CountingPcmu(PcmuDecoder):
    """A PCMU decoder that counts its decodes (the tick's decode-skipping tests)."""

    __slots__ = ("calls",)

    def __init__(self) -> None:
        self.calls = 0

    def decode(self, payload: bytes) -> bytes:  # type: ignore[override]
        self.calls += 1
        return PcmuDecoder.decode(payload)
