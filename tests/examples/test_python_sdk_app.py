"""examples/python_sdk_app: the official SDK answers a real call, streams it to the bot,
verifies every webhook, and prints the caller's words as they are transcribed."""

from __future__ import annotations

import base64
import json
import socket
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from nacl.signing import SigningKey

from tests.audio import write_wav
from tests.e2e.calling import clip, start_caller
from tests.examples.procs import app_rig, example, python_example
from tests.helpers import free_port, stored_events

pytestmark = pytest.mark.slow


def silence(seconds: float) -> bytes:
    return bytes(2 * int(seconds * 8000))


def test_app_answers_streams_and_prints_the_transcript(tmp_path: Path) -> None:
    write_wav(tmp_path / "greeting.wav", clip("two_cities", seconds=1.0), 8000)
    write_wav(tmp_path / "caller.wav", silence(0.5) + clip("beckett", seconds=5.0)
              + silence(2.0), 8000)
    with app_rig(tmp_path, tmp_path / "greeting.wav", (38700, 38799)) as rig:
        server, bot, bot_url, app_env = rig.server, rig.bot, rig.bot_url, rig.app_env
        app_port, hook_url = rig.app_port, rig.hook_url
        with example(*python_example("python_sdk_app/app.py", "--port", str(app_port),
                                     "--bot", bot_url), env=app_env) as app:
            app.wait_for(rf"listening on {hook_url}")
            started = time.monotonic()
            caller = start_caller(f"sip:bot@127.0.0.1:{server.sip_port}", "--play",
                                  str(tmp_path / "caller.wav"), "--record",
                                  str(tmp_path / "heard.wav"))
            try:
                code, summary, err = caller.finish(60)
            finally:
                caller.kill()
            assert code == 0 and summary["status"] == "answered", err
            ccid = app.wait_for(r"call (\S+) from .*: answering, streaming to .*, transcribing"
                                ).group(1)
            app.wait_for(rf"call {ccid}: answered")
            app.wait_for(rf"call {ccid}: stream to {bot_url} started")
            _, answered_at = app.wait_for_line(rf"call {ccid}: answered")
            _, first_at = app.wait_for_line(r"transcript \(\w+, inbound\): ", timeout=40)
            found, final_at = app.wait_for_line(r"transcript \(final, inbound\): (.+)", timeout=40)
            final = found.group(1)
            app.wait_for(rf"call {ccid}: ended \(normal_clearing, by caller\)", timeout=20)
            bot.wait_for(rf"start: call {ccid}")

            # A forged webhook (signed with another key) is refused and handled not at all.
            forged = forge(hook_url, ccid)
            assert forged.status_code == 400
            app.wait_for("rejected a webhook: ")
    print(f"\n[measured] python_sdk_app: answered {answered_at - started:.2f} s after dialling; "
          f"first transcript line {first_at - answered_at:.2f} s, final "
          f"{final_at - answered_at:.2f} s after the answer (speech starts 0.5 s in): {final!r}")
    # Whisper tiny.en on phone audio: "Ever tried. Ever failed. No matter. Try again..."
    words = set(final.lower().replace(".", " ").replace(",", " ").split())
    assert words & {"tried", "try", "failed", "fail", "matter"}, final
    events = [e["event_type"] for e in stored_events(tmp_path / "data")
              if e["payload"].get("call_control_id") == ccid]
    assert {"call.answered", "streaming.started", "call.transcription"} <= set(events)
    assert app.output().count(f"call {ccid} from") == 1  # handled once, however often sent


def forge(url: str, ccid: str) -> httpx.Response:
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    body = json.dumps({"data": {"event_type": "call.initiated", "id": "forged",
                                "occurred_at": now, "record_type": "event",
                                "payload": {"call_control_id": ccid, "direction": "incoming"}}})
    ts = str(int(time.time()))
    signature = SigningKey.generate().sign(f"{ts}|{body}".encode()).signature
    return httpx.post(url, content=body, headers={
        "Content-Type": "application/json", "Telnyx-Timestamp": ts,
        "Telnyx-Signature-Ed25519": base64.b64encode(signature).decode()}, timeout=10)


def test_app_without_keys_says_which_to_set(tmp_path: Path) -> None:
    with example(*python_example("python_sdk_app/app.py", "--port", "0"),
                 env={"TELNYX_API_KEY": "", "TELNYX_PUBLIC_KEY": ""}) as app:
        app.wait_for(r"set TELNYX_API_KEY and TELNYX_PUBLIC_KEY: `callstream keys create`")
        assert app.proc.wait(20) == 2


def raw_post(port: int, header: str) -> bytes:
    """The status line the app answers to a POST with ``header`` and no body sent."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"POST /webhooks HTTP/1.1\r\nHost: x\r\n{header}\r\n\r\n".encode())
        return sock.recv(100)


def signed(key: SigningKey, body: str) -> dict[str, str]:
    ts = str(int(time.time()))
    return {"Content-Type": "application/json", "Telnyx-Timestamp": ts,
            "Telnyx-Signature-Ed25519": base64.b64encode(
                key.sign(f"{ts}|{body}".encode()).signature).decode()}


def test_app_refuses_bad_webhooks_and_keeps_working() -> None:
    """Unsigned, stale, oversized, malformed (even when correctly signed): each gets a 4xx and
    a line saying why; a good event right after is handled."""
    key = SigningKey.generate()
    env = {"TELNYX_API_KEY": "KEYunused", "TELNYX_BASE_URL": "http://127.0.0.1:9/v2",
           "TELNYX_PUBLIC_KEY": base64.b64encode(bytes(key.verify_key)).decode()}
    port = free_port()
    url = f"http://127.0.0.1:{port}/webhooks"
    hangup = json.dumps({"data": {"event_type": "call.hangup", "id": "e1", "record_type": "event",
                                  "occurred_at": "2026-12-04T10:00:00.000000Z", "payload": {
                                      "call_control_id": "v3:x", "hangup_cause": "normal_clearing",
                                      "hangup_source": "caller"}}})
    with example(*python_example("python_sdk_app/app.py", "--port", str(port)), env=env) as app:
        app.wait_for("listening on")
        with httpx.Client(timeout=10) as http:
            assert http.post(url, content=hangup).status_code == 400  # unsigned
            stale = signed(key, hangup) | {"Telnyx-Timestamp": str(int(time.time()) - 301)}
            assert http.post(url, content=hangup, headers=stale).status_code == 400
            assert raw_post(port, "Content-Length: 2097152").startswith(b"HTTP/1.0 413")
            assert raw_post(port, "Content-Length: many").startswith(b"HTTP/1.0 400")
            for body in ("[]", '{"data": {"event_type": 7}}',
                         '{"data": {"event_type": "call.hangup", "occurred_at": "yesterday"}}'):
                assert http.post(url, content=body, headers=signed(key, body)).status_code == 400
            for _ in range(2):  # the second is a redelivery: handled once
                assert http.post(url, content=hangup, headers=signed(key, hangup)
                                 ).status_code == 204
        app.wait_for(r"call v3:x: ended \(normal_clearing, by caller\)")
        time.sleep(0.5)
    printed = app.output()
    assert printed.count("rejected a webhook") == 2, printed
    assert printed.count("ignored a malformed event") == 3, printed
    assert printed.count("call v3:x: ended") == 1, printed
