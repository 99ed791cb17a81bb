"""examples/websockets_bot: its greeting and its echo reach a real caller, bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from callstream.media.codecs import get_codec
from tests.audio import write_wav
from tests.e2e.calling import (
    JITTER_BUFFER_MS,
    assert_bit_exact,
    clip,
    incoming,
    start_caller,
    through_codec,
)
from tests.e2e.conftest import make_rig
from tests.examples.procs import example, load_example, python_example

pytestmark = pytest.mark.slow

bot = load_example("websockets_bot/bot.py")


def silence(seconds: float) -> bytes:
    return bytes(2 * int(seconds * 8000))


def test_ulaw_encoder_matches_callstreams_bit_for_bit() -> None:
    every = np.arange(-32768, 32768, dtype=np.int16)
    assert bot.ulaw_encode(every) == get_codec("PCMU").new_encoder().encode(every.tobytes())


def test_greeting_is_whole_frames_and_defaults_to_a_beep(tmp_path: Path) -> None:
    odd = write_wav(tmp_path / "odd.wav", clip(seconds=1.0)[:-6], 8000)
    assert len(bot.load_greeting(odd)) == 160 * 49  # the partial last frame is dropped
    wide = write_wav(tmp_path / "wide.wav", clip(seconds=1.0, rate=16000), 16000)
    assert len(bot.load_greeting(wide)) == 160 * 50  # resampled to 8 kHz
    if not bot.DEFAULT_GREETING.exists():
        assert len(bot.load_greeting(None)) == 8000  # the one-second beep


def test_bot_greets_the_caller_then_echoes_them(tmp_path: Path) -> None:
    greeting = clip("two_cities", seconds=1.5)
    speech = clip("beckett", seconds=3.0)
    # The caller waits through the greeting, speaks, then listens for its echo.
    write_wav(tmp_path / "greeting.wav", greeting, 8000)
    write_wav(tmp_path / "caller.wav", silence(3.0) + speech + silence(2.5), 8000)
    recording = tmp_path / "heard.wav"

    with example(*python_example("websockets_bot/bot.py", "--port", "0", "--greeting",
                                 str(tmp_path / "greeting.wav"), "--echo-delay", "0.5")) as proc, \
         make_rig(tmp_path / "data", (34000, 34999),
                  {"CALLSTREAM_JITTER_BUFFER_MS": JITTER_BUFFER_MS}) as rig:
        url = proc.wait_for(r"listening on (ws://\S+)").group(1)
        caller = start_caller(f"sip:bot@{rig.sip_target}", "--play", str(tmp_path / "caller.wav"),
                              "--record", str(recording), "--codec", "PCMU")
        try:
            ccid = incoming(rig, "bot")
            rig.sdk.calls.actions.answer(
                ccid, stream_url=url, stream_codec="PCMU", stream_bidirectional_mode="rtp",
                stream_bidirectional_codec="PCMU")
            code, summary, err = caller.finish(60)
        finally:
            caller.kill()
        assert code == 0 and summary["status"] == "answered", err
        proc.wait_for(r"stop: call .* ended \((\d+) frames echoed\)", timeout=20)

    printed = proc.output()
    assert f"start: call {ccid}" in printed and "PCMU/8000" in printed
    assert "mark 'greeting' played" in printed and "echoing the caller 0.5 s later" in printed
    # What the bot sent is what the caller heard: the greeting, then the caller's own words.
    assert_bit_exact(get_codec("PCMU").new_decoder().decode(bot.ulaw_encode(
        np.frombuffer(greeting, "<i2"))), recording, "bot greeting")
    assert_bit_exact(through_codec(speech, "PCMU"), recording, "bot echo")
