"""A Call Control webhook application with the official Telnyx Python SDK.

callstream posts every call event here, signed with Ed25519. This app

- verifies each webhook's signature with the SDK (`client.webhooks.unwrap`) and
  answers 400 to anything forged, replayed late or altered;
- answers every incoming call with the SDK (`client.calls.actions.answer`), asking in
  the same request for a bidirectional media stream to a bot (`--bot`, by default the
  websockets bot of examples/websockets_bot) and for live transcription;
- prints what happens to each call, and the transcript lines as they arrive.

Run it (three shells, from the repository root):

    callstream serve --data-dir ./callstream-data                         # 1. the server
    python examples/websockets_bot/bot.py                                 # 2. the bot
    export TELNYX_API_KEY=$(callstream keys create --data-dir ./callstream-data)
    export TELNYX_PUBLIC_KEY=$(callstream keys webhook --data-dir ./callstream-data)
    python examples/python_sdk_app/app.py                                 # 3. this app

then call it: `callstream call sip:bot@127.0.0.1:5060 --play speech.wav --record reply.wav`.
The server must send its webhooks here: `CALLSTREAM_WEBHOOK_URL=http://127.0.0.1:9000/webhooks`
(the default application's URL), set before `callstream serve`.

Environment: `TELNYX_API_KEY` and `TELNYX_PUBLIC_KEY` (required), `TELNYX_BASE_URL`
(default http://127.0.0.1:8080/v2). See README.md in this folder.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import telnyx
from telnyx import Telnyx

DEFAULT_BASE_URL = "http://127.0.0.1:8080/v2"
#: A webhook body larger than this is refused (413) unread.
MAX_BODY_BYTES = 1 << 20
#: A `call.initiated` older than this is not answered: the caller has long given up
#: (callstream keeps undelivered webhooks and sends them when a receiver appears).
STALE_CALL_SECS = 30.0
#: Event ids remembered to drop redeliveries of an event already handled.
SEEN_EVENTS = 1000


def say(line: str) -> None:
    print(f"app: {line}", flush=True)


def parse_event(body: str) -> tuple[str | None, str, dict[str, Any], datetime | None]:
    """(event_type, id, payload, occurred_at) of a verified webhook body.

    Raises:
        ValueError, TypeError, KeyError: the body is not a Telnyx event.
    """
    data = json.loads(body)["data"]
    event_type, payload, when = data.get("event_type"), data.get("payload") or {}, data.get(
        "occurred_at")
    if not isinstance(payload, dict) or not isinstance(event_type, str | None):
        raise TypeError("data.payload must be an object and data.event_type a string")
    return (event_type, str(data.get("id")), payload,
            datetime.fromisoformat(when) if isinstance(when, str) else None)


class App:
    """Handles verified events; every SDK request runs off the HTTP thread."""

    def __init__(self, client: Telnyx, bot_url: str | None, transcribe: bool) -> None:
        self.client = client
        self.bot_url = bot_url
        self.transcribe = transcribe
        self.pool = ThreadPoolExecutor(max_workers=4)
        self.seen: deque[str] = deque(maxlen=SEEN_EVENTS)
        self.lock = threading.Lock()

    def receive(self, body: str, headers: dict[str, str]) -> int:
        """Verify one webhook and handle it; the HTTP status to answer."""
        try:
            self.client.webhooks.unwrap(body, headers=headers)  # the check; raises if forged
        except ValueError as exc:  # bad or missing signature, or a timestamp off by > 300 s
            say(f"rejected a webhook: {exc}")
            return 400
        try:
            event_type, event_id, payload, occurred_at = parse_event(body)
        except (ValueError, TypeError, KeyError) as exc:  # signed, yet not an event we know
            say(f"ignored a malformed event: {exc!r}")
            return 400
        if event_type is None:
            return 204
        with self.lock:
            if event_id in self.seen:
                return 204  # a redelivery of an event already handled
            self.seen.append(event_id)
        self.pool.submit(self.handle, event_type, payload, occurred_at)
        return 204

    def handle(self, event_type: str, p: dict[str, Any], occurred_at: datetime | None) -> None:
        call = p.get("call_control_id", "?")
        try:
            if event_type == "call.initiated" and p.get("direction") == "incoming":
                age = (datetime.now(UTC) - occurred_at).total_seconds() if occurred_at else 0
                if age > STALE_CALL_SECS:
                    say(f"call {call}: not answering a call placed {age:.0f} s ago")
                    return
                self.answer(call, p)
            elif event_type == "call.answered":
                say(f"call {call}: answered")
            elif event_type == "streaming.started":
                say(f"call {call}: stream to {p.get('stream_url')} started")
            elif event_type in ("streaming.stopped", "streaming.failed"):
                reason = p.get("failure_reason")
                say(f"call {call}: stream {event_type.split('.')[1]}"
                    + (f" ({reason})" if reason else ""))
            elif event_type == "call.transcription":
                t = p.get("transcription_data") or {}
                kind = "final" if t.get("is_final") else "interim"
                say(f"transcript ({kind}, {t.get('transcription_track')}): {t.get('transcript')}")
            elif event_type == "call.hangup":
                say(f"call {call}: ended ({p.get('hangup_cause')}, by {p.get('hangup_source')})")
        except telnyx.APIStatusError as exc:  # e.g. 422 90018: the call ended meanwhile
            say(f"call {call}: {event_type} -> HTTP {exc.status_code} {exc.body}")
        except telnyx.APIConnectionError as exc:
            say(f"call {call}: cannot reach callstream at {self.client.base_url}: {exc}")

    def answer(self, call: str, p: dict[str, Any]) -> None:
        say(f"call {call} from {p.get('from')} to {p.get('to')}: answering"
            + (f", streaming to {self.bot_url}" if self.bot_url else "")
            + (", transcribing" if self.transcribe else ""))
        options: dict[str, Any] = {}
        if self.bot_url:
            options.update(
                stream_url=self.bot_url,
                stream_track="inbound_track",  # what the caller says
                stream_codec="PCMU",
                stream_bidirectional_mode="rtp",  # the bot sends raw PCMU back
                stream_bidirectional_codec="PCMU",
            )
        if self.transcribe:
            options.update(transcription=True, transcription_config={
                "transcription_engine": "Telnyx",
                "transcription_tracks": "inbound",
                "transcription_engine_config": {"transcription_engine": "Telnyx",
                                                "language": "en", "interim_results": True},
            })
        self.client.calls.actions.answer(call, **options)


def serve(app: App, host: str, port: int) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # the name http.server calls
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0:
                self.send_error(400, "bad Content-Length")
                return
            if length > MAX_BODY_BYTES:
                self.send_error(413, "webhook body too large")
                return
            body = self.rfile.read(length).decode("utf-8", "replace")
            status = app.receive(body, dict(self.headers.items()))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # quiet access log
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    say(f"listening on http://{host}:{server.server_address[1]}/webhooks")
    try:
        server.serve_forever()
    finally:
        server.server_close()
        app.pool.shutdown(wait=False, cancel_futures=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Telnyx Python SDK webhook app for callstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000, help="0 picks a free port")
    parser.add_argument("--bot", default="ws://127.0.0.1:8765",
                        help="WebSocket URL of the bot to stream to; '' for no stream")
    parser.add_argument("--no-transcription", action="store_true")
    args = parser.parse_args(argv)

    missing = [n for n in ("TELNYX_API_KEY", "TELNYX_PUBLIC_KEY") if not os.environ.get(n)]
    if missing:
        say(f"set {' and '.join(missing)}: `callstream keys create` prints an API key, "
            "`callstream keys webhook` the public key webhooks are signed with")
        return 2
    client = Telnyx(base_url=os.environ.get("TELNYX_BASE_URL", DEFAULT_BASE_URL))
    app = App(client, args.bot or None, not args.no_transcription)
    try:
        serve(app, args.host, args.port)
    except KeyboardInterrupt:
        pass
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
