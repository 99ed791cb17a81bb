"""The console's softphone in headless Chromium: sign in, Call, the application answers
with a bot and transcription, the meters move, the transcript of both sides shows beside
it, the keypad sends DTMF, Mute and Hang up work.

Set ``CALLSTREAM_SCREENSHOTS=1`` to refresh ``docs/img/softphone.png`` from this run.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from tests.e2e.conftest import Rig
from tests.webrtc.conftest import Page
from tests.webrtc.test_browser import tone_bot
from tests.ws_consumer import ws_consumer

pytestmark = pytest.mark.slow

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "img" / "softphone.png"
SLOW_MS = 120_000


def test_softphone_calls_talks_dials_and_hangs_up(rig: Rig, page: Page, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    page.set_viewport_size({"width": 1280, "height": 1000})
    page.goto(rig.server.base_url + "/console")
    page.fill("#api-key", rig.server.api_key)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#link")).to_have_text("live")

    page.fill("#phone-from", "softphone-user")
    page.click("#phone-call")
    expect(page.locator("#phone-state")).to_have_text(re.compile(r"in call"), timeout=SLOW_MS)
    initiated = rig.hooks.wait_for(lambda d: d.event_type == "call.initiated"
                                   and d.payload["from"] == "softphone-user", timeout=60)
    ccid = initiated.payload["call_control_id"]
    with ws_consumer() as bot:
        bot.reply = tone_bot
        rig.sdk.calls.actions.answer(
            ccid, stream_url=bot.url, stream_track="both_tracks",
            stream_bidirectional_mode="rtp", stream_bidirectional_codec="PCMU",
            transcription=True, transcription_config={"transcription_tracks": "both"})
        rig.hooks.wait_event("call.answered", ccid, timeout=60)
        # What the call plays (the bot's tone) moves the "heard" meter; the page's speech
        # the "mic" meter, and it is transcribed as "you".
        expect(page.locator("#phone-out-db")).to_have_text(re.compile(r"-?\d+\.\d dBFS"),
                                                            timeout=SLOW_MS)
        expect(page.locator("#phone-in-db")).to_have_text(re.compile(r"-?\d+\.\d dBFS"),
                                                           timeout=SLOW_MS)
        mine = page.locator("#transcript li.final", has_text="you")
        expect(mine.first).to_be_visible(timeout=SLOW_MS)
        if os.environ.get("CALLSTREAM_SCREENSHOTS"):
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(tmp_path / "softphone.png"), full_page=True)
            shutil.copyfile(tmp_path / "softphone.png", SCREENSHOT)

        page.click('#keypad button[data-key="7"]')
        rig.hooks.wait_for(lambda d: d.event_type == "call.dtmf.received"
                           and d.payload["call_control_id"] == ccid
                           and d.payload["digit"] == "7", timeout=30)

        page.click("#phone-mute")
        expect(page.locator("#phone-mute")).to_have_text("Unmute")
        expect(page.locator("#phone-in-db")).to_have_text("silent", timeout=10_000)
        page.click("#phone-mute")
        expect(page.locator("#phone-mute")).to_have_text("Mute")

        page.click("#phone-hangup")
        hangup = rig.hooks.wait_event("call.hangup", ccid, timeout=30)
        assert hangup.payload["hangup_source"] == "caller"
        expect(page.locator("#phone-state")).to_have_text("hung up")
        expect(page.locator("#phone-call")).to_be_enabled()
