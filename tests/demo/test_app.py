"""The demo application's pieces: signature checks, the commands it sends, the ASGI receiver,
and the report helpers."""

from __future__ import annotations

import json
from typing import Any

import pytest

from callstream.demo.app import (
    WEBHOOK_PATH,
    BadWebhook,
    Command,
    WebhookVerifier,
    commands_for,
    webhook_asgi,
)
from callstream.demo.report import Check, describe, verdict, voiced_seconds, word_error_rate
from callstream.webhooks.signing import WebhookSigner

SIGNER = WebhookSigner(b"\x07" * 32)
NOW = 1_800_000_000


def signed(body: bytes, timestamp: int = NOW, signer: WebhookSigner = SIGNER) -> dict[str, str]:
    return signer.headers(body, timestamp)


def webhook(event_type: str, **payload: Any) -> bytes:
    return json.dumps({"data": {"event_type": event_type, "id": "e1",
                                "payload": {"call_control_id": "v3:abc", **payload}}}).encode()


def test_a_signed_webhook_verifies() -> None:
    body = webhook("call.answered")
    event = WebhookVerifier(SIGNER.public_key_b64).verify(body, signed(body), NOW + 5)
    assert event["event_type"] == "call.answered"


@pytest.mark.parametrize(("mutate", "reason"), [
    (lambda b, h: (b + b" ", h), "signature does not match"),
    (lambda b, h: (b, {**h, "telnyx-timestamp": str(NOW + 1)}), "signature does not match"),
    (lambda b, h: (b, signed(b, signer=WebhookSigner(b"\x08" * 32))), "signature does not match"),
    (lambda b, h: (b, {"telnyx-timestamp": str(NOW)}), "missing"),
    (lambda b, h: (b, {**h, "telnyx-signature-ed25519": "not base64!"}), "malformed"),
    (lambda b, h: (b, {**h, "telnyx-timestamp": "soon"}), "malformed"),
    (lambda b, h: (b, signed(b, NOW - 301)), "more than 300 s from now"),
])
def test_bad_deliveries_are_refused_with_the_reason(mutate: Any, reason: str) -> None:
    body = webhook("call.answered")
    bad_body, headers = mutate(body, signed(body))
    with pytest.raises(BadWebhook, match=reason):
        WebhookVerifier(SIGNER.public_key_b64).verify(bad_body, headers, NOW)


def test_a_signed_body_that_is_not_a_webhook_is_refused() -> None:
    body = b'{"data": 3}'
    with pytest.raises(BadWebhook, match="not a webhook"):
        WebhookVerifier(SIGNER.public_key_b64).verify(body, signed(body), NOW)


def event(event_type: str, **payload: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(webhook(event_type, **payload))["data"]
    return data


URLS = {"stream_url": "ws://127.0.0.1:9/bot", "fork_rx": "udp:127.0.0.1:1",
        "fork_tx": "udp:127.0.0.1:2"}


def test_an_incoming_call_is_answered_with_a_bidirectional_pcmu_stream() -> None:
    [answer] = commands_for(event("call.initiated", direction="incoming"), **URLS)
    assert answer.call_control_id == "v3:abc" and answer.action == "answer"
    assert answer.body["stream_url"] == URLS["stream_url"]
    assert answer.body["stream_bidirectional_mode"] == "rtp"
    assert answer.body["stream_bidirectional_codec"] == "PCMU"
    assert answer.body["stream_codec"] == "PCMU"


def test_an_answered_call_gets_a_fork_and_transcription_of_both_tracks() -> None:
    fork, transcription = commands_for(event("call.answered"), **URLS)
    assert fork == Command("v3:abc", "fork_start", {"rx": URLS["fork_rx"],
                                                    "tx": URLS["fork_tx"]})
    assert transcription.action == "transcription_start"
    assert transcription.body["transcription_tracks"] == "both"
    assert transcription.body["transcription_engine_config"]["interim_results"] is True


def test_other_events_need_no_command() -> None:
    assert commands_for(event("call.initiated", direction="outgoing"), **URLS) == []
    assert commands_for(event("call.hangup"), **URLS) == []
    assert commands_for({"event_type": "call.answered", "payload": {}}, **URLS) == []


async def asgi_post(body: bytes, headers: dict[str, str], path: str = WEBHOOK_PATH,
                    method: str = "POST") -> tuple[int, list[tuple[Any, Any]]]:
    seen: list[tuple[Any, Any]] = []
    app = webhook_asgi(WebhookVerifier(SIGNER.public_key_b64),
                       lambda e, why: seen.append((e, why)), lambda: float(NOW))
    sent: list[dict[str, Any]] = []
    chunks = [{"type": "http.request", "body": body[:10], "more_body": True},
              {"type": "http.request", "body": body[10:], "more_body": False}]

    async def receive() -> dict[str, Any]:
        return chunks.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path,
             "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}
    await app(scope, receive, send)
    return sent[0]["status"], seen


async def test_the_receiver_answers_200_and_hands_on_a_verified_event() -> None:
    body = webhook("call.hangup")
    status, seen = await asgi_post(body, {k.title(): v for k, v in signed(body).items()})
    assert status == 200
    assert seen[0][0]["event_type"] == "call.hangup" and seen[0][1] is None


async def test_the_receiver_refuses_a_forgery_with_401() -> None:
    body = webhook("call.hangup")
    status, seen = await asgi_post(body, signed(webhook("call.answered")))
    assert status == 401
    assert seen == [(None, "signature does not match")]


async def test_the_receiver_answers_404_elsewhere() -> None:
    status, seen = await asgi_post(b"", {}, path="/")
    assert status == 404 and seen == []


def test_word_error_rate() -> None:
    assert word_error_rate("Hello, there world.", "hello there world") == 0.0
    assert word_error_rate("a b c d", "a x c") == 0.5  # one substitution, one deletion
    assert word_error_rate("a b", "") == 1.0
    assert word_error_rate("a", "a b c") == 2.0


def test_voiced_seconds() -> None:
    import numpy as np

    loud = (np.ones(8000) * 8000).astype("<i2").tobytes()
    assert voiced_seconds(b"\0\0" * 8000 + loud, 8000) == pytest.approx(1.0)
    assert voiced_seconds(b"", 8000) == 0.0


def test_describe_and_verdict() -> None:
    line = describe(event("call.transcription", transcription_data={
        "transcript": "hi", "is_final": False, "transcription_track": "inbound"}))
    assert line == "transcript  inbound interim 'hi'"
    assert "normal_clearing" in describe(event("call.hangup", hangup_cause="normal_clearing",
                                               hangup_source="caller"))
    assert verdict([Check("a", True, "x"), Check("b", False, "why b"),
                    Check("c", False, "why c")]) == "b: why b"
    assert verdict([Check("a", True, "x")]) is None
