"""Headless Chromium (Debian's /usr/bin/chromium via Playwright) calling a real server over
WebRTC, its microphone a WAV file (``--use-file-for-fake-audio-capture``). Playwright is
imported by the browser fixture, so the unit tests beside them need no browser."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.audio import resample, write_wav
from tests.corpus import clip
from tests.e2e.conftest import Rig, make_rig
from tests.helpers import free_port

#: In CI (`.ci/run` installs both) a missing browser or Playwright fails the run; on a
#: developer's machine without them the browser tests are skipped.
IN_CI = bool(os.environ.get("CI"))
Page = Any  # playwright.sync_api.Page, imported only where a browser runs

CHROMIUM = Path("/usr/bin/chromium")
#: The browser's microphone: silence while the call is set up, then two sentences.
SPEECH = ("sense_and_sensibility_01_austen_64kb-0870", "sense_and_sensibility_01_austen_64kb-0880")
MIC_RATE = 48000
LEAD_IN_SECS = 6.0
#: A page on another site (a loopback HTTP server of the test's: Chromium lets only pages
#: it fetched from loopback reach a loopback server) that the server lets call in
#: (webrtc_allowed_origins).
OTHER_PORT = free_port()
OTHER_ORIGIN = f"http://localhost:{OTHER_PORT}"


def mic_pcm() -> bytes:
    def silence(seconds: float) -> bytes:
        return bytes(2 * int(seconds * MIC_RATE))

    first, second = (clip(name) for name in SPEECH)
    return (silence(LEAD_IN_SECS) + resample(first.pcm, first.rate, MIC_RATE) + silence(0.4)
            + resample(second.pcm, second.rate, MIC_RATE) + silence(30.0))


def mic_reference() -> str:
    return " ".join(clip(name).reference for name in SPEECH)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    if not CHROMIUM.exists():
        missing = "Debian's chromium is not installed (apt-get install chromium)"
        if IN_CI:
            pytest.fail(missing)
        pytest.skip(missing)
    env = {"CALLSTREAM_WEBRTC_ALLOWED_ORIGINS": json.dumps([OTHER_ORIGIN])}
    with make_rig(tmp_path_factory.mktemp("webrtc"), (39600, 39799), env) as rig:
        yield rig


@pytest.fixture(scope="module")
def browser(rig: Rig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    wav = write_wav(tmp_path_factory.mktemp("mic") / "speech.wav", mic_pcm(), MIC_RATE)
    args = [
        "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}%noloop",
        "--autoplay-policy=no-user-gesture-required",
    ]
    if IN_CI:
        import playwright.sync_api as playwright_sync
    else:
        playwright_sync = pytest.importorskip("playwright.sync_api")
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Any, rig: Rig) -> Iterator[Page]:
    """A fresh context on the server's origin with the client script loaded."""
    context = browser.new_context()
    context.set_default_timeout(60_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(rig.server.base_url + "/healthz")
    page.add_script_tag(url="/static/callstream-webrtc.js")
    try:
        yield page
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
