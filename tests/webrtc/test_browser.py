"""A browser calls in over WebRTC: the application answers with a bidirectional stream to a
bot and transcription; the browser's speech is transcribed, the bot's tone reaches the
browser, the page's DTMF and hang-up arrive as webhooks; a browser leg bridged to a SIP leg
carries audio both ways."""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from callstream.media.codecs import get_codec
from tests.audio import read_wav, tone, write_wav
from tests.corpus import wer
from tests.e2e.calling import bridge, incoming, start_caller
from tests.e2e.conftest import Rig
from tests.webrtc.conftest import LEAD_IN_SECS, OTHER_ORIGIN, OTHER_PORT, Page, mic_reference
from tests.ws_consumer import Connection, Consumer, ws_consumer

pytestmark = pytest.mark.slow

#: The bot's tone, sent as PCMU when its stream starts.
BOT_TONE_HZ = 1000.0
#: The page's tone in the L16 echo test.
ECHO_TONE_HZ = 700.0
#: The SIP caller's tone in the bridge test.
SIP_TONE_HZ = 600.0


def call_in(page: Page, rig: Rig, name: str) -> str:
    """The page places a call with a fresh token; returns its call_control_id."""
    with rig.server.client() as api:
        reply = api.post("/v2/webrtc/tokens", json={"from": name, "to": "bot"})
    assert reply.status_code == 201, reply.text
    token = reply.json()["data"]["token"]
    ccid: str = page.evaluate(
        """async (token) => {
            window.audio = new Audio(); window.audio.autoplay = true;
            window.call = await CallstreamWebRTC.call({token, audio: window.audio});
            return window.call.callControlId;
        }""", token)
    return ccid


def energy(page: Page) -> float:
    value: float = page.evaluate(
        """async () => {
            let energy = 0;
            (await window.call.pc.getStats()).forEach((r) => {
                if (r.type === "inbound-rtp" && r.kind === "audio") {
                    energy = r.totalAudioEnergy || 0;
                }
            });
            return energy;
        }""")
    return value


def dominant_hz(page: Page) -> float:
    """The loudest frequency of what the page hears (Web Audio analyser, 0.5 s)."""
    hz: float = page.evaluate(
        """async () => {
            const context = new AudioContext();
            const source = context.createMediaStreamSource(window.call.remoteStream);
            const analyser = context.createAnalyser();
            analyser.fftSize = 8192;
            source.connect(analyser);
            await new Promise((resolve) => setTimeout(resolve, 500));
            const bins = new Float32Array(analyser.frequencyBinCount);
            analyser.getFloatFrequencyData(bins);
            await context.close();
            let best = 1;
            for (let i = 1; i < bins.length; i++) if (bins[i] > bins[best]) best = i;
            return best * context.sampleRate / analyser.fftSize;
        }""")
    return hz


def wait_heard(page: Page, hz: float, timeout: float = 60.0) -> None:
    """Wait until the page hears ``hz`` as its loudest frequency (and some energy)."""
    deadline = time.monotonic() + timeout
    found = 0.0
    while time.monotonic() < deadline:
        if energy(page) > 0.01:
            found = dominant_hz(page)
            if abs(found - hz) < 30:
                return
        time.sleep(0.2)
    raise AssertionError(f"the page did not hear {hz} Hz (loudest: {found} Hz)")


def tone_bot(consumer: Consumer, conn: Connection, frame: dict[str, Any]) -> list[str]:
    if frame.get("event") != "start":
        return []
    pcmu = get_codec("PCMU").new_encoder().encode(tone(BOT_TONE_HZ, 20.0, 8000))
    return [json.dumps({"event": "media",
                        "media": {"payload": base64.b64encode(pcmu).decode()}})]


