"""Audio through the server: SIPp plays real speech into one leg, `callstream call`
records the second leg the application bridged to it. What arrives is what was sent:
bit-exact for PCMU->PCMU and PCMA->PCMA, a measured SNR where the bridge transcodes.

The four pairs run at once (four bridges on one server), which also keeps the
suite short."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
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
#: (SIPp's codec, the recording caller's codec)
PAIRS = [("PCMU", "PCMU"), ("PCMA", "PCMA"), ("PCMU", "G722"), ("PCMU", "L16")]
SNR_FLOOR_DB = 20.0


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    yield from media_rig(tmp_path_factory)


def _sipp_into_caller(rig: Rig, workdir: Path, sipp_codec: str,
                      caller_codec: str) -> tuple[bytes, Path, dict[str, object]]:
    """SIPp (``sipp_codec``) plays speech; the caller leg (``caller_codec``) records it."""
    tag = f"{sipp_codec}-{caller_codec}".lower()
    workdir.mkdir()
    pcm = clip("beckett", SECONDS)
    speech_pcap(workdir / "speech.pcap", pcm, sipp_codec)
    recording = workdir / "heard.wav"
    caller = start_caller(f"sip:rec-{tag}@{rig.sip_target}", "--record", str(recording),
                          "--codec", caller_codec, "--timeout", "20", "-q")
    try:
        caller_leg = incoming(rig, f"rec-{tag}")
        answer(rig, caller_leg)
        sipp = uac(rig.sip_target, "uac_pcap.xml", cwd=workdir,
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


def test_bridged_speech_arrives_as_sent(rig: Rig, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    with ThreadPoolExecutor(len(PAIRS)) as pool:
        futures = {pair: pool.submit(_sipp_into_caller, rig, tmp_path / "-".join(pair), *pair)
                   for pair in PAIRS}
        results = {pair: future.result() for pair, future in futures.items()}
    with capsys.disabled():
        for (sipp_codec, caller_codec), (sent, recording, summary) in results.items():
            heard, rate = read_wav(recording)
            assert rate == get_codec(caller_codec).sample_rate
            label = f"SIPp {sipp_codec} -> bridge -> {caller_codec} leg"
            if sipp_codec == caller_codec:
                # Same codec both legs: every frame arrives sample for sample.
                frames = assert_bit_exact(sent, recording, label)
                assert frames >= SECONDS * 50 - 1
                assert summary["packets_received"] >= SECONDS * 50
            else:
                snr = snr_db(sent, resample(heard, rate, 8000))
                print(f"[measured] {label}: SNR {snr:.1f} dB (floor {SNR_FLOOR_DB:g})")
                assert snr >= SNR_FLOOR_DB
