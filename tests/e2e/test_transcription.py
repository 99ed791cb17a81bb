"""Live transcription on real calls: SIPp plays real speech (the registry corpus,
phone band, PCMU RTP), the embedded Whisper tiny.en transcribes it, webhooks arrive
through the official SDK's control of the call."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from telnyx import UnprocessableEntityError

from callstream.transcription.models import resolve_model
from tests.audio import rtp_packets, write_pcap
from tests.corpus import clip, noise, phone_band, wer
from tests.e2e.conftest import Rig, make_rig
from tests.e2e.sipp import uac
from tests.helpers import free_udp_tcp_port, running_server
from tests.receiver import Delivery

pytestmark = pytest.mark.slow

RATE = 8000
SPEECH = ("sense_and_sensibility_01_austen_64kb-0870", "sense_and_sensibility_01_austen_64kb-0880")


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    data = tmp_path_factory.mktemp("e2e-transcription")
    # tiny.en under a second path: a final model that is not the interim one.
    (data / "tiny-copy").symlink_to(resolve_model("tiny.en", data_dir=data))
    models = json.dumps({"missing-model": str(data / "no-such-model"),
                         "tiny-copy": str(data / "tiny-copy")})
    with make_rig(data, (33000, 33999), {"CALLSTREAM_TRANSCRIPTION_MODELS": models}) as rig:
        yield rig


def silence(seconds: float) -> bytes:
    return b"\0\0" * int(seconds * RATE)


def _place(rig: Rig, name: str, pcm: bytes, hold_s: float) -> tuple[subprocess.Popen[bytes],
                                                                    str]:
    """SIPp calls the server and, once answered, plays ``pcm`` as PCMU."""
    workdir = rig.workdir / name
    workdir.mkdir()
    write_pcap(workdir / "call.pcap", rtp_packets(pcm, "PCMU"))
    proc = uac(rig.sip_target, "uac_call_pcap.xml", cwd=workdir, local_port=free_udp_tcp_port(),
               media_port=free_udp_tcp_port(), hold_ms=int(hold_s * 1000),
               service=f"+1555000{len(_seen):04d}")
    _procs.append(proc)
    initiated = rig.hooks.wait_for(
        lambda d: d.event_type == "call.initiated"
        and d.payload["call_control_id"] not in _seen, timeout=20)
    ccid = initiated.payload["call_control_id"]
    _seen.add(ccid)
    return proc, ccid


_seen: set[str] = set()
_procs: list[subprocess.Popen[bytes]] = []


@pytest.fixture(autouse=True)
def _reap_sipp() -> Iterator[None]:
    """A failed test leaves no SIPp behind."""
    yield
    while _procs:
        proc = _procs.pop()
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _transcripts(rig: Rig, ccid: str) -> list[Delivery]:
    return [d for d in rig.hooks.events("call.transcription")
            if d.payload["call_control_id"] == ccid]


def _code(info: pytest.ExceptionInfo[UnprocessableEntityError]) -> tuple[str, str | None]:
    error = info.value.body["errors"][0]  # type: ignore[index]
    return error["code"], (error.get("source") or {}).get("pointer")


def test_bridged_call_speech_is_transcribed_per_track(rig: Rig) -> None:
    speech_a = silence(3.0) + phone_band(clip(SPEECH[0])) + silence(0.4) + phone_band(
        clip(SPEECH[1])) + silence(2.0)
    speech_b = silence(4.0) + phone_band(clip("goforward")) + silence(2.0)
    hold = len(speech_a) / 2 / RATE + 1.0
    proc_a, a = _place(rig, "a", speech_a, hold)
    proc_b, b = _place(rig, "b", speech_b, hold)
    # A is answered with transcription of both tracks; B's voice reaches A once bridged.
    rig.sdk.calls.actions.answer(a, transcription=True, transcription_config={
        "transcription_engine": "B", "transcription_tracks": "both",
        "transcription_engine_config": {"transcription_engine": "B", "language": "en",
                                        "interim_results": True, "unknown_key": 1}})
    rig.sdk.calls.actions.answer(b)
    rig.hooks.wait_event("call.answered", b)
    rig.hooks.wait_event("call.answered", a)
    rig.sdk.calls.actions.bridge(a, call_control_id_to_bridge_with=b)
    assert proc_a.wait(40) == 0
    proc_b.wait(20)
    rig.hooks.wait_event("call.hangup", a)

    events = _transcripts(rig, a)
    data = [d.payload["transcription_data"] for d in events]
    inbound = [t for t in data if t["transcription_track"] == "inbound"]
    outbound = [t for t in data if t["transcription_track"] == "outbound"]
    finals_in = " ".join(t["transcript"] for t in inbound if t["is_final"])
    reference = clip(SPEECH[0]).reference + " " + clip(SPEECH[1]).reference
    assert wer(reference, finals_in) <= 0.15, finals_in
    first_final = next(i for i, t in enumerate(inbound) if t["is_final"])
    assert first_final > 0 and not inbound[0]["is_final"], "an interim comes before the final"
    finals_out = " ".join(t["transcript"] for t in outbound if t["is_final"])
    assert wer(clip("goforward").reference, finals_out) <= 0.25, finals_out
    for t in data:
        assert set(t) >= {"transcript", "is_final", "confidence", "transcription_track"}
        assert isinstance(t["confidence"], float) and 0.0 <= t["confidence"] <= 1.0
    assert all(d.payload["client_state"] is None for d in events)
    assert not _transcripts(rig, b), "B was never transcribed"


def test_noise_and_silence_yield_nothing_and_errors_follow_the_spec(rig: Rig) -> None:
    line = silence(1.5) + noise(4.0, RATE, level_db=-35.0) + silence(1.0)
    proc, ccid = _place(rig, "noise", line, len(line) / 2 / RATE + 0.5)
    actions = rig.sdk.calls.actions
    with pytest.raises(UnprocessableEntityError) as info:
        actions.start_transcription(ccid)
    assert _code(info) == ("90034", None)  # not answered yet
    actions.answer(ccid)
    rig.hooks.wait_event("call.answered", ccid)

    with pytest.raises(UnprocessableEntityError) as info:
        actions.start_transcription(ccid, transcription_engine_config={
            "transcription_engine": "Google", "language": "de"})
    assert _code(info) == ("10032", "/transcription_engine_config/language")
    with pytest.raises(UnprocessableEntityError) as info:
        actions.start_transcription(ccid, transcription_engine="B", transcription_engine_config={
            "transcription_engine": "B", "transcription_model": "missing-model"})
    assert _code(info) == ("10015", "/transcription_engine_config/transcription_model")
    assert "no-such-model" in info.value.body["errors"][0]["detail"]  # type: ignore[index]
    with pytest.raises(UnprocessableEntityError) as info:
        actions.start_transcription(ccid, transcription_tracks="sideways")  # type: ignore[arg-type]
    assert _code(info) == ("10032", "/transcription_tracks")

    actions.start_transcription(ccid, transcription_engine="Deepgram", transcription_tracks="both",
                                transcription_engine_config={
                                    "transcription_engine": "Deepgram",
                                    "transcription_model": "deepgram/nova-3",
                                    "interim_results": True})
    with pytest.raises(UnprocessableEntityError) as info:
        actions.start_transcription(ccid)
    assert _code(info) == ("90054", None)
    actions.stop_transcription(ccid, command_id="stop-1")
    actions.stop_transcription(ccid, command_id="stop-1")  # a repeat is ignored
    with pytest.raises(UnprocessableEntityError) as info:
        actions.stop_transcription(ccid)
    assert _code(info) == ("10015", None)
    actions.start_transcription(ccid, transcription_engine_config={
        "transcription_engine": "Google", "interim_results": True})

    assert proc.wait(30) == 0
    rig.hooks.wait_event("call.hangup", ccid)
    assert not _transcripts(rig, ccid)
    with pytest.raises(UnprocessableEntityError) as info:
        actions.stop_transcription(ccid)
    assert _code(info) == ("90018", None)


def test_two_pass_finals_come_from_the_final_model(rig: Rig) -> None:
    line = silence(1.5) + phone_band(clip("goforward")) + silence(2.0)
    proc, ccid = _place(rig, "two-pass", line, len(line) / 2 / RATE + 0.5)
    actions = rig.sdk.calls.actions
    actions.answer(ccid)
    rig.hooks.wait_event("call.answered", ccid)
    # final_model is callstream's own key: the SDK's typed config would drop it.
    start = f"/v2/calls/{ccid}/actions/transcription_start"
    with rig.server.client() as http:
        refused = http.post(start, json={"transcription_engine_config": {
            "transcription_engine": "Google", "final_model": "nope"}})
        assert refused.status_code == 422
        error = refused.json()["errors"][0]
        assert (error["code"], error["source"]["pointer"]) == (
            "10032", "/transcription_engine_config/final_model")
        http.post(start, json={"transcription_engine_config": {
            "transcription_engine": "Google", "interim_results": True,
            "final_model": "tiny-copy"}}).raise_for_status()
    assert proc.wait(30) == 0
    rig.hooks.wait_event("call.hangup", ccid)
    data = [d.payload["transcription_data"] for d in _transcripts(rig, ccid)]
    finals = " ".join(t["transcript"] for t in data if t["is_final"])
    assert wer(clip("goforward").reference, finals) <= 0.25, finals
    assert f"call {ccid}: transcription started (Google engine, model tiny.en, finals " \
           "tiny-copy, inbound track)" in rig.server.log()
    with rig.server.client() as client:
        assert "callstream_transcription_finals_on_fast_model_total" in client.get(
            "/metrics").text


def test_server_refuses_to_start_without_its_model(tmp_path: Path) -> None:
    env = {"CALLSTREAM_TRANSCRIPTION_MODEL": str(tmp_path / "nowhere")}
    with pytest.raises(RuntimeError) as info, running_server(tmp_path / "data", env=env):
        pass
    assert "not a CTranslate2 Whisper model directory" in str(info.value)


def test_metrics_count_transcription(rig: Rig) -> None:
    with rig.server.client() as client:
        text = client.get("/metrics").text
    finals = [line for line in text.splitlines()
              if line.startswith('callstream_transcription_segments_total{kind="final"}')]
    assert finals and float(finals[0].split()[-1]) >= 2  # the bridged call's finals
    assert "callstream_transcription_dropped_frames_total" in text
    assert "callstream_transcription_interims_skipped_total" in text
