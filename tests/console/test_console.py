"""The console in headless Chromium (Playwright driving Debian's /usr/bin/chromium; never a
downloaded browser) against a real server: sign in with the API key form, watch a live
call placed by `callstream call` playing real speech, answer it, transcribe it and see the
transcript, hang it up from the page; the one-time link; the delivery log's redeliver.

Set ``CALLSTREAM_SCREENSHOTS=1`` to refresh ``docs/img/console.png`` from this run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.audio import speech, write_wav
from tests.e2e.calling import CallerProcess, incoming, start_caller
from tests.e2e.conftest import Rig, make_rig
from tests.ws_consumer import Connection, Consumer, ws_consumer

#: In CI (`.ci/run` installs both) a missing browser or Playwright fails the run; on a
#: developer's machine without them the module is skipped.
IN_CI = bool(os.environ.get("CI"))
if IN_CI:
    import playwright.sync_api as playwright_sync
else:
    playwright_sync = pytest.importorskip("playwright.sync_api")
Page = playwright_sync.Page
expect = playwright_sync.expect

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
LINK = re.compile(r"console: (http://127\.0\.0\.1:\d+/console\?token=[\w-]+)")
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "img" / "console.png"
#: Generous: two shared cores, Whisper on the CPU beside the browser and the server.
SLOW_MS = 120_000


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    if not CHROMIUM.exists():
        missing = "Debian's chromium is not installed (apt-get install chromium)"
        if IN_CI:
            pytest.fail(missing)
        pytest.skip(missing)
    env = {"CALLSTREAM_CONSOLE_LOGIN_LINK_TTL_SECS": "900"}
    with make_rig(tmp_path_factory.mktemp("console"), (39400, 39599), env) as rig:
        yield rig


@pytest.fixture(scope="module")
def browser(rig: Rig) -> Iterator[object]:
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: object, tmp_path: Path) -> Iterator[Page]:
    """A fresh context (its own cookies: a fresh profile) per test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    context.set_default_timeout(30_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield page
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def sign_in(page: Page, rig: Rig) -> None:
    page.goto(rig.server.base_url + "/")
    expect(page).to_have_url(rig.server.base_url + "/console")
    expect(page.locator("#login")).to_be_visible()
    page.fill("#api-key", rig.server.api_key)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#console")).to_be_visible()
    expect(page.locator("#link")).to_have_text("live")


def echo(consumer: Consumer, conn: Connection, frame: dict[str, object]) -> list[str]:
    """A bidirectional bot that says back what the caller says."""
    media = frame.get("media")
    if frame.get("event") == "media" and isinstance(media, dict) and media.get(
            "track") == "inbound":
        return [json.dumps({"event": "media", "media": {"payload": media["payload"]}})]
    return []


@pytest.fixture
def caller(rig: Rig, tmp_path: Path) -> Iterator[list[CallerProcess]]:
    started: list[CallerProcess] = []
    yield started
    for proc in started:
        proc.kill()


def test_a_live_call_is_shown_transcribed_and_hung_up_from_the_page(
        rig: Rig, page: Page, caller: list[CallerProcess], tmp_path: Path) -> None:
    sign_in(page, rig)
    expect(page.locator("#no-calls")).to_be_visible()

    # Real speech, said twice after a second of silence: the caller plays it once answered.
    pcm = speech("beckett", 8000)
    wav = write_wav(tmp_path / "speech.wav", bytes(16000) + pcm + bytes(8000) + pcm, 8000)
    caller.append(start_caller(f"sip:console@{rig.sip_target}", "--play", str(wav),
                               "--codec", "PCMU", "--max-duration", "300", "-q"))
    ccid = incoming(rig, "console", timeout=30)

    card = page.locator(f'article.call[data-call="{ccid}"]')
    expect(card).to_be_visible()
    expect(card.locator(".state")).to_have_text("parked")
    expect(card.locator(".who")).to_contain_text("console")
    card.locator('button[data-action="answer"]').click()
    expect(card.locator(".state")).to_have_text("answered", timeout=SLOW_MS)
    rig.hooks.wait_event("call.answered", ccid)

    card.locator('button[data-action="transcription"]').click()
    expect(card.locator(".features")).to_contain_text("transcription", timeout=SLOW_MS)
    expect(card.locator('button[data-action="transcription"]')).to_have_text(
        "Stop transcription")

    # A stream to a real WebSocket bot that echoes the caller (the URL asked in a prompt),
    # and a fork to a real UDP socket.
    with ws_consumer() as bot, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as fork:
        bot.reply = echo
        fork.bind(("127.0.0.1", 0))
        fork.settimeout(30)
        page.once("dialog", lambda dialog: dialog.accept(bot.url))
        card.locator('button[data-action="stream"]').click()
        stream = bot.wait_connection(timeout=60)
        expect(card.locator(".features")).to_contain_text("stream", timeout=SLOW_MS)
        page.once("dialog", lambda dialog: dialog.accept(
            f"udp:127.0.0.1:{fork.getsockname()[1]}"))
        card.locator('button[data-action="fork"]').click()
        expect(card.locator(".features")).to_contain_text("fork", timeout=SLOW_MS)
        assert len(fork.recv(2048)) > 24, "the fork sends RTP behind its STREP header"

        # The caller's voice moves the inbound meter, the bot's echo the outbound one.
        for meter in card.locator(".meter .db").all():
            expect(meter).to_have_text(re.compile(r"-?\d+\.\d dBFS"), timeout=SLOW_MS)
        expect(card.locator(".time")).to_have_text(re.compile(r"talking \d+:\d\d"))

        final = page.locator("#transcript li.final .text",
                             has_text=re.compile(r"fail|tried", re.I))
        expect(final.first).to_be_visible(timeout=SLOW_MS)
        heard = " ".join(page.locator("#transcript li.final .text").all_inner_texts()).lower()
        assert "fail" in heard or "tried" in heard, heard
        expect(page.locator('#events li[data-event="call.transcription"]').first).to_be_visible()
        expect(page.locator('#events li[data-event="call.answered"]')).to_have_count(1)
        expect(page.locator("#deliveries tbody tr.delivered").first).to_be_visible(
            timeout=SLOW_MS)
        if os.environ.get("CALLSTREAM_SCREENSHOTS"):
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(tmp_path / "console.png"), full_page=True)
            shutil.copyfile(tmp_path / "console.png", SCREENSHOT)

        card.locator('button[data-action="stream"]').click()  # now "Stop stream"
        rig.hooks.wait_event("streaming.stopped", ccid, timeout=60)
        assert stream.done.wait(30), "the bot's connection was closed"
        card.locator('button[data-action="fork"]').click()  # now "Stop fork"
        rig.hooks.wait_event("call.fork.stopped", ccid, timeout=60)
        expect(card.locator(".features")).not_to_contain_text("stream", timeout=SLOW_MS)
        expect(card.locator(".features")).not_to_contain_text("fork")
        assert stream.of("media"), "the bot heard the call"

    card.locator('button[data-action="hangup"]').click()
    hangup = rig.hooks.wait_event("call.hangup", ccid, timeout=60)
    assert hangup.payload["hangup_source"] == "callee"
    expect(card).to_have_count(0, timeout=SLOW_MS)
    expect(page.locator('#events li[data-event="call.hangup"]')).to_contain_text(
        "normal_clearing")
    code, summary, err = caller[0].finish(timeout=60)
    assert code == 0, err
    assert summary["ended_by"] == "remote", summary


