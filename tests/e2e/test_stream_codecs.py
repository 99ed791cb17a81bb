"""Wideband streams end to end: a real caller (`callstream call`, G.722 or PCMU) talks to a
real WebSocket consumer that talks back, with ``stream_codec`` and
``stream_bidirectional_codec`` L16, G722 or OPUS and ``stream_bidirectional_sampling_rate``
16000 (48000 for OPUS too). Both directions are measured against what was said, in
the middle of the call: waveform SNR over 0.5 s, and the spectral SNR of 20 ms frames over
2 s in 0.5 s blocks aligned one by one (a busy machine's jitter buffer may insert a frame;
Opus keeps the spectrum, not the waveform). The figures are printed as ``[measured]`` lines
(docs/streaming-bidirectional.md).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from telnyx import UnprocessableEntityError

from callstream.media.codecs import CodecInfo, get_codec, opus_codec
from tests.audio import read_wav, resample, segment_snr, spectral_snr, speech, write_wav
from tests.e2e.calling import incoming, media_rig, start_caller
from tests.e2e.conftest import Rig
from tests.ws_consumer import Consumer, ws_consumer

pytestmark = pytest.mark.slow

CALLER_SECONDS = 3.0
REPLY_SECONDS = 2.5
#: (caller codec, stream codec, stream_bidirectional_sampling_rate)
PATHS = [
    ("G722", "L16", 16000),
    ("G722", "G722", 16000),
    ("G722", "OPUS", 16000),
    ("G722", "OPUS", 48000),
    ("PCMU", "OPUS", 16000),
]
#: What the start frame says for each stream codec at each rate (spec §5.2).
REPORTED_RATE = {("L16", 16000): 16000, ("G722", 16000): 8000,
                 ("OPUS", 16000): 16000, ("OPUS", 48000): 48000}


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    yield from media_rig(tmp_path_factory, rtp_ports=(37400, 37599))


@pytest.fixture
def consumer() -> Iterator[Consumer]:
    with ws_consumer() as c:
        yield c


def _stream_codec(name: str, rate: int) -> CodecInfo:
    return opus_codec(rate) if name == "OPUS" else get_codec(name)


def _high_band(pcm: bytes, rate: int) -> float:
    """Share of the 0-8 kHz energy that is above 4 kHz (none survives an 8 kHz leg)."""
    spectrum = np.abs(np.fft.rfft(np.frombuffer(pcm, "<i2").astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(len(pcm) // 2, 1 / rate)
    return float(spectrum[(freqs > 4000) & (freqs < 8000)].sum() / spectrum[freqs < 8000].sum())


def _frames(pcm: bytes, rate: int) -> list[bytes]:
    step = 2 * rate // 50
    return [pcm[i:i + step] for i in range(0, len(pcm) - step + 1, step)]


@pytest.mark.parametrize(("caller_codec", "stream_codec", "rate"), PATHS,
                         ids=[f"{c}-caller-{s}-{r}" for c, s, r in PATHS])
def test_wideband_stream_both_ways(rig: Rig, consumer: Consumer, tmp_path: Path,
                                   caller_codec: str, stream_codec: str, rate: int) -> None:
    codec = _stream_codec(stream_codec, rate)
    audio_rate = codec.sample_rate  # G722: 16 kHz audio on an 8000 Hz clock
    call_rate = get_codec(caller_codec).sample_rate
    said = speech("beckett", call_rate)[: int(call_rate * CALLER_SECONDS) * 2]
    reply = speech("two_cities", audio_rate)[audio_rate * 4: audio_rate * 4
                                             + int(audio_rate * REPLY_SECONDS) * 2]
    write_wav(tmp_path / "said.wav", said, call_rate)
    recording = tmp_path / "heard.wav"
    user = f"codec-{caller_codec}-{stream_codec}-{rate}".lower()
    caller = start_caller(f"sip:{user}@{rig.sip_target}", "--codec", caller_codec,
                          "--play", str(tmp_path / "said.wav"), "--record", str(recording),
                          "--duration", str(CALLER_SECONDS + 1.5), "--timeout", "20", "-q")
    try:
        ccid = incoming(rig, user)
        rig.sdk.calls.actions.answer(
            ccid, stream_url=consumer.url, stream_track="inbound_track",
            stream_codec=stream_codec,  # type: ignore[arg-type]
            stream_bidirectional_mode="rtp",
            stream_bidirectional_codec=stream_codec,  # type: ignore[arg-type]
            stream_bidirectional_target_legs="self",
            # Not in answer's OAS schema (spec §12.12); callstream accepts it.
            extra_body={"stream_bidirectional_sampling_rate": rate})
        conn = consumer.wait_connection()
        conn.wait_for(lambda c: bool(c.of("start")))
        assert conn.of("start")[0]["start"]["media_format"] == {
            "encoding": stream_codec, "sample_rate": REPORTED_RATE[stream_codec, rate],
            "channels": 1}
        # The consumer talks back at once: one 20 ms payload per message, then a mark.
        # An Opus consumer also sends one broken packet first (a code 3 packet with no
        # frames): it gets an error frame and the call and stream go on.
        encoder = codec.new_encoder()
        payloads = [encoder.encode(f) for f in _frames(reply, audio_rate)]
        if stream_codec == "OPUS":
            payloads.insert(0, bytes([0x4B, 0x00]))
        consumer.send(conn, *[{"event": "media", "media": {
            "payload": base64.b64encode(p).decode()}} for p in payloads],
            {"event": "mark", "mark": {"name": "said"}})
        code, summary, err = caller.finish(timeout=40)
    finally:
        caller.kill()
    assert code == 0, err
    assert summary["codec"] == caller_codec
    assert conn.done.wait(10)
    assert [f["mark"]["name"] for f in conn.of("mark")] == ["said"]  # it all played
    errors = [f["payload"] for f in conn.of("error")]
    if stream_codec == "OPUS":
        assert [(e["code"], e["title"]) for e in errors] == [(100004, "invalid_media")]
        assert "frame count of 0" in errors[0]["detail"]
    else:
        assert not errors

    # Inbound: the consumer decodes what it got and hears the caller.
    payloads = [base64.b64decode(f["media"]["payload"]) for f in conn.of("media")]
    decoder = codec.new_decoder()
    got = b"".join(decoder.decode(p) for p in payloads)
    reference = resample(said, call_rate, audio_rate)
    inbound = (segment_snr(reference, got, audio_rate),
               spectral_snr(reference, got, audio_rate, 1.0))
    # Outbound: the caller's recording holds the consumer's reply.
    heard, heard_rate = read_wav(recording)
    assert heard_rate == call_rate
    reference = resample(reply, audio_rate, call_rate)
    outbound = (segment_snr(reference, heard, call_rate, 0.4),
                spectral_snr(reference, heard, call_rate, 3.0))
    print(f"\n[measured] {caller_codec} caller, {stream_codec} stream at {rate} Hz: "
          f"inbound SNR {inbound[0]:.1f} dB, spectral {inbound[1]:.1f} dB; "
          f"outbound SNR {outbound[0]:.1f} dB, spectral {outbound[1]:.1f} dB")
    # Wideband all the way: the 4-8 kHz band arrives both ways (a hop at 8 kHz leaves
    # ~1e-8 of it; Opus's SILK codes it coarsely: measured 45-60 % of what was sent).
    if caller_codec == "G722":
        for sent, sent_rate, arrived, arrived_rate in ((said, call_rate, got, audio_rate),
                                                       (reply, audio_rate, heard, call_rate)):
            assert _high_band(arrived, arrived_rate) > 0.2 * _high_band(sent, sent_rate)
    # Opus keeps the spectrum (measured 16-20 dB spectral, 6-8 dB waveform); the others both.
    for _, spectral in (inbound, outbound):
        assert spectral > 9
    if stream_codec != "OPUS":
        assert inbound[0] > 12 and outbound[0] > 12



@pytest.mark.parametrize(("body", "pointer", "detail"), [
    ({"stream_codec": "AMR-WB"}, "/stream_codec",
     "AMR-WB is not supported by this server; use PCMU, PCMA, G722, OPUS or L16."),
    ({"stream_bidirectional_codec": "AMR-WB"}, "/stream_bidirectional_codec",
     "AMR-WB is not supported by this server; use PCMU, PCMA, G722, OPUS or L16."),
    ({"stream_codec": "OPUS", "stream_bidirectional_sampling_rate": 22050},
     "/stream_bidirectional_sampling_rate",
     "OPUS runs at 8000, 16000, 24000, 48000 Hz; 22050 is not one of them."),
])
def test_what_stays_refused(rig: Rig, consumer: Consumer, body: dict[str, object],
                            pointer: str, detail: str) -> None:
    """AMR-WB (no maintained encoder) and Opus at a rate it lacks: 422 10015 naming the field."""
    with pytest.raises(UnprocessableEntityError) as info:
        rig.sdk.calls.actions.start_streaming(
            "v3:no-such-call", extra_body={"stream_url": consumer.url, **body})
    error = info.value.body["errors"][0]  # type: ignore[index]
    assert (error["code"], error["source"], error["detail"]) == (
        "10015", {"pointer": pointer}, detail)
