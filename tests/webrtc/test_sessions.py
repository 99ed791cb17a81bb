"""POST /v2/webrtc/sessions against a real server, with aiortc as the browser: tokens, the
answer and its resource, DELETE, the leg limit, and hostile offers that must get a precise
4xx and leave the next call unharmed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from aiortc import RTCPeerConnection

from tests.e2e.conftest import Rig, make_rig
from tests.helpers import stored_events

pytestmark = pytest.mark.slow

MAX_LEGS = 2
#: The park timeout of the server that leaves a browser call unanswered: a server of its
#: own, so that the other tests' calls (parked while they run) never meet it.
PARK_SECS = 3


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    with make_rig(tmp_path_factory.mktemp("webrtc-http"), (39800, 39849),
                  {"CALLSTREAM_WEBRTC_MAX_LEGS": str(MAX_LEGS),
                   "CALLSTREAM_WEBRTC_ALLOWED_ORIGINS": '["https://shop.example"]'}) as rig:
        yield rig


@pytest.fixture
def short_park_rig(tmp_path: Path) -> Iterator[Rig]:
    with make_rig(tmp_path, (39850, 39899),
                  {"CALLSTREAM_SIP_PARK_TIMEOUT_SECS": str(PARK_SECS)}) as rig:
        yield rig


def offer_sdp() -> str:
    async def make() -> str:
        pc = RTCPeerConnection()
        pc.addTransceiver("audio", direction="sendrecv")
        await pc.setLocalDescription(await pc.createOffer())
        sdp = str(pc.localDescription.sdp)
        await pc.close()
        return sdp

    return asyncio.run(make())


def token(rig: Rig, **body: str) -> str:
    with rig.server.client() as api:
        reply = api.post("/v2/webrtc/tokens", json=body)
    assert reply.status_code == 201, reply.text
    data = reply.json()["data"]
    assert data["expires_at"].endswith("Z")
    return str(data["token"])


def post_offer(rig: Rig, sdp: str | bytes, credential: str | None,
               content_type: str = "application/sdp", query: str = "") -> httpx.Response:
    headers = {"content-type": content_type}
    if credential is not None:
        headers["authorization"] = f"Bearer {credential}"
    return httpx.post(f"{rig.server.api_url}/webrtc/sessions{query}", content=sdp,
                      headers=headers, timeout=30)


def error(reply: httpx.Response) -> tuple[int, str, str]:
    err = reply.json()["errors"][0]
    return reply.status_code, err["code"], err.get("detail", "")


def test_a_token_places_one_call_and_delete_hangs_it_up(rig: Rig) -> None:
    credential = token(rig, **{"from": "dana", "to": "support"})
    reply = post_offer(rig, offer_sdp(), credential)
    assert reply.status_code == 201, reply.text
    assert reply.headers["content-type"].startswith("application/sdp")
    assert reply.text.startswith("v=0") and "a=fingerprint" in reply.text
    assert "telephone-event" not in reply.text, "aiortc's offer had none, so none is answered"
    location = reply.headers["location"]
    assert location.startswith("/v2/webrtc/sessions/")
    ccid = reply.headers["x-call-control-id"]
    initiated = rig.hooks.wait_event("call.initiated", ccid)
    assert (initiated.payload["from"], initiated.payload["to"]) == ("dana", "support")
    assert initiated.payload["from_sip_uri"] == "webrtc:dana"

    again = post_offer(rig, offer_sdp(), credential)
    assert error(again)[:2] == (401, "10009"), "a token places one call"

    assert httpx.delete(rig.server.base_url + location).status_code == 200
    hangup = rig.hooks.wait_event("call.hangup", ccid)
    assert hangup.payload["hangup_source"] == "caller"
    assert httpx.delete(rig.server.base_url + location).status_code == 404


def test_an_api_key_calls_in_with_its_query(rig: Rig) -> None:
    reply = post_offer(rig, offer_sdp(), rig.server.api_key, query="?from=erin&to=desk")
    assert reply.status_code == 201, reply.text
    ccid = reply.headers["x-call-control-id"]
    initiated = rig.hooks.wait_event("call.initiated", ccid)
    assert (initiated.payload["from"], initiated.payload["to"]) == ("erin", "desk")
    rig.sdk.calls.actions.hangup(ccid)
    assert rig.hooks.wait_event("call.hangup", ccid).payload["hangup_source"] == "callee"


def test_hostile_offers_get_a_precise_refusal(rig: Rig) -> None:
    good = offer_sdp()
    assert error(post_offer(rig, good, None))[:2] == (401, "10009")
    assert error(post_offer(rig, good, "wrt_forged"))[:2] == (401, "10009")
    assert error(post_offer(rig, good, "KEYnot-a-key"))[:2] == (401, "10009")
    assert error(post_offer(rig, good, rig.server.api_key, content_type="text/plain"))[:2] == (
        415, "10015")
    status, code, detail = error(post_offer(rig, "v=0\r\nhello", token(rig)))
    assert (status, code) == (400, "10015") and "audio" in detail
    status, code, detail = error(post_offer(rig, "garbage", token(rig)))
    assert (status, code) == (400, "10015") and "not SDP" in detail
    status, code, detail = error(post_offer(rig, b"v=0\xff\xfe", token(rig)))
    assert (status, code) == (400, "10015")
    status, code, detail = error(post_offer(rig, good + "a=x\r\n" * 5000, token(rig)))
    assert (status, code) == (413, "10015") and "16384" in detail
    status, _, _ = error(post_offer(rig, good, rig.server.api_key, query="?from=a%20b"))
    assert status == 401
    with rig.server.client() as api:
        reply = api.post("/v2/webrtc/tokens", json={"connection_id": "nope"})
        assert error(reply)[:2] == (422, "10015")
        reply = api.post("/v2/webrtc/tokens", json={"from": "x" * 500})
        assert reply.status_code == 422
    assert httpx.post(f"{rig.server.api_url}/webrtc/tokens", json={}).status_code == 401
    # None of it was a call; the next offer is answered.
    reply = post_offer(rig, good, token(rig))
    assert reply.status_code == 201, reply.text
    assert httpx.delete(rig.server.base_url + reply.headers["location"]).status_code == 200
    with rig.server.client() as api:
        metrics = api.get("/metrics").text
    assert 'callstream_webrtc_offers_refused_total{reason="auth"}' in metrics


def test_legs_beyond_the_limit_get_503(rig: Rig, tmp_path: Path) -> None:
    sessions = []
    for _ in range(MAX_LEGS):
        reply = post_offer(rig, offer_sdp(), token(rig))
        assert reply.status_code == 201, reply.text
        sessions.append(reply.headers["location"])
    before = len(stored_events(rig.workdir))
    status, code, detail = error(post_offer(rig, offer_sdp(), token(rig)))
    assert (status, code) == (503, "10015") and str(MAX_LEGS) in detail
    assert len(stored_events(rig.workdir)) == before, "a refused offer announces nothing"
    for location in sessions:
        assert httpx.delete(rig.server.base_url + location).status_code == 200
    assert "webrtc_max_legs" in rig.server.log()


def test_a_rejected_or_unanswered_browser_call_ends(rig: Rig, short_park_rig: Rig) -> None:
    reply = post_offer(rig, offer_sdp(), token(rig))
    rejected = reply.headers["x-call-control-id"]
    rig.sdk.calls.actions.reject(rejected, cause="USER_BUSY")
    hangup = rig.hooks.wait_event("call.hangup", rejected)
    assert (hangup.payload["hangup_cause"], hangup.payload["hangup_source"]) == (
        "user_busy", "callee")
    assert httpx.delete(rig.server.base_url + reply.headers["location"]).status_code == 404

    reply = post_offer(short_park_rig, offer_sdp(), token(short_park_rig))
    parked = reply.headers["x-call-control-id"]
    hangup = short_park_rig.hooks.wait_event("call.hangup", parked, timeout=PARK_SECS + 30)
    assert hangup.payload["hangup_cause"] == "timeout"
    assert "sip_park_timeout_secs" in short_park_rig.server.log()


def test_cors_only_for_allowed_origins(rig: Rig) -> None:
    url = f"{rig.server.api_url}/webrtc/sessions"
    shop = {"origin": "https://shop.example", "access-control-request-method": "POST"}
    preflight = httpx.options(url, headers=shop)
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "https://shop.example"
    assert "authorization" in preflight.headers["access-control-allow-headers"]
    other = httpx.options(url, headers={**shop, "origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    reply = httpx.post(url, content=offer_sdp(), headers={
        "content-type": "application/sdp", "authorization": f"Bearer {token(rig)}",
        "origin": "https://shop.example"}, timeout=30)
    assert reply.status_code == 201
    assert reply.headers["access-control-allow-origin"] == "https://shop.example"
    assert "Location" in reply.headers["access-control-expose-headers"]
    assert httpx.delete(rig.server.base_url + reply.headers["location"]).status_code == 200