def test_browser_call_streams_transcribes_dtmf_and_hangs_up(rig: Rig, page: Page) -> None:
    with ws_consumer() as bot:
        bot.reply = tone_bot
        ccid = call_in(page, rig, "alice")
        initiated = rig.hooks.wait_event("call.initiated", ccid)
        assert initiated.payload["from"] == "alice"
        assert initiated.payload["to"] == "bot"
        assert initiated.payload["direction"] == "incoming"
        rig.sdk.calls.actions.answer(
            ccid, stream_url=bot.url, stream_track="both_tracks",
            stream_bidirectional_mode="rtp", stream_bidirectional_codec="PCMU",
            transcription=True,
            transcription_config={"transcription_tracks": "inbound"})
        answered = rig.hooks.wait_event("call.answered", ccid, timeout=60)
        assert answered.payload.get("codec") in (None, "OPUS")
        stream = bot.wait_connection(timeout=60)
        stream.wait_for(lambda c: len(c.of("media")) > 50, timeout=60)

        # The bot's tone reaches the browser.
        wait_heard(page, BOT_TONE_HZ)

        # The browser's speech is transcribed.
        reference = mic_reference()

        def heard() -> str:
            finals = [d.payload["transcription_data"] for d in rig.hooks.events(
                "call.transcription") if d.payload.get("call_control_id") == ccid]
            return " ".join(t["transcript"] for t in finals if t["is_final"])

        rig.hooks.wait_for(lambda _d: wer(reference, heard()) <= 0.2, timeout=120)

        # DTMF from the page.
        assert page.evaluate("window.call.sendDtmf('1#')")
        rig.hooks.wait_for(lambda d: d.event_type == "call.dtmf.received"
                           and d.payload["call_control_id"] == ccid
                           and d.payload["digit"] == "#", timeout=30)
        digits = [d.payload["digit"] for d in rig.hooks.events("call.dtmf.received")
                  if d.payload["call_control_id"] == ccid]
        assert digits == ["1", "#"]
        assert any(f.get("dtmf", {}).get("digit") == "1" for f in stream.of("dtmf"))

        # Hang-up from the page.
        page.evaluate("window.call.hangUp()")
        hangup = rig.hooks.wait_event("call.hangup", ccid, timeout=30)
        assert hangup.payload["hangup_source"] == "caller"
        assert hangup.payload["hangup_cause"] == "normal_clearing"


def echo_bot(consumer: Consumer, conn: Connection, frame: dict[str, Any]) -> list[str]:
    """Send every inbound media frame straight back."""
    media = frame.get("media")
    if frame.get("event") == "media" and isinstance(media, dict):
        return [json.dumps({"event": "media", "media": {"payload": media["payload"]}})]
    return []


def test_an_l16_bot_echo_reaches_the_browser_at_its_own_pitch(rig: Rig, page: Page) -> None:
    # The page sends a tone (not the microphone) and hears what an L16 bot echoes. The
    # stream's L16 is the leg's 16 kHz: a bot that plays it back declares that rate
    # (stream_bidirectional_sampling_rate defaults to 8000, which would play the echo an
    # octave low and twice as long, so its queue and delay would grow without end).
    with rig.server.client() as api:
        reply = api.post("/v2/webrtc/tokens", json={"from": "echo", "to": "bot"})
    assert reply.status_code == 201, reply.text
    ccid: str = page.evaluate(
        """async ([token, hz]) => {
            const context = new AudioContext();
            const osc = context.createOscillator();
            osc.frequency.value = hz;
            const dest = context.createMediaStreamDestination();
            osc.connect(dest);
            osc.start();
            window.audio = new Audio(); window.audio.autoplay = true;
            window.call = await CallstreamWebRTC.call(
                {token, stream: dest.stream, audio: window.audio});
            return window.call.callControlId;
        }""", [reply.json()["data"]["token"], ECHO_TONE_HZ])
    with ws_consumer() as bot:
        bot.reply = echo_bot
        rig.hooks.wait_event("call.initiated", ccid)
        rig.sdk.calls.actions.answer(
            ccid, stream_url=bot.url, stream_track="inbound_track", stream_codec="L16",
            stream_bidirectional_mode="rtp", stream_bidirectional_codec="L16",
            extra_body={"stream_bidirectional_sampling_rate": 16000})
        stream = bot.wait_connection(timeout=60)
        stream.wait_for(lambda c: len(c.of("media")) > 50, timeout=60)
        (start,) = stream.of("start")
        assert start["start"]["media_format"] == {
            "encoding": "L16", "sample_rate": 16000, "channels": 1}
        wait_heard(page, ECHO_TONE_HZ)
        assert not stream.of("error")
        page.evaluate("window.call.hangUp()")
        rig.hooks.wait_event("call.hangup", ccid, timeout=30)


