"""Test audio: real speech from registry packages, WAV I/O, RTP pcaps SIPp can play.

Speech comes from the ``moonshine-voice`` wheel on PyPI (LibriVox and Beckett
recordings shipped as package assets; MIT/public domain). The wheel is fetched once
with ``pip download`` (registries are the only network CI has) into
``$CALLSTREAM_TEST_CACHE`` (default ``~/.cache/callstream-tests``) and its WAVs are
read straight from the zip, never installed or imported.
"""

from __future__ import annotations

import io
import math
import os
import struct
import subprocess
import sys
import wave
import zipfile
from collections.abc import Iterable
from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soxr

from callstream.media.codecs import FRAMES_PER_SECOND, get_codec
from callstream.media.rtp import build_packet

MOONSHINE = "moonshine-voice==0.1.5"
#: The speech clips in the wheel and what is said in them.
SPEECH = {
    "beckett": "Ever tried. Ever failed. No matter. Try again. Fail again. Fail better.",
    "two_cities": None,  # first paragraph of A Tale of Two Cities (44 s)
}


def cache_dir() -> Path:
    root = Path(os.environ.get("CALLSTREAM_TEST_CACHE", Path.home() / ".cache/callstream-tests"))
    root.mkdir(parents=True, exist_ok=True)
    return root


@cache
def _moonshine_wheel() -> Path:
    target = cache_dir() / "wheels"
    found = sorted(target.glob("moonshine_voice-*.whl"))
    if found:
        return found[-1]
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
         "--only-binary=:all:", "--platform", "manylinux_2_34_x86_64",
         "--python-version", "3.11", "-d", str(target), MOONSHINE],
        check=True, timeout=300,
    )
    found = sorted(target.glob("moonshine_voice-*.whl"))
    if not found:
        raise RuntimeError(f"pip download {MOONSHINE} produced no wheel in {target}")
    return found[-1]


def read_wav(data: bytes | Path) -> tuple[bytes, int]:
    """PCM s16le mono and its rate (stereo is averaged)."""
    raw = data.read_bytes() if isinstance(data, Path) else data
    with wave.open(io.BytesIO(raw)) as w:
        if w.getsampwidth() != 2:
            raise ValueError("only 16-bit WAV is supported")
        pcm, rate, channels = w.readframes(w.getnframes()), w.getframerate(), w.getnchannels()
    if channels > 1:
        samples = np.frombuffer(pcm, "<i2").reshape(-1, channels).mean(axis=1)
        pcm = samples.astype("<i2").tobytes()
    return pcm, rate


def write_wav(path: Path, pcm: bytes, rate: int) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return path


def resample(pcm: bytes, rate_in: int, rate_out: int) -> bytes:
    if rate_in == rate_out:
        return pcm
    samples = np.frombuffer(pcm, "<i2")
    return bytes(soxr.resample(samples, rate_in, rate_out).astype("<i2").tobytes())


@cache
def speech(name: str = "beckett", rate: int = 8000) -> bytes:
    """A real speech clip as PCM s16le mono at ``rate``."""
    with zipfile.ZipFile(_moonshine_wheel()) as z:
        raw = z.read(f"moonshine_voice/assets/{name}.wav")
    pcm, source_rate = read_wav(raw)
    return resample(pcm, source_rate, rate)


def tone(freq: float, seconds: float, rate: int = 8000, amplitude: int = 8000) -> bytes:
    n = int(seconds * rate)
    t = np.arange(n) / rate
    return (amplitude * np.sin(2 * math.pi * freq * t)).astype("<i2").tobytes()


def rtp_packets(
    pcm: bytes, codec: str = "PCMU", *, payload_type: int | None = None,
    ssrc: int = 0x1234ABCD, first_seq: int = 1000, first_ts: int = 0,
) -> list[bytes]:
    """Encode ``pcm`` (at the codec's audio rate) as 20 ms RTP packets."""
    info = get_codec(codec)
    pt = info.payload_type if payload_type is None else payload_type
    encoder = info.new_encoder()
    step = info.pcm_frame_bytes
    packets = []
    for i, start in enumerate(range(0, len(pcm) - step + 1, step)):
        payload = encoder.encode(pcm[start:start + step])
        packets.append(build_packet(pt, i == 0, (first_seq + i) & 0xFFFF,
                                    (first_ts + i * info.frame_ticks) & 0xFFFFFFFF,
                                    ssrc, payload))
    return packets


def write_pcap(
    path: Path, packets: Iterable[bytes], *, src: tuple[str, int] = ("127.0.0.1", 6000),
    dst: tuple[str, int] = ("127.0.0.1", 6001), interval: float = 1 / FRAMES_PER_SECOND,
) -> Path:
    """A classic libpcap file (Ethernet/IPv4/UDP) with one packet per ``interval`` seconds.

    SIPp's ``play_pcap_audio`` sends each UDP payload unchanged at the file's timing.
    """
    def ip4(addr: str) -> bytes:
        return bytes(int(p) for p in addr.split("."))

    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for i, rtp in enumerate(packets):
        udp = struct.pack("!HHHH", src[1], dst[1], 8 + len(rtp), 0) + rtp
        total = 20 + len(udp)
        header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, i & 0xFFFF, 0, 64, 17, 0,
                             ip4(src[0]), ip4(dst[0]))
        checksum = _ip_checksum(header)
        header = header[:10] + struct.pack("!H", checksum) + header[12:]
        frame = b"\x00\x00\x00\x00\x00\x02" + b"\x00\x00\x00\x00\x00\x01" + b"\x08\x00"
        frame += header + udp
        t = i * interval
        secs = int(t)
        out.append(struct.pack("<IIII", secs, round((t - secs) * 1e6), len(frame),
                               len(frame)))
        out.append(frame)
    path.write_bytes(b"".join(out))
    return path


