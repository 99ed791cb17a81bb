"""examples/websockets_bot: its greeting and its echo reach a real caller, bit for bit."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import numpy as np
import pytest
from websockets.asyncio.client import connect

from callstream.media.codecs import get_codec
from tests.audio import read_wav, write_wav
from tests.e2e.calling import (
    JITTER_BUFFER_MS,
    assert_bit_exact,
    clip,
    contains,
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
    default = bot.default_greeting()
    if default is None:
        assert len(bot.load_greeting(None)) == 8000  # the one-second beep
    else:  # callstream.demo.audio's greeting
        assert len(bot.load_greeting(None)) == len(bot.load_greeting(default)) > 8000


def test_bot_greets_the_caller_then_echoes_them(tmp_path: Path) -> None:
    greeting = clip("two_cities", seconds=1.5)
    speech = clip("beckett", seconds=3.0)
    # The caller waits through the greeting, speaks, then listens for its echo.
    write_wav(tmp_path / "greeting.wav", greeting, 8000)
    write_wav(tmp_path / "caller.wav", silence(3.0) + speech + silence(2.5), 8000)
    recording = tmp_path / "heard.wav"

    with example(*python_example("websockets_bot/bot.py", "--port", "0", "--greeting",
                                 str(tmp_path / "greeting.wav"), "--echo-delay", "0.5")) as proc, \
         make_rig(tmp_path / "data", (38600, 38699),
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


async def test_bad_frames_get_ignored_and_the_call_goes_on(tmp_path: Path) -> None:
    """Garbage from the stream (not JSON, no event, bad base64, wrong types) is printed and
    skipped; the same connection then gets its greeting and mark as usual."""
    write_wav(tmp_path / "greeting.wav", clip(seconds=0.5), 8000)
    with example(*python_example("websockets_bot/bot.py", "--port", "0", "--greeting",
                                 str(tmp_path / "greeting.wav"))) as proc:
        url = proc.wait_for(r"listening on (ws://\S+)").group(1)
        async with connect(url) as ws:
            for bad in ("not json", "[1, 2]", '{"no": "event"}', '{"event": "start"}',
                        '{"event": "media", "media": {"payload": "@@@"}}',
                        '{"event": "dtmf", "dtmf": 5}', b"\x00binary"):
                await ws.send(bad)
            await ws.send(json.dumps({"event": "connected", "version": "1.0.0"}))
            await ws.send(json.dumps({"event": "start", "stream_id": "s1", "start": {
                "call_control_id": "v3:test", "media_format": {
                    "encoding": "PCMU", "sample_rate": 8000, "channels": 1}}}))
            sent = [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(2)]
        assert sent[0]["event"] == "media" and len(base64.b64decode(
            sent[0]["media"]["payload"])) == 4000
        assert sent[1] == {"event": "mark", "mark": {"name": "greeting"}}
        proc.wait_for(r"greeting sent \(0\.5 s\)")
    printed = proc.output()
    assert printed.count("ignoring a malformed message") == 6, printed
    assert "ignoring a binary frame (7 bytes)" in printed
    assert "start: call v3:test, stream s1, PCMU/8000" in printed


def test_hash_key_makes_the_bot_send_clear(tmp_path: Path) -> None:
    """The caller presses # one second into a 4 s greeting: the bot sends `clear`, so the
    start of the greeting is heard and its last two seconds never are."""
    greeting = clip("two_cities", seconds=4.0)
    write_wav(tmp_path / "greeting.wav", greeting, 8000)
    write_wav(tmp_path / "caller.wav", silence(6.0), 8000)
    recording = tmp_path / "heard.wav"
    with example(*python_example("websockets_bot/bot.py", "--port", "0", "--greeting",
                                 str(tmp_path / "greeting.wav"))) as proc, \
         make_rig(tmp_path / "data", (38600, 38699),
                  {"CALLSTREAM_JITTER_BUFFER_MS": JITTER_BUFFER_MS}) as rig:
        url = proc.wait_for(r"listening on (ws://\S+)").group(1)
        caller = start_caller(f"sip:clear@{rig.sip_target}", "--play", str(tmp_path / "caller.wav"),
                              "--record", str(recording), "--codec", "PCMU", "--dtmf", "#",
                              "--dtmf-delay", "1.0")
        try:
            ccid = incoming(rig, "clear")
            rig.sdk.calls.actions.answer(
                ccid, stream_url=url, stream_codec="PCMU", stream_bidirectional_mode="rtp",
                stream_bidirectional_codec="PCMU")
            code, summary, err = caller.finish(60)
        finally:
            caller.kill()
        assert code == 0 and summary["dtmf_sent"] == "#", err
        proc.wait_for(r"sent clear: queued audio dropped", timeout=20)
    heard, _ = read_wav(recording)
    sent = get_codec("PCMU").new_decoder().decode(bot.ulaw_encode(np.frombuffer(greeting, "<i2")))
    frames = [sent[k * 320:(k + 1) * 320] for k in range(len(sent) // 320)]
    assert contains(heard, frames[25])  # 0.5 s in: played before the key
    late = [k for k in range(100, 200) if contains(heard, frames[k])]
    assert not late, f"frames {late} of the greeting played after clear"
