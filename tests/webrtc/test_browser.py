"""A browser calls in over WebRTC: the application answers with a bidirectional stream to a
bot and transcription; the browser's speech is transcribed, the bot's tone reaches the
browser, the page's DTMF and hang-up arrive as webhooks; a browser leg bridged to a SIP leg
carries audio both ways."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest

from callstream.media.codecs import get_codec
from tests.audio import tone
from tests.corpus import wer
from tests.e2e.conftest import Rig
from tests.webrtc.conftest import Page, mic_reference
from tests.ws_consumer import Connection, Consumer, ws_consumer

pytestmark = pytest.mark.slow

#: The bot's tone, sent as PCMU when its stream starts.
BOT_TONE_HZ = 1000.0


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
        deadline = time.monotonic() + 60
        while energy(page) <= 0.01 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert energy(page) > 0.01, "the browser heard the bot"

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