def _ip_checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def snr_db(reference: bytes, received: bytes) -> float:
    """SNR of ``received`` against ``reference`` after aligning them by cross-correlation."""
    ref = np.frombuffer(reference, "<i2").astype(np.float64)
    got = np.frombuffer(received, "<i2").astype(np.float64)
    n = min(len(ref), len(got))
    if n == 0:
        return float("-inf")
    corr = np.correlate(got[: n], ref[: min(n, 4000)], mode="valid")
    lag = int(np.argmax(corr)) if len(corr) else 0
    got = got[lag: lag + len(ref)]
    ref = ref[: len(got)]
    noise = np.sum((ref - got) ** 2)
    return float("inf") if noise == 0 else float(10 * np.log10(np.sum(ref**2) / noise))


def correlate_valid(a: npt.NDArray[np.float64], v: npt.NDArray[np.float64]
                    ) -> npt.NDArray[np.float64]:
    """``np.correlate(a, v, mode="valid")`` (``len(a) >= len(v)``), computed by FFT: the same
    values to ~1e-15 of the peak, in milliseconds where the direct sum takes a second at
    48 kHz."""
    if len(a) < len(v):
        return np.correlate(a, v, mode="valid")
    n = len(a) + len(v) - 1
    size = 1 << (n - 1).bit_length()
    full = np.fft.irfft(np.fft.rfft(a, size) * np.fft.rfft(v[::-1], size), size)
    return full[len(v) - 1: len(a)]


def segment_snr(reference: bytes, got: bytes, rate: int, seconds: float = 0.5) -> float:
    """SNR of ``seconds`` from the middle of ``got`` against where it sits in ``reference``.

    For paths with a delay of their own (codecs, resamplers, a stream that starts after the
    caller did): the heads need not line up, only the middle must be found in the reference.
    """
    ref = np.frombuffer(reference, "<i2").astype(np.float64)
    rec = np.frombuffer(got, "<i2").astype(np.float64)
    half = int(rate * seconds) // 2
    mid = len(rec) // 2
    chunk = rec[mid - half: mid + half]
    corr = correlate_valid(ref, chunk)
    lag = int(np.argmax(corr))
    aligned = ref[lag: lag + len(chunk)]
    noise = np.sum((aligned - chunk) ** 2)
    return float("inf") if noise == 0 else float(10 * np.log10(np.sum(aligned**2) / noise))


def spectral_snr(reference: bytes, got: bytes, rate: int, max_lag: float = 0.2,
                 seconds: float = 2.0) -> float:
    """SNR of the magnitude spectra of 20 ms frames of ``got`` against ``reference``.

    For perceptual codecs: Opus's SILK mode keeps the spectrum, not the phase, so its
    waveform SNR on speech is near 0 dB however good it sounds, and waveform correlation
    cannot align it either. The middle ``seconds`` of ``got`` are compared in 0.5 s
    blocks, each aligned on its own (a jitter buffer may have inserted a frame between
    two): by loudness envelope, within ``max_lag`` seconds for the first block and 40 ms
    of the previous block's lag after that, then to the sample within 2.5 ms that
    matches best. Signal and error energies are summed over all blocks.
    """
    ref = np.frombuffer(reference, "<i2").astype(np.float64)
    rec = np.frombuffer(got, "<i2").astype(np.float64)
    smooth = np.ones(rate // 500) / (rate // 500)
    ref_env = np.convolve(np.abs(ref), smooth, mode="same")
    rec_env = np.convolve(np.abs(rec), smooth, mode="same")
    ref_env -= ref_env.mean()
    rec_env -= rec_env.mean()
    n = rate // FRAMES_PER_SECOND
    hann = np.hanning(n)
    block = 25 * n  # 0.5 s
    first = max(0, min(len(rec), len(ref)) // 2 - int(rate * seconds) // 2)

    def energies(at: int, offset: int) -> tuple[float, float]:
        """(signal, error) of rec[at:at+block] against ref[at+offset:...]."""
        if at + offset < 0 or at + offset + block > len(ref):
            return 0.0, float("inf")
        a = np.abs(np.fft.rfft(ref[at + offset: at + offset + block].reshape(-1, n) * hann))
        b = np.abs(np.fft.rfft(rec[at: at + block].reshape(-1, n) * hann))
        return float(np.sum(a**2)), float(np.sum((a - b) ** 2))

    signal = error = 0.0
    offset, reach = 0, int(rate * max_lag)  # offset: where rec[i] sits in ref, minus i
    for at in range(first, min(len(rec), first + int(rate * seconds)) - block + 1, block):
        low = max(0, at + offset - reach)
        window = ref_env[low: at + offset + block + reach]
        if len(window) < block:
            break
        found = int(np.argmax(correlate_valid(window, rec_env[at: at + block])))
        coarse = low + found - at
        fine = rate // 400
        s_, e_ = min((energies(at, o) for o in range(coarse - fine, coarse + fine + 1)),
                     key=lambda se: se[1] / se[0] if se[0] else float("inf"))
        if not s_:  # this block of ``got`` lies past the end of ``reference``
            continue
        offset, reach = coarse, rate // 25
        signal += s_
        error += e_
    if not signal:
        raise AssertionError("no part of got lines up with reference")
    return float("inf") if error == 0 else float(10 * np.log10(signal / error))
