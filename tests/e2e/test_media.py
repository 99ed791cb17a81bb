"""Audio through the server: SIPp plays real speech into one leg, `callstream call`
records the bridged second leg; what arrives is what was sent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from callstream.media.codecs import get_codec
from tests.audio import read_wav, resample, snr_db
from tests.e2e.calling import (
    answer,
    assert_bit_exact,
    bridge,
    clip,
    incoming,
    media_rig,
    speech_pcap,
    start_caller,
    through_codec,
)
from tests.e2e.conftest import Rig
from tests.e2e.sipp import uac
from tests.helpers import free_udp_tcp_port

pytestmark = pytest.mark.slow

SECONDS = 3.0
SIPP_CODECS = {"PCMU": "0", "PCMA": "8"}


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    yield from media_rig(tmp_path_factory)


def _sipp_into_caller(rig: Rig, tmp_path: Path, sipp_codec: str, caller_codec: str,
                      tag: str) -> tuple[bytes, Path, dict[str, object]]:
    """SIPp (``sipp_codec``) plays speech; the caller leg (``caller_codec``) records it."""
    pcm = clip("beckett", SECONDS)
    speech_pcap(tmp_path / "speech.pcap", pcm, sipp_codec)
    recording = tmp_path / "heard.wav"
    caller = start_caller(f"sip:rec-{tag}@{rig.sip_target}", "--record", str(recording),
                          "--codec", caller_codec, "--timeout", "20", "-q")
    try:
        caller_leg = incoming(rig, f"rec-{tag}")
        answer(rig, caller_leg)
        sipp = uac(rig.sip_target, "uac_pcap.xml", cwd=tmp_path,
                   local_port=free_udp_tcp_port(), media_port=free_udp_tcp_port(),
                   hold_ms=int(SECONDS * 1000) + 600, service=f"sipp-{tag}",
                   extra=("-key", "pt", SIPP_CODECS[sipp_codec], "-key", "codec", sipp_codec))
        sipp_leg = incoming(rig, f"sipp-{tag}")
        answer(rig, sipp_leg)
        bridge(rig, sipp_leg, caller_leg)
        assert sipp.wait(30) == 0
        rig.hooks.wait_event("call.hangup", sipp_leg)
        rig.sdk.calls.actions.hangup(caller_leg)
        code, summary, err = caller.finish()
    finally:
        caller.kill()
    assert code == 0, err
    assert summary["status"] == "answered" and summary["ended_by"] == "remote"
    assert summary["codec"] == caller_codec
    return through_codec(pcm, sipp_codec), recording, summary


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_same_codec_bridge_is_bit_exact(rig: Rig, tmp_path: Path, codec: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    sent, recording, summary = _sipp_into_caller(rig, tmp_path, codec, codec, codec.lower())
    assert summary["packets_received"] >= SECONDS * 50
    _, rate = read_wav(recording)
    assert rate == 8000
    with capsys.disabled():
        frames = assert_bit_exact(sent, recording, f"SIPp {codec} -> bridge -> {codec} leg")
    assert frames >= SECONDS * 50 - 1


@pytest.mark.parametrize("codec", ["G722", "L16"])
def test_wideband_leg_bridged_with_pcmu(rig: Rig, tmp_path: Path, codec: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    sent, recording, _ = _sipp_into_caller(rig, tmp_path, "PCMU", codec, codec.lower())
    heard, rate = read_wav(recording)
    assert rate == get_codec(codec).sample_rate == 16000
    snr = snr_db(sent, resample(heard, rate, 8000))
    with capsys.disabled():
        print(f"\n[measured] PCMU -> bridge -> {codec} leg: SNR {snr:.1f} dB")
    assert snr >= 20.0