def test_browser_leg_bridged_to_a_sip_leg_carries_audio_both_ways(
        rig: Rig, page: Page, tmp_path: Path) -> None:
    recording = tmp_path / "sip-heard.wav"
    wav = write_wav(tmp_path / "tone.wav", tone(SIP_TONE_HZ, 30.0, 16000), 16000)
    caller = start_caller(f"sip:sip-side@{rig.sip_target}", "--play", str(wav), "--record",
                          str(recording), "--codec", "G722", "--duration", "25", "-q")
    try:
        sip_call = incoming(rig, "sip-side", timeout=30)
        mic_started = time.monotonic()
        browser_call = call_in(page, rig, "bob")
        rig.hooks.wait_event("call.initiated", browser_call)
        rig.sdk.calls.actions.answer(sip_call)
        rig.sdk.calls.actions.answer(browser_call)
        rig.hooks.wait_event("call.answered", sip_call, timeout=60)
        rig.hooks.wait_event("call.answered", browser_call, timeout=60)
        bridge(rig, browser_call, sip_call, timeout=30)
        wait_heard(page, SIP_TONE_HZ)  # SIP -> browser
        # Browser -> SIP: let the page's microphone get through its silence into speech.
        time.sleep(max(0.0, mic_started + LEAD_IN_SECS + 4.0 - time.monotonic()))
        rig.sdk.calls.actions.hangup(sip_call)
        # The browser's leg stays up until it is hung up; the API ends it too, and the
        # page sees its connection close.
        rig.sdk.calls.actions.hangup(browser_call)
        hangup = rig.hooks.wait_event("call.hangup", browser_call, timeout=30)
        assert hangup.payload["hangup_source"] == "callee"
        page.wait_for_function("window.call.ended", timeout=30_000)
    finally:
        code, _summary, err = caller.finish(timeout=60)
    assert code == 0, err
    pcm, _rate = read_wav(recording)
    samples = np.frombuffer(pcm, "<i2")
    assert np.abs(samples).max() > 2000, "the SIP caller heard the browser's speech"


def test_closing_the_peer_connection_hangs_up(rig: Rig, page: Page) -> None:
    ccid = call_in(page, rig, "carol")
    rig.hooks.wait_event("call.initiated", ccid)
    rig.sdk.calls.actions.answer(ccid)
    rig.hooks.wait_event("call.answered", ccid, timeout=60)
    page.evaluate("window.call.pc.close()")  # no DELETE: the connection just goes away
    hangup = rig.hooks.wait_event("call.hangup", ccid, timeout=60)
    assert hangup.payload["hangup_source"] == "caller"


def test_the_documented_example_page_calls_and_hangs_up(rig: Rig, page: Page) -> None:
    """docs/webrtc.md's page, as written, with its backend's token route stood in for."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "webrtc.md").read_text()
    html = doc.split("```html\n", 1)[1].split("```", 1)[0]
    assert len(html.strip().splitlines()) <= 16, "the example stays short"
    with rig.server.client() as api:
        token = api.post("/v2/webrtc/tokens", json={"from": "example"}).json()["data"]["token"]
    page.route("**/my-backend/webrtc-token",
               lambda route: route.fulfill(json={"token": token}))
    page.set_content(html)
    page.click("#talk")
    initiated = rig.hooks.wait_for(lambda d: d.event_type == "call.initiated"
                                   and d.payload["from"] == "example", timeout=60)
    ccid = initiated.payload["call_control_id"]
    rig.sdk.calls.actions.answer(ccid)
    rig.hooks.wait_event("call.answered", ccid, timeout=60)
    page.wait_for_selector("#bye:enabled")
    page.click("#bye")
    assert rig.hooks.wait_event("call.hangup", ccid).payload["hangup_source"] == "caller"
    page.wait_for_selector("#talk:enabled")


def test_a_page_on_an_allowed_other_origin_calls_in(rig: Rig, page: Page) -> None:
    """CORS: a shop's page (another origin) loads the client from the server and calls."""
    server = rig.server.base_url
    html = f'<script src="{server}/static/callstream-webrtc.js"></script><p>shop</p>'.encode()

    class Shop(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", str(len(html)))
            self.end_headers()
            self.wfile.write(html)

        def log_message(self, *args: Any) -> None:
            pass

    shop = ThreadingHTTPServer(("127.0.0.1", OTHER_PORT), Shop)
    thread = threading.Thread(target=shop.serve_forever, daemon=True)
    thread.start()
    try:
        page.goto(OTHER_ORIGIN + "/shop")
        page.wait_for_function("window.CallstreamWebRTC !== undefined")
        with rig.server.client() as api:
            token = api.post("/v2/webrtc/tokens", json={"from": "shopper"}).json()["data"][
                "token"]
        ccid = page.evaluate("""async ([token, server]) => {
            window.call = await CallstreamWebRTC.call({ token, server });
            return window.call.callControlId;
        }""", [token, server])
        rig.hooks.wait_event("call.initiated", ccid)
        page.evaluate("window.call.hangUp()")
        assert rig.hooks.wait_event("call.hangup", ccid).payload["hangup_source"] == "caller"
    finally:
        shop.shutdown()
        shop.server_close()
        thread.join(10)