def test_redeliver_from_the_delivery_log(rig: Rig, page: Page) -> None:
    sign_in(page, rig)
    row = page.locator('#deliveries tbody tr.delivered', has_text="call.hangup").first
    expect(row).to_be_visible(timeout=SLOW_MS)
    delivery = row.get_attribute("data-delivery")
    assert delivery
    with page.expect_response(re.compile(r"/redeliver$")) as answer:
        row.locator('button[data-action="redeliver"]').click()
    assert answer.value.status == 200, answer.value.text()
    event_id = answer.value.json()["data"]["webhook"]["id"]
    redelivered = page.locator(f'#deliveries tr.delivered[data-delivery="{delivery}"]')
    expect(redelivered.locator("td.attempts")).to_have_text("2", timeout=SLOW_MS)
    deadline = time.monotonic() + 60
    while len([d for d in rig.hooks.events("call.hangup")
               if d.json["data"]["id"] == event_id]) < 2:
        assert time.monotonic() < deadline, "the redelivered event never arrived"
        time.sleep(0.1)


def test_the_one_time_link_signs_in_once(rig: Rig, browser: object) -> None:
    found = LINK.search(rig.server.log())
    assert found, rig.server.log()
    link = found.group(1)
    for attempt in ("first", "second"):
        context = browser.new_context()  # type: ignore[attr-defined]
        try:
            page = context.new_page()
            page.goto(link)
            if attempt == "first":
                expect(page).to_have_url(rig.server.base_url + "/console", timeout=30_000)
                expect(page.locator("#console")).to_be_visible(timeout=30_000)
                expect(page.locator("#link")).to_have_text("live", timeout=30_000)
                assert any(c["name"] == "callstream_console" and c["httpOnly"]
                           and c["sameSite"] == "Strict" for c in context.cookies())
            else:
                expect(page).to_have_url(rig.server.base_url + "/console#link-expired")
                expect(page.locator("#login")).to_be_visible(timeout=30_000)
                expect(page.locator("#login-error")).to_contain_text("used already")
        finally:
            context.close()


def test_the_feed_is_refused_without_a_session(rig: Rig, page: Page) -> None:
    page.goto(rig.server.base_url + "/console")
    expect(page.locator("#login")).to_be_visible()
    status = page.evaluate("fetch('/console/feed').then(r => r.status)")
    assert status == 401
    page.fill("#api-key", "KEYnot-a-key")
    page.click("#login-form button[type=submit]")
    expect(page.locator("#login-error")).to_contain_text("Authentication failed")
    expect(page.locator("#console")).to_be_hidden()
