"""Opus for streams: real libopus (PyAV) round trips, packet framing checks, bad packets."""

from __future__ import annotations

import numpy as np
import pytest

from callstream.media.codecs import OPUS_SAMPLE_RATES, get_codec, opus_codec
from callstream.media.codecs.opus import (
    MAX_PACKET_BYTES,
    OPUS_BITRATES,
    OpusDecoder,
    OpusEncoder,
    packet_samples,
)
from callstream.media.exceptions import CodecError, OpusPacketError, UnknownCodecError
from tests.audio import segment_snr, spectral_snr, speech, tone


def frames(pcm: bytes, rate: int) -> list[bytes]:
    step = 2 * rate // 50
    return [pcm[i:i + step] for i in range(0, len(pcm) - step + 1, step)]


def round_trip(pcm: bytes, rate: int) -> tuple[bytes, list[bytes]]:
    codec = opus_codec(rate)
    encoder, decoder = codec.new_encoder(), codec.new_decoder()
    packets = [encoder.encode(f) for f in frames(pcm, rate)]
    return b"".join(decoder.decode(p) for p in packets), packets


@pytest.mark.parametrize("rate", OPUS_SAMPLE_RATES)
def test_tone_round_trip(rate: int) -> None:
    """20 ms in, one packet out, 20 ms back; a 440 Hz tone survives (waveform SNR)."""
    pcm = tone(440, 1.0, rate)
    out, packets = round_trip(pcm, rate)
    assert len(packets) == 50
    assert len(out) == len(pcm)  # every packet decodes to exactly 20 ms at the stream rate
    assert all(packet_samples(p) == 960 for p in packets)  # 20 ms of Opus's 48 kHz clock
    # Opus is perceptual, not waveform-exact: measured 20-38 dB on this tone.
    assert segment_snr(pcm, out, rate) > 15


@pytest.mark.parametrize("rate", [16000, 48000])
def test_speech_bit_rate_and_band(rate: int) -> None:
    """Real speech codes at about the configured bit rate and keeps its wide band."""
    pcm = speech("beckett", rate)[: rate * 2 * 3]
    out, packets = round_trip(pcm, rate)
    kbps = sum(len(p) for p in packets) * 8 / 3 / 1000
    assert 0.5 * OPUS_BITRATES[rate] / 1000 < kbps < 1.5 * OPUS_BITRATES[rate] / 1000
    # SILK keeps the spectrum, not the waveform: spectral SNR, measured 15-16 dB.
    assert spectral_snr(pcm, out, rate) > 10


def test_not_in_the_rtp_registry() -> None:
    """SDP never offers Opus: the RTP registry does not know it, the stream lookup does."""
    with pytest.raises(UnknownCodecError):
        get_codec("OPUS")
    assert opus_codec(16000) is opus_codec(16000)
    assert (opus_codec(16000).name, opus_codec(16000).sample_rate) == ("OPUS", 16000)
    with pytest.raises(UnknownCodecError, match="22050"):
        opus_codec(22050)
    with pytest.raises(CodecError, match="not 12000"):
        OpusEncoder(12000)
    with pytest.raises(CodecError, match="not 44100"):
        OpusDecoder(44100)


@pytest.mark.parametrize("size", [0, 638, 642, 1280])
def test_encoder_takes_whole_20ms_frames(size: int) -> None:
    with pytest.raises(CodecError, match=f"640 bytes of PCM at 16000 Hz\\), not {size} bytes"):
        OpusEncoder(16000).encode(bytes(size))


