"""The demo's example application: a webhook receiver that answers every incoming call.

What a Telnyx Call Control application does, in the fewest lines that are still correct:

* :class:`WebhookVerifier` checks each delivery's Ed25519 signature
  (``telnyx-signature-ed25519`` over ``"{telnyx-timestamp}|{raw body}"``) with the
  server's *public* key and refuses stale timestamps;
* :func:`commands_for` decides the REST commands an event calls for:
  ``call.initiated`` (incoming) → ``answer`` with a bidirectional stream to the bot
  (``stream_bidirectional_mode: rtp``, PCMU); ``call.answered`` → ``fork_start`` to
  the demo's UDP counters and ``transcription_start`` (both tracks, interim results);
* :class:`ApiClient` sends them (``urllib`` in a worker thread: no extra dependency);
* :func:`webhook_asgi` is the ASGI receiver: it answers 200 at once (or 401 on a bad
  signature) and hands the event on, so the server's delivery is never held up by the
  application's own API calls.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from callstream.webhooks.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER

TIMESTAMP_TOLERANCE_S = 300  # a delivery signed longer ago than this is refused (replay)
MAX_BODY_BYTES = 1_000_000  # a webhook body larger than this is refused (413)
API_TIMEOUT_S = 10.0
WEBHOOK_PATH = "/webhooks"


class BadWebhook(Exception):
    """A delivery that is not a valid signed webhook; the message says why."""


@dataclass(frozen=True, slots=True)
class Command:
    """One REST command: POST /v2/calls/{call_control_id}/actions/{action}."""

    call_control_id: str
    action: str
    body: dict[str, Any]


class WebhookVerifier:
    """Verifies the signature and age of webhook deliveries with the server's public key."""

    def __init__(self, public_key_b64: str, *, tolerance_s: int = TIMESTAMP_TOLERANCE_S) -> None:
        self._key = VerifyKey(base64.b64decode(public_key_b64))
        self.tolerance_s = tolerance_s

    def verify(self, body: bytes, headers: MutableMapping[str, str], now: float) -> dict[str, Any]:
        """The event (``data``) of a verified delivery.

        Raises:
            BadWebhook: a header is missing or malformed, the signature does not match,
                the timestamp is too old or too new, or the body is not a webhook.
        """
        timestamp = headers.get(TIMESTAMP_HEADER)
        signature = headers.get(SIGNATURE_HEADER)
        if not timestamp or not signature:
            raise BadWebhook(f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header")
        try:
            sent_at = int(timestamp)
            raw_signature = base64.b64decode(signature, validate=True)
        except (ValueError, binascii.Error) as exc:
            raise BadWebhook(f"malformed signature headers: {exc}") from None
        if abs(now - sent_at) > self.tolerance_s:
            raise BadWebhook(f"timestamp {sent_at} is more than {self.tolerance_s} s from now")
        try:
            self._key.verify(timestamp.encode("ascii") + b"|" + body, raw_signature)
        except (BadSignatureError, ValueError):
            raise BadWebhook("signature does not match") from None
        try:
            data = json.loads(body)["data"]
        except (ValueError, KeyError, TypeError):
            raise BadWebhook("body is not a webhook (no data object)") from None
        if not isinstance(data, dict) or not isinstance(data.get("payload"), dict):
            raise BadWebhook("body is not a webhook (no data.payload object)")
        return data


def commands_for(event: dict[str, Any], *, stream_url: str, fork_rx: str,
                 fork_tx: str) -> list[Command]:
    """The REST commands the demo application sends in answer to one event."""
    kind = event.get("event_type")
    payload = event["payload"]
    ccid = str(payload.get("call_control_id", ""))
    if not ccid:
        return []
    if kind == "call.initiated" and payload.get("direction") == "incoming":
        return [Command(ccid, "answer", {
            "stream_url": stream_url,
            "stream_track": "inbound_track",
            "stream_codec": "PCMU",
            "stream_bidirectional_mode": "rtp",
            "stream_bidirectional_codec": "PCMU",
            "client_state": base64.b64encode(b"callstream-demo").decode("ascii"),
        })]
    if kind == "call.answered":
        return [
            Command(ccid, "fork_start", {"rx": fork_rx, "tx": fork_tx}),
            Command(ccid, "transcription_start", {
                "transcription_engine": "Telnyx",
                "transcription_tracks": "both",
                "transcription_engine_config": {"language": "en", "interim_results": True},
            }),
        ]
    return []


class ApiClient:
    """A tiny client for callstream's REST API (blocking ``urllib``, run in a thread)."""

    def __init__(self, base_url: str, api_key: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._auth = f"Bearer {api_key}"
        # No proxies: the server is on loopback, whatever HTTP_PROXY says.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _request(self, method: str, path: str, body: dict[str, Any] | None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        request.add_header("Authorization", self._auth)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with self._opener.open(request, timeout=API_TIMEOUT_S) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode("utf-8", "replace")

    async def request(self, method: str, path: str,
                      body: dict[str, Any] | None = None) -> tuple[int, Any]:
        """``(status, parsed JSON)``; raises OSError when the server cannot be reached."""
        return await asyncio.to_thread(self._request, method, path, body)

    async def command(self, command: Command) -> tuple[int, Any]:
        return await self.request(
            "POST", f"/v2/calls/{command.call_control_id}/actions/{command.action}",
            command.body)


Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Scope = dict[str, Any]
OnWebhook = Callable[[dict[str, Any] | None, str | None], None]


def webhook_asgi(verifier: WebhookVerifier, on_webhook: OnWebhook,
                 clock: Callable[[], float]) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """An ASGI app that verifies each POST to :data:`WEBHOOK_PATH`.

    ``on_webhook(event, None)`` for a verified delivery, ``on_webhook(None, reason)`` for a
    refused one.
    """
    async def reply(send: Send, status: int, text: str) -> None:
        body = text.encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/plain"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] != "POST" or scope["path"] != WEBHOOK_PATH:
            await reply(send, 404, "not found")
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                on_webhook(None, f"body over {MAX_BODY_BYTES} bytes")
                await reply(send, 413, "too large")
                return
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope["headers"]}
        try:
            event = verifier.verify(b"".join(chunks), headers, clock())
        except BadWebhook as exc:
            on_webhook(None, str(exc))
            await reply(send, 401, str(exc))
            return
        on_webhook(event, None)
        await reply(send, 200, "ok")

    return app
