"""`callstream call` against callstream itself and against SIPp."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from callstream.telephony.caller import load_wav
from tests.audio import read_wav, write_wav
from tests.e2e.calling import (
    answer,
    assert_bit_exact,
    bridge,
    clip,
    contains,
    events_for,
    incoming,
    match_frames,
    media_rig,
    run_caller,
    speech_pcap,
    start_caller,
    through_codec,
)
from tests.e2e.conftest import Rig
from tests.e2e.sipp import uas
from tests.helpers import free_udp_tcp_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    yield from media_rig(tmp_path_factory, rtp_ports=(35000, 35199))


def test_two_callers_bridged_hear_each_other(rig: Rig, tmp_path: Path) -> None:
    # Two voices, 4 s each, in WAVs at 16 kHz and 44.1 kHz: the caller resamples them
    # to PCMU's 8 kHz.
    voices = {"alice": ("beckett", 16000), "bob": ("two_cities", 44100)}
    callers = {}
    for name, (text, rate) in voices.items():
        write_wav(tmp_path / f"{name}.wav", clip(text, 4.0, rate), rate)
        callers[name] = start_caller(
            f"sip:{name}@{rig.sip_target}", "--play", str(tmp_path / f"{name}.wav"),
            "--record", str(tmp_path / f"{name}-heard.wav"), "--codec", "PCMU", "-q")
    try:
        legs = {name: incoming(rig, name) for name in callers}
        for ccid in legs.values():
            answer(rig, ccid)
        bridge(rig, legs["alice"], legs["bob"])
        results = {name: caller.finish() for name, caller in callers.items()}
    finally:
        for caller in callers.values():
            caller.kill()
    for code, summary, err in results.values():
        assert code == 0, err
        assert summary["status"] == "answered" and summary["codec"] == "PCMU"
        assert summary["hangup"] == "played" and summary["ended_by"] == "local"
        assert 4.0 <= summary["seconds"] < 6.0
        assert summary["packets_sent"] >= 4 * 50
    # Each heard the other: seconds 2 to 3 of the other's voice, sample for sample
    # as the other's PCMU encoder sent them.
    for me, other in (("alice", "bob"), ("bob", "alice")):
        heard, rate = read_wav(tmp_path / f"{me}-heard.wav")
        assert rate == 8000
        played, _ = load_wav(tmp_path / f"{other}.wav", 8000)
        sent = through_codec(played[: len(played) // 320 * 320], "PCMU")
        matched, inserted = match_frames(sent[2 * 16000:3 * 16000], heard)
        assert matched == 50 and inserted <= 10, f"{me} did not hear {other} ({inserted})"
        mine = through_codec(load_wav(tmp_path / f"{me}.wav", 8000)[0][:320 * 150], "PCMU")
        assert not contains(heard, mine[2 * 16000:3 * 16000])  # no echo of oneself


def test_call_a_sipp_uas_and_record_its_speech(tmp_path: Path) -> None:
    pcm = clip("beckett", 2.0)
    speech_pcap(tmp_path / "speech.pcap", pcm, "PCMU")
    port = free_udp_tcp_port()
    sipp = uas("uas_pcap.xml", cwd=tmp_path, port=port, media_port=free_udp_tcp_port(),
               extra=("-d", "2600"))
    recording = tmp_path / "heard.wav"
    code, summary, err = run_caller(f"sip:service@127.0.0.1:{port}", "--record",
                                    str(recording), "--dtmf-delay", "0", "-q")
    assert sipp.wait(30) == 0
    assert code == 0, err
    assert summary["status"] == "answered" and summary["codec"] == "PCMU"
    assert summary["ended_by"] == "remote"  # SIPp's BYE after its pcap
    assert summary["packets_received"] == 100
    assert_bit_exact(through_codec(pcm, "PCMU"), recording, "SIPp UAS -> callstream call")


def test_dtmf_digits_arrive_in_order(rig: Rig) -> None:
    caller = start_caller(f"sip:keys@{rig.sip_target}", "--dtmf", "12#", "--dtmf-delay", "0.2",
                          "--duration", "2", "--codec", "PCMA", "-q")
    try:
        ccid = incoming(rig, "keys")
        answer(rig, ccid)
        code, summary, err = caller.finish()
    finally:
        caller.kill()
    assert code == 0, err
    assert summary["dtmf_sent"] == "12#" and summary["codec"] == "PCMA"
    hangup = rig.hooks.wait_event("call.hangup", ccid)
    assert hangup.payload["hangup_source"] == "caller"
    assert [d.payload["digit"] for d in events_for(rig, "call.dtmf.received", ccid)] == [
        "1", "2", "#"]


def test_rejected_call_exits_nonzero_with_the_sip_status(rig: Rig) -> None:
    caller = start_caller(f"sip:busy@{rig.sip_target}", "-q")
    try:
        ccid = incoming(rig, "busy")
        rig.sdk.calls.actions.reject(ccid, cause="USER_BUSY")
        code, summary, err = caller.finish()
    finally:
        caller.kill()
    assert code == 1
    assert summary["status"] == "failed" and summary["sip_status"] == 486
    assert "486 Busy Here" in err
    hangup = rig.hooks.wait_event("call.hangup", ccid)
    assert hangup.payload["hangup_cause"] == "user_busy"


def test_unanswered_call_is_cancelled_at_timeout(rig: Rig) -> None:
    code, summary, err = run_caller(f"sip:nobody-home@{rig.sip_target}", "--timeout", "1.5",
                                    "-q")
    assert code == 1
    assert summary["status"] == "no_answer" and summary["sip_status"] == 487
    assert "no answer within 1.5 s" in err
    ccid = incoming(rig, "nobody-home")
    hangup = rig.hooks.wait_event("call.hangup", ccid)
    assert hangup.payload["hangup_cause"] == "originator_cancel"
    assert hangup.payload["hangup_source"] == "caller"


def test_bad_options_exit_2(tmp_path: Path) -> None:
    # The three at once: each is a process of its own, mostly Python starting.
    bad = [start_caller("sip:x@127.0.0.1:9", "--play", str(tmp_path / "nope.wav")),
           start_caller("sip:x@127.0.0.1:9", "--codec", "OPUS"),
           start_caller("sip:x@127.0.0.1:9", "--dtmf", "12x")]
    try:
        results = [caller.finish() for caller in bad]
    finally:
        for caller in bad:
            caller.kill()
    code, summary, err = results[0]
    assert code == 2 and not summary and "can't read WAV" in err
    code, _, err = results[1]
    assert code == 2 and "unknown codec 'OPUS'" in err
    code, _, err = results[2]
    assert code == 2 and "bad --dtmf" in err


def test_ctrl_c_hangs_up_an_answered_call_and_cancels_a_ringing_one(rig: Rig) -> None:
    # Answered: SIGINT sends BYE; the call counts as answered (exit 0).
    caller = start_caller(f"sip:interrupt-up@{rig.sip_target}", "-q")
    try:
        ccid = incoming(rig, "interrupt-up")
        answer(rig, ccid)
        rig.hooks.wait_event("call.answered", ccid)
        caller.proc.send_signal(signal.SIGINT)
        code, summary, err = caller.finish()
    finally:
        caller.kill()
    assert code == 0, err
    assert summary["hangup"] == "interrupted" and summary["ended_by"] == "local"
    hangup = rig.hooks.wait_event("call.hangup", ccid)
    assert hangup.payload["hangup_cause"] == "normal_clearing"
    assert hangup.payload["hangup_source"] == "caller"

    # Ringing: SIGINT sends CANCEL (exit 1, cancelled).
    caller = start_caller(f"sip:interrupt-ringing@{rig.sip_target}", "-q")
    try:
        ccid = incoming(rig, "interrupt-ringing")
        caller.proc.send_signal(signal.SIGINT)
        code, summary, err = caller.finish()
    finally:
        caller.kill()
    assert code == 1
    assert summary["status"] == "cancelled" and summary["sip_status"] == 487
    hangup = rig.hooks.wait_event("call.hangup", ccid)
    assert hangup.payload["hangup_cause"] == "originator_cancel"
