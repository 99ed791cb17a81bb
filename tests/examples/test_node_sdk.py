"""examples/node_sdk: the official Node SDK verifies callstream's webhooks, answers a real
call and starts a bidirectional stream to the websockets bot, whose greeting the caller hears."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from callstream.media.codecs import get_codec
from tests.audio import write_wav
from tests.e2e.calling import assert_bit_exact, clip, start_caller
from tests.examples.node_driver import NODE_APP, node_ready
from tests.examples.procs import app_rig, example, load_example
from tests.examples.test_python_sdk_app import forge
from tests.helpers import stored_events

pytestmark = pytest.mark.slow

def test_node_app_answers_and_streams_to_the_bot(tmp_path: Path) -> None:
    node = node_ready()
    greeting = clip("two_cities", seconds=1.5)
    write_wav(tmp_path / "greeting.wav", greeting, 8000)
    write_wav(tmp_path / "caller.wav", bytes(2 * 8000 * 4), 8000)  # 4 s of listening
    with app_rig(tmp_path, tmp_path / "greeting.wav", (38900, 38999)) as rig:
        server, bot, bot_url, app_env = rig.server, rig.bot, rig.bot_url, rig.app_env
        app_port, hook_url = rig.app_port, rig.hook_url
        with example(node, str(NODE_APP / "app.mjs"), "--port", str(app_port), "--bot", bot_url,
                     env=app_env) as app:
            app.wait_for(rf"listening on {hook_url}")
            caller = start_caller(f"sip:node@127.0.0.1:{server.sip_port}", "--play",
                                  str(tmp_path / "caller.wav"), "--record",
                                  str(tmp_path / "heard.wav"), "--codec", "PCMU")
            try:
                code, summary, err = caller.finish(60)
            finally:
                caller.kill()
            assert code == 0 and summary["status"] == "answered", err
            ccid = app.wait_for(rf"call (\S+) from .*: answering, streaming to {bot_url}").group(1)
            app.wait_for(rf"call {ccid}: answered")
            app.wait_for(rf"call {ccid}: stream to {bot_url} started")
            app.wait_for(rf"call {ccid}: ended \(normal_clearing, by caller\)", timeout=20)
            bot.wait_for(rf"start: call {ccid}")
            assert forge(hook_url, ccid).status_code == 400
            app.wait_for("rejected a webhook: ")

    assert app.output().count(f"call {ccid} from") == 1
    events = {e["event_type"] for e in stored_events(tmp_path / "data")
              if e["payload"].get("call_control_id") == ccid}
    assert {"call.answered", "streaming.started", "streaming.stopped"} <= events
    ulaw = load_example("websockets_bot/bot.py").ulaw_encode(np.frombuffer(greeting, "<i2"))
    assert_bit_exact(get_codec("PCMU").new_decoder().decode(ulaw), tmp_path / "heard.wav",
                     "bot greeting via the Node app")


def test_node_app_without_keys_says_which_to_set() -> None:
    with example(node_ready(), str(NODE_APP / "app.mjs"), "--port", "0",
                 env={"TELNYX_API_KEY": "", "TELNYX_PUBLIC_KEY": ""}) as app:
        app.wait_for(r"set TELNYX_API_KEY and TELNYX_PUBLIC_KEY: `callstream keys create`")
        assert app.proc.wait(20) == 2
