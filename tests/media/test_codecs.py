"""The codec registry and the transcoder."""

from __future__ import annotations

import pytest

from callstream.media.codecs import (
    G722,
    L16,
    L16_8K,
    PCMA,
    PCMU,
    CodecInfo,
    Transcoder,
    codec_for_payload_type,
    get_codec,
    registered_codecs,
)
from callstream.media.exceptions import CodecError, UnknownCodecError

from .helpers import aligned_snr, frames, samples, tone


@pytest.mark.parametrize(
    ("name", "codec"),
    [("PCMU", PCMU), ("pcma", PCMA), ("G722", G722), ("g722/8000", G722), ("L16/16000/1", L16)],
)
def test_lookup(name: str, codec: CodecInfo) -> None:
    assert get_codec(name) is codec


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (("OPUS",), "unknown codec 'OPUS'"),
        (("PCMU", 16000), "unknown codec 'PCMU' at 16000 Hz"),
        (("L16/abc",), "unknown codec 'L16/abc'"),
    ],
)
def test_unknown(args: tuple[str, int], text: str) -> None:
    with pytest.raises(UnknownCodecError) as info:
        get_codec(*args)
    assert str(info.value) == text
    assert isinstance(info.value, LookupError)


def test_static_payload_types() -> None:
    assert codec_for_payload_type(0) is PCMU
    assert codec_for_payload_type(8) is PCMA
    assert codec_for_payload_type(9) is G722
    assert codec_for_payload_type(96) is None
    assert registered_codecs()[0] is PCMU


def test_frame_arithmetic() -> None:
    assert (PCMU.frame_bytes, PCMU.pcm_frame_bytes, PCMU.frame_ticks) == (160, 320, 160)
    assert PCMA.samples_for(240) == 240  # a 30 ms packet
    assert G722.samples_for(160) == 320
    assert G722.ticks_for(240) == 240
    assert L16.samples_for(640) == 320


def test_codecs_build_fresh_state() -> None:
    assert G722.new_encoder() is not G722.new_encoder()


def test_passthrough_is_untouched() -> None:
    payload = b"\x01" * 160
    assert Transcoder(PCMU, PCMU).transcode(payload) is payload


def test_pcmu_to_g722_and_back() -> None:
    pcm8 = tone(700, 8000, 1.0)
    to_g722 = Transcoder(PCMU, G722)
    to_pcmu = Transcoder(G722, PCMU)
    out = b""
    for frame in frames(PCMU.new_encoder().encode(pcm8), 160):
        wide = to_g722.transcode(frame)
        assert len(wide) == 160
        out += to_pcmu.transcode(wide)
    snr, _ = aligned_snr(samples(pcm8), samples(PCMU.new_decoder().decode(out)), max_lag=800)
    assert snr > 20


def test_to_and_from_pcm_rates() -> None:
    to_pcm = Transcoder(PCMA, 16000)
    assert len(to_pcm.transcode(b"\xd5" * 160)) == 640
    from_pcm = Transcoder(24000, PCMU)
    assert len(from_pcm.transcode(bytes(960))) == 160
    assert Transcoder(8000, 8000).transcode(b"ab") == b"ab"


def test_odd_pcm_is_refused() -> None:
    with pytest.raises(CodecError, match="odd number of bytes"):
        Transcoder(8000, PCMU).transcode(b"abc")


@pytest.mark.parametrize("codec", [PCMU, PCMA, G722, L16, L16_8K], ids=lambda c: c.rtpmap)
def test_a_coder_called_stateless_gives_the_same_output_whatever_came_before(
        codec: CodecInfo) -> None:
    # The tick reuses encoded silence and leaves unheard decodes out on this promise.
    pcm = tone(440, codec.sample_rate, 0.2)
    chunk = codec.pcm_frame_bytes
    fresh_encoder, used_encoder = codec.new_encoder(), codec.new_encoder()
    fresh_decoder, used_decoder = codec.new_decoder(), codec.new_decoder()
    for frame in frames(pcm, chunk):
        used_decoder.decode(used_encoder.encode(frame))
    silence = bytes(chunk)
    payload = fresh_encoder.encode(silence)
    same = (used_encoder.encode(silence) == payload
            and used_decoder.decode(payload) == fresh_decoder.decode(payload))
    assert codec.new_encoder().stateless is codec.new_decoder().stateless is same
    assert same is (codec.name != "G722")
