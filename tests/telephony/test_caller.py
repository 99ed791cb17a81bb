"""The pure parts of `callstream call`: options, WAV loading, the recorder, the plan."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest

from callstream.media.hub import AudioFrame
from callstream.sip.offer_answer import G722, L16_16K, PCMA, PCMU
from callstream.telephony.caller import (
    DEFAULT_MAX_DURATION,
    CallerError,
    CallPlan,
    CallSummary,
    Recorder,
    load_wav,
    normalize_target,
    parse_codecs,
)


def test_parse_codecs_keeps_order_and_accepts_commas() -> None:
    assert parse_codecs(["g722,PCMA", "pcmu", "PCMA"]) == (G722, PCMA, PCMU)
    assert parse_codecs(["L16"]) == (L16_16K,)
    with pytest.raises(CallerError, match="unknown codec 'OPUS'"):
        parse_codecs(["PCMU,OPUS"])
    with pytest.raises(CallerError, match="no codec"):
        parse_codecs([" , "])


def test_normalize_target() -> None:
    assert normalize_target("127.0.0.1:5070").serialize() == "sip:127.0.0.1:5070"
    uri = normalize_target("sip:bob@example.com;transport=tcp")
    assert (uri.user, uri.host, uri.transport) == ("bob", "example.com", "tcp")
    assert normalize_target("alice@10.0.0.1").user == "alice"
    for bad in ("sip:bob@exa mple.com", "sips:bob@example.com", "tel:+15550001111",
                "sip:bob@host;transport=sctp", "sip:bob@host:99999"):
        with pytest.raises(CallerError):
            normalize_target(bad)


def _wav(path: Path, raw: bytes, rate: int, width: int, channels: int = 1) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(raw)
    return path


def test_load_wav_sample_widths_and_channels(tmp_path: Path) -> None:
    values = np.array([0, 16384, -16384, 32767, -32768], dtype="<i2")
    pcm, rate = load_wav(_wav(tmp_path / "16.wav", values.tobytes(), 8000, 2))
    assert rate == 8000 and np.array_equal(np.frombuffer(pcm, "<i2"), values)
    # 8-bit is unsigned; 24 and 32-bit keep the top 16 bits.
    pcm, _ = load_wav(_wav(tmp_path / "8.wav", bytes([128, 192, 64]), 8000, 1))
    assert list(np.frombuffer(pcm, "<i2")) == [0, 16384, -16384]
    raw24 = b"".join((int(v) * 256).to_bytes(3, "little", signed=True) for v in values[:3])
    pcm, _ = load_wav(_wav(tmp_path / "24.wav", raw24, 8000, 3))
    assert list(np.frombuffer(pcm, "<i2")) == [0, 16384, -16384]
    pcm, _ = load_wav(_wav(tmp_path / "32.wav", (values[:3].astype("<i4") << 16).tobytes(),
                           8000, 4))
    assert list(np.frombuffer(pcm, "<i2")) == [0, 16384, -16384]
    stereo = np.array([1000, 3000, -2000, -4000], dtype="<i2").tobytes()
    pcm, _ = load_wav(_wav(tmp_path / "st.wav", stereo, 8000, 2, channels=2))
    assert list(np.frombuffer(pcm, "<i2")) == [2000, -3000]


def test_load_wav_resamples(tmp_path: Path) -> None:
    t = np.arange(44100) / 44100
    tone = (8000 * np.sin(2 * np.pi * 440 * t)).astype("<i2")
    pcm, rate = load_wav(_wav(tmp_path / "cd.wav", tone.tobytes(), 44100, 2), 8000)
    out = np.frombuffer(pcm, "<i2").astype(float)
    assert rate == 8000 and abs(len(out) - 8000) <= 2
    spectrum = np.abs(np.fft.rfft(out[:8000]))
    assert abs(int(np.argmax(spectrum)) - 440) <= 1


def test_load_wav_errors(tmp_path: Path) -> None:
    with pytest.raises(CallerError, match="can't read WAV"):
        load_wav(tmp_path / "missing.wav")
    (tmp_path / "junk.wav").write_bytes(b"RIFF nonsense")
    with pytest.raises(CallerError, match="can't read WAV"):
        load_wav(tmp_path / "junk.wav")


def _frame(pcm: bytes, at: float) -> AudioFrame:
    return AudioFrame("caller", "inbound", pcm, 8000, 1, at)


def test_recorder_keeps_time_across_gaps() -> None:
    rec = Recorder(8000)
    a, b = b"\x01\x00" * 160, b"\x02\x00" * 160
    rec.feed(_frame(a, 10.0))
    rec.feed(_frame(a, 10.02))
    rec.feed(_frame(b, 10.1))  # three ticks without audio in between
    assert rec.pcm == a + a + bytes(3 * 320) + b
    assert (rec.frames, rec.filled_frames) == (3, 3)


def test_plan_ends_at_duration_else_after_playback_else_at_max() -> None:
    plan = CallPlan(duration=5.0, plays=True)
    assert plan.next_deadline() is None and plan.due(1e9) is None  # not answered yet
    plan.answered(100.0)
    assert plan.dtmf_at == 100.5
    plan.playback_done(101.0)  # --duration wins over the end of --play
    assert plan.next_deadline() == 105.0
    assert plan.due(104.9) is None and plan.due(105.0) == "duration"

    plan = CallPlan(plays=True, linger=0.5)
    plan.answered(100.0)
    assert plan.next_deadline() == 100.0 + DEFAULT_MAX_DURATION
    plan.playback_done(103.0)
    plan.playback_done(104.0)  # only the first counts
    assert plan.next_deadline() == 103.5 and plan.due(103.5) == "played"

    plan = CallPlan(max_duration=60.0)  # neither: wait for the far end, up to the max
    plan.answered(0.0)
    assert plan.due(59.0) is None and plan.due(60.0) == "max_duration"


def test_summary_json_and_exit_code() -> None:
    summary = CallSummary(status="answered", sip_status=200, codec="PCMU", seconds=1.5)
    summary.extra["hangup"] = "played"
    data = json.loads(summary.to_json())
    assert data["status"] == "answered" and data["hangup"] == "played" and "extra" not in data
    assert "\n" not in summary.to_json() and summary.exit_code == 0
    assert CallSummary(status="failed", sip_status=486).exit_code == 1