@pytest.mark.parametrize(("packet", "samples"), [
    (bytes([0x09 << 3 | 0]) + b"x", 960),        # SILK WB 20 ms, one frame
    (bytes([0x03 << 3 | 0]) + b"x", 2880),       # SILK NB 60 ms
    (bytes([0x0E << 3 | 1]) + b"xy", 2 * 480),   # hybrid 10 ms, two equal frames
    (bytes([0x1F << 3 | 2, 1]) + b"xyz", 1920),  # CELT FB 20 ms, two frames
    (bytes([0x10 << 3 | 3, 48]), 48 * 120),      # CELT 2.5 ms x 48 = 120 ms
    (bytes([0x0B << 3 | 3, 2]), 2 * 2880),       # SILK 60 ms x 2 = 120 ms
])
def test_packet_samples(packet: bytes, samples: int) -> None:
    """RFC 6716 §3.1 Table 2 and the four frame-count codes of §3.2."""
    assert packet_samples(packet) == samples


@pytest.mark.parametrize(("packet", "error"), [
    (b"", "at least one byte"),
    (b"\x01" * (MAX_PACKET_BYTES + 1), f"at most {MAX_PACKET_BYTES} bytes here; this one is 4001"),
    (bytes([0x08 << 3 | 1]) + b"xyz", "length after the TOC must be even, not 3"),
    (bytes([0x08 << 3 | 2]), "code 2 packet needs a frame length byte"),
    (bytes([0x08 << 3 | 3]), "code 3 packet needs a frame count byte"),
    (bytes([0x08 << 3 | 3, 0]), "frame count of 0"),
    (bytes([0x0B << 3 | 3, 3]), "at most 120 ms; this one has 3 frames of 60 ms"),
])
def test_bad_packets_have_precise_errors(packet: bytes, error: str) -> None:
    with pytest.raises(OpusPacketError, match=error.replace("(", r"\(")):
        packet_samples(packet)


def test_decoder_survives_bad_packets() -> None:
    """A packet libopus rejects raises OpusPacketError; the next good packet still decodes."""
    pcm = tone(440, 0.2, 16000)
    encoder, decoder = OpusEncoder(16000), OpusDecoder(16000)
    packets = [encoder.encode(f) for f in frames(pcm, 16000)]
    assert decoder.decode(packets[0])
    # Code 2 with a first frame longer than the packet (RFC 6716 §3.2.3, R4): only libopus sees it.
    with pytest.raises(OpusPacketError, match="libopus could not decode the packet"):
        decoder.decode(bytes([0x08 << 3 | 2, 250]) + b"\x00" * 10)
    with pytest.raises(OpusPacketError, match="frame count of 0"):
        decoder.decode(bytes([0x08 << 3 | 3, 0]))
    assert decoder.decode(b"") == b""  # a lost packet (RFC 7587 §4.2): no audio, no flush
    rest = b"".join(decoder.decode(p) for p in packets[1:])
    assert len(rest) == len(pcm) - 640


def test_packets_decode_with_an_independent_decoder() -> None:
    """FFmpeg's own Opus decoder (not libopus) reads our packets: the framing is plain
    RFC 6716, one packet per 20 ms, as any consumer's decoder expects."""
    import av

    pcm = tone(440, 1.0, 48000)
    encoder = OpusEncoder(48000)
    decoder = av.CodecContext.create("opus", "r")  # FFmpeg's native implementation
    decoder.sample_rate, decoder.layout = 48000, "mono"
    out = []
    for frame in frames(pcm, 48000):
        for decoded in decoder.decode(av.Packet(encoder.encode(frame))):
            out.append(decoded.to_ndarray().reshape(-1))
    samples = np.concatenate(out)
    assert len(samples) == 48000
    as_int = (samples * 32768).clip(-32768, 32767).astype("<i2").tobytes()  # float planar
    assert segment_snr(pcm, as_int, 48000) > 15


def _threads() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("Threads:"))


def test_no_codec_threads() -> None:
    """Encoders and decoders start no threads (PyAV's encode() would start a filter graph's
    pool per encoder, one thread per core)."""
    pairs = [(OpusEncoder(16000), OpusDecoder(16000)) for _ in range(4)]
    before = _threads()
    for encoder, decoder in pairs:
        for frame in frames(tone(440, 0.1, 16000), 16000):
            decoder.decode(encoder.encode(frame))
    assert _threads() == before
