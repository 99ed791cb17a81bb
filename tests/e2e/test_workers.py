"""``callstream serve --workers 2`` end to end: real calls from `callstream call`, the
official SDK through the HTTP front, webhooks through the real receiver, a real
WebSocket consumer; one worker killed with SIGKILL mid-call."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callstream.media.codecs import PCMU
from callstream.webhooks.signing import WebhookSigner, load_or_create_seed
from tests.audio import read_wav, write_wav
from tests.e2e.calling import (
    CallerProcess,
    clip,
    contains,
    incoming,
    media_rig,
    start_caller,
    through_codec,
)
from tests.e2e.conftest import Rig
from tests.e2e.sipp import uas
from tests.helpers import free_udp_tcp_port, stored_events
from tests.webrtc.test_sessions import offer_sdp, post_offer, token
from tests.ws_consumer import Consumer, ws_consumer

pytestmark = pytest.mark.slow

WORKERS = 2
CALLS = 6
MAX_CALLS = 16
_STARTED = re.compile(r"worker (\d+) started: pid (\d+), HTTP on 127\.0\.0\.1:(\d+)")


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    # One source places every call here, and a worker admits only its share of a source's
    # parked calls and burst (tests/e2e/test_sip_admission.py): up to MAX_CALLS can hash
    # to one worker, so that share must hold them all.
    yield from media_rig(tmp_path_factory, (34000, 34999), CALLSTREAM_WORKERS=str(WORKERS),
                         CALLSTREAM_SIP_MAX_PARKED_PER_SOURCE=str(WORKERS * MAX_CALLS),
                         CALLSTREAM_SIP_RATE_LIMIT_BURST=str(WORKERS * MAX_CALLS))


@pytest.fixture
def consumer() -> Iterator[Consumer]:
    with ws_consumer() as c:
        yield c


def _workers(rig: Rig) -> dict[int, tuple[int, int]]:
    """Worker index -> (pid, HTTP port) of its latest start, from the server's log."""
    found: dict[int, tuple[int, int]] = {}
    for index, pid, port in _STARTED.findall(rig.server.log()):
        found[int(index)] = (int(pid), int(port))
    return found


def _owner(rig: Rig, ccid: str) -> int:
    with sqlite3.connect(rig.workdir / "callstream.db") as db:
        (owner,) = db.execute("SELECT owner FROM calls WHERE call_control_id = ?",
                              (ccid,)).fetchone()
    return int(owner.rpartition("-")[2])


def _metric(rig: Rig, sample: str) -> float:
    """A sample of /metrics, summed over the workers by the front (0 when absent)."""
    text = httpx.get(rig.server.base_url + "/metrics",
                     headers={"Authorization": f"Bearer {rig.server.api_key}"}).text
    found = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def _place(rig: Rig, user: str, *args: str, params: str = "") -> tuple[CallerProcess, str]:
    caller = start_caller(f"sip:{user}@{rig.sip_target}{params}", "--codec", "PCMU", "-q",
                          *args)
    try:
        return caller, incoming(rig, user)
    except BaseException:
        caller.kill()
        raise


def _hangups(rig: Rig, ccid: str) -> int:
    return len([d for d in rig.hooks.events("call.hangup")
                if d.payload["call_control_id"] == ccid])


def _place_on_every_worker(rig: Rig, prefix: str, *args: str, params: str = ""
                           ) -> list[tuple[CallerProcess, str]]:
    """At least ``CALLS`` calls, and more until every worker owns one (Call-IDs are
    random: ``MAX_CALLS`` leave them all on one worker once in 2^(MAX_CALLS-1))."""
    placed: list[tuple[CallerProcess, str]] = []
    try:
        while len(placed) < CALLS or {_owner(rig, c) for _, c in placed} != set(range(WORKERS)):
            assert len(placed) < MAX_CALLS, [_owner(rig, c) for _, c in placed]
            placed.append(_place(rig, f"{prefix}-{len(placed)}", *args, params=params))
    except BaseException:
        for caller, _ in placed:
            caller.kill()
        raise
    return placed


def test_calls_spread_commands_reach_owner_and_order_holds(rig: Rig) -> None:
    placed = _place_on_every_worker(rig, "spread", "--duration", "30")
    try:
        ccids = [ccid for _, ccid in placed]
        for ccid in ccids:
            rig.sdk.calls.actions.answer(ccid)  # through the front, to whichever owns it
        for ccid in ccids:
            rig.hooks.wait_event("call.answered", ccid)
        owners = {ccid: _owner(rig, ccid) for ccid in ccids}
        headers = {"Authorization": f"Bearer {rig.server.api_key}"}
        listed = httpx.get(rig.server.api_url + "/calls", headers=headers).json()["data"]
        assert set(ccids) <= {c["call_control_id"] for c in listed}
        ports = {index: port for index, (_, port) in _workers(rig).items()}
        for ccid in ccids:
            body = {"command_id": f"hang-{ccid}"}
            path = f"/v2/calls/{ccid}/actions/hangup"
            front = httpx.post(rig.server.base_url + path, json=body, headers=headers)
            assert front.status_code == 200, front.text
            # The same command_id again, straight to the owner: its receipt replays.
            direct = httpx.post(f"http://127.0.0.1:{ports[owners[ccid]]}{path}", json=body,
                                headers=headers)
            assert direct.content == front.content
            assert direct.headers["content-type"] == front.headers["content-type"]
        for ccid in ccids:
            rig.hooks.wait_event("call.hangup", ccid)
        for ccid in ccids:
            order = [d.event_type for d in rig.hooks.events()
                     if d.payload.get("call_control_id") == ccid]
            assert order == ["call.initiated", "call.answered", "call.hangup"], (ccid, order)
        for caller, _ in placed:
            caller.finish(30)
    finally:
        for caller, _ in placed:
            caller.kill()


def test_sip_over_tcp_reaches_every_worker(rig: Rig) -> None:
    """The supervisor holds the SIP TCP connections: calls over TCP land on both workers;
    answers and the server's BYE go out on the caller's connection, a caller's BYE comes
    in on it; a dial over TCP goes out on a connection the supervisor opens, and one to a
    port nobody listens on fails at once (TCP has no retransmission to wait out)."""
    placed = _place_on_every_worker(rig, "tcp", "--duration", "20", params=";transport=tcp")
    try:
        ccids = [ccid for _, ccid in placed]
        for ccid in ccids:
            rig.sdk.calls.actions.answer(ccid)
        for ccid in ccids:
            rig.hooks.wait_event("call.answered", ccid)
        ours, theirs = placed[::2], placed[1::2]
        for _, ccid in ours:
            rig.sdk.calls.actions.hangup(ccid)
        for caller, _ in ours:  # long before its 20 s: our BYE reached it over TCP
            code, summary, err = caller.finish(10)
            assert (code, summary["ended_by"]) == (0, "remote"), err
        for caller, _ in theirs:
            caller.proc.send_signal(signal.SIGINT)  # the caller hangs up now
        for caller, ccid in theirs:
            caller.finish(10)
            hangup = rig.hooks.wait_event("call.hangup", ccid, timeout=10)
            assert hangup.payload["hangup_source"] == "caller", hangup.payload
        for ccid in ccids:
            order = [d.event_type for d in rig.hooks.events()
                     if d.payload.get("call_control_id") == ccid]
            assert order == ["call.initiated", "call.answered", "call.hangup"], (ccid, order)
    finally:
        for caller, _ in placed:
            caller.kill()

    port = free_udp_tcp_port()
    phone = uas("uas_basic.xml", cwd=rig.workdir, port=port, media_port=free_udp_tcp_port(),
                extra=("-t", "t1"))
    try:
        _wait_listening(port)  # a refused connect fails the dial at once
        dialled = _dial(rig, f"sip:phone@127.0.0.1:{port};transport=tcp")
        rig.hooks.wait_event("call.answered", dialled)
        rig.sdk.calls.actions.hangup(dialled)
        rig.hooks.wait_event("call.hangup", dialled)
        assert phone.wait(10) == 0  # SIPp took our BYE and answered it over TCP
    finally:
        if phone.poll() is None:
            phone.kill()
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        nobody = closed.getsockname()[1]
    failing = _dial(rig, f"sip:nobody@127.0.0.1:{nobody};transport=tcp")
    started = time.monotonic()
    hangup = rig.hooks.wait_event("call.hangup", failing, timeout=10)
    assert time.monotonic() - started < 5, "the failed connect was not reported"
    assert hangup.payload["hangup_cause"] != "normal_clearing", hangup.payload


def _wait_listening(port: int, timeout: float = 10.0) -> None:
    """Until something listens on TCP ``port`` of 127.0.0.1 (read from /proc, so the
    listener sees no probe connection)."""
    entry = f"0100007F:{port:04X}"
    deadline = time.monotonic() + timeout
    while entry not in {line.split()[1] for line in Path("/proc/net/tcp").read_text()
                        .splitlines()[1:] if line.split()[3] == "0A"}:
        assert time.monotonic() < deadline, f"nothing listens on TCP port {port}"
        time.sleep(0.05)


def _dial(rig: Rig, to: str) -> str:
    call = rig.sdk.calls.dial(connection_id="default", to=to, from_="+15550003333")
    assert call.data is not None and call.data.call_control_id
    return call.data.call_control_id


def test_browser_calls_reach_the_worker_that_holds_them(rig: Rig) -> None:
    """A WebRTC token and session live in the worker that issued them: the front routes
    the offer a token brings, and the session's DELETE, to that worker by their hash;
    an offer with an API key goes anywhere. Every browser call is hung up by its page."""
    ccids: list[str] = []
    locations: list[str] = []
    try:
        while {_owner(rig, c) for c in ccids} != set(range(WORKERS)):
            assert len(ccids) < MAX_CALLS, [_owner(rig, c) for c in ccids]
            credential = token(rig) if len(ccids) % 3 else rig.server.api_key
            reply = post_offer(rig, offer_sdp(), credential)
            assert reply.status_code == 201, reply.text
            ccids.append(reply.headers["x-call-control-id"])
            locations.append(reply.headers["location"])
        assert post_offer(rig, offer_sdp(), "wrt_" + "x" * 43).status_code == 401
        for location in locations:
            assert httpx.delete(rig.server.base_url + location).status_code == 200
        for ccid in ccids:
            hangup = rig.hooks.wait_event("call.hangup", ccid)
            assert hangup.payload["hangup_source"] == "caller"
        assert httpx.delete(rig.server.base_url + locations[0]).status_code == 404
    finally:
        for location in locations:
            httpx.delete(rig.server.base_url + location)


def test_calls_of_two_workers_are_bridged_through_a_hop(rig: Rig, consumer: Consumer,
                                                        tmp_path: Path) -> None:
    """A bridge of two calls held by different workers: each hears the other bit-exact
    (PCMU both ways, the hop carries PCM), each gets its call.bridged from its owner,
    a stream's playback to the opposite leg crosses the hop; when one hangs up, the
    other goes on unbridged. The internal requests need the deployment's peer token."""
    placed: list[tuple[CallerProcess, str]] = []
    sent: dict[str, bytes] = {}
    try:
        while {_owner(rig, c) for _, c in placed} != set(range(WORKERS)):
            assert len(placed) < MAX_CALLS, [_owner(rig, c) for _, c in placed]
            i = len(placed)
            pcm = clip("two_cities", 4.0, start=4.0 * i)
            wav = write_wav(tmp_path / f"say-{i}.wav", pcm, 8000)
            caller, ccid = _place(rig, f"hop-{i}", "--play", str(wav), "--duration", "12",
                                  "--record", str(tmp_path / f"heard-{i}.wav"))
            placed.append((caller, ccid))
            sent[ccid] = pcm
        a = next(c for _, c in placed if _owner(rig, c) == 0)
        b = next(c for _, c in placed if _owner(rig, c) == 1)
        for _, ccid in placed:
            rig.sdk.calls.actions.answer(ccid)
        for ccid in (a, b):
            rig.hooks.wait_event("call.answered", ccid)
        rig.sdk.calls.actions.bridge(a, call_control_id_to_bridge_with=b)  # via the front
        for ccid in (a, b):
            bridged = rig.hooks.wait_event("call.bridged", ccid)
            assert bridged.payload["call_control_id"] == ccid
        assert _metric(rig, "callstream_bridge_hops") == 2  # a hop in each worker
        # Only the peer token opens the internal routes: an API key does not.
        path = f"/internal/calls/{b}/unbridge"
        for headers in ({}, {"Authorization": f"Bearer {rig.server.api_key}"},
                        {"x-callstream-peer-token": "0" * 64}):
            refused = httpx.post(rig.server.base_url + path, headers=headers,
                                 json={"call_control_id": a})
            assert refused.status_code == 401, refused.text
            assert refused.json()["errors"][0]["code"] == "10009"
        # The token of this deployment, but no sense: a precise refusal.
        token = WebhookSigner(load_or_create_seed(rig.workdir / "webhook_signing_key"))
        garbled = httpx.post(rig.server.base_url + path, content=b"{",
                             headers={"x-callstream-peer-token": token.peer_token()})
        assert garbled.status_code == 422, garbled.text
        rig.sdk.calls.actions.start_streaming(
            a, stream_url=consumer.url, stream_track="inbound_track",
            stream_bidirectional_mode="rtp", stream_bidirectional_target_legs="opposite")
        conn = consumer.wait_connection()
        time.sleep(4.5)  # both talk for 4 s; then the consumer talks, to b only
        reply = clip("beckett", 2.0)
        consumer.send(conn, {"event": "media", "media": {
            "payload": base64.b64encode(PCMU.new_encoder().encode(reply)).decode()}})
        time.sleep(2.5)
        rig.sdk.calls.actions.hangup(a)
        rig.hooks.wait_event("call.hangup", a)
        time.sleep(1.0)
        assert _hangups(rig, b) == 0  # b goes on, unbridged
        status = httpx.get(f"{rig.server.api_url}/calls/{b}",
                           headers={"Authorization": f"Bearer {rig.server.api_key}"})
        assert status.json()["data"]["is_alive"] is True
        rig.sdk.calls.actions.hangup(b)
        rig.hooks.wait_event("call.hangup", b)
        assert _metric(rig, "callstream_bridge_hops") == 0
        # 4 s of speech each way, and the consumer's 2 s: every frame sent was received
        # (or came before its receiver knew the sender), but one or two in flight as a
        # side closed.
        frames = {outcome: _metric(
            rig, f'callstream_bridge_hop_frames_total{{outcome="{outcome}"}}')
            for outcome in ("sent", "received", "early", "dropped")}
        assert frames["received"] > 400 and frames["dropped"] == 0, frames
        assert 0 <= frames["sent"] - frames["received"] - frames["early"] <= 2, frames
        index = {ccid: i for i, (_, ccid) in enumerate(placed)}
        for caller, _ in placed:
            caller.finish(30)
        heard = {}
        for one, other in ((a, b), (b, a)):
            heard[one], _ = read_wav(tmp_path / f"heard-{index[one]}.wav")
            said = through_codec(sent[other], "PCMU")
            assert contains(heard[one], said[8000 * 2:8000 * 2 * 2]), f"{one} missed {other}"
        played = through_codec(reply, "PCMU")[8000:8000 * 3]
        assert contains(heard[b], played) and not contains(heard[a], played)
        streamed = ["streaming.started", "streaming.stopped"]
        for ccid, extra in ((a, streamed), (b, [])):
            order = [d.event_type for d in rig.hooks.events()
                     if d.payload.get("call_control_id") == ccid]
            assert order == ["call.initiated", "call.answered", "call.bridged", *extra,
                             "call.hangup"], (ccid, order)
    finally:
        for caller, _ in placed:
            caller.kill()


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)
def _dumps(value: object) -> bytes:
    return json.dumps(value).encode()  # the stdlib's: integers of any size


_FIELDS = st.fixed_dictionaries({}, optional={
    "call_control_id": st.text(max_size=40) | _JSON, "ssrc": st.integers() | _JSON,
    "hop": st.fixed_dictionaries({}, optional={
        "host": st.text(max_size=40) | _JSON, "port": st.integers() | _JSON,
        "sample_rate": st.sampled_from([8000, 16000, 11025, 0]) | _JSON,
        "ssrc": st.integers() | _JSON}) | _JSON})


@settings(max_examples=60, deadline=None)
@given(action=st.sampled_from(["bridge", "unbridge"]),
       call=st.sampled_from(["v3:nope", "x", "%00", "v3:" + "a" * 300]),
       body=_FIELDS.map(_dumps) | _JSON.map(_dumps) | st.binary(max_size=200))
def test_internal_routes_answer_garbage_precisely(rig: Rig, action: str, call: str,
                                                 body: bytes) -> None:
    """With the right token, any body for any call id gets a 4xx in the error envelope
    (a call nobody holds: 90015), never a 5xx; only a well-formed unbridge notice is
    taken (there is nothing to unbridge: a no-op)."""
    token = WebhookSigner(load_or_create_seed(rig.workdir / "webhook_signing_key"))
    answer = httpx.post(f"{rig.server.base_url}/internal/calls/{call}/{action}",
                        content=body, headers={"x-callstream-peer-token": token.peer_token(),
                                               "content-type": "application/json"})
    if answer.status_code == 200:
        notice = json.loads(body)
        assert action == "unbridge" and type(notice["ssrc"]) is int
        assert isinstance(notice["call_control_id"], str) and notice["call_control_id"]
        return
    assert 400 <= answer.status_code < 500, answer.text
    if answer.status_code != 404:  # a path the router has no route for
        assert answer.json()["errors"][0]["code"] in {"10015", "90015", "90018"}, answer.text


def test_merged_metrics_close_a_connection_close_request(rig: Rig) -> None:
    """The front's own answer ends the connection the client asked to end (bench scrapers
    read /metrics to the end, as they do from one process)."""
    with socket.create_connection(("127.0.0.1", rig.server.http_port), timeout=15) as sock:
        sock.sendall(f"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                     f"{rig.server.api_key}\r\nConnection: close\r\n\r\n".encode())
        whole = b""
        while chunk := sock.recv(65536):  # a timeout raises: the connection stayed open
            whole += chunk
    head, _, body = whole.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert f"callstream_workers_running {float(WORKERS)}".encode() in body


def test_killed_worker_ends_only_its_calls(rig: Rig, consumer: Consumer,
                                           tmp_path: Path) -> None:
    pcm = clip("beckett", 8.0)
    wav = write_wav(tmp_path / "speech.wav", pcm, 8000)
    placed = _place_on_every_worker(rig, "kill", "--play", str(wav), "--duration", "9")
    try:
        by_owner: dict[int, list[str]] = {}
        for _, ccid in placed:
            by_owner.setdefault(_owner(rig, ccid), []).append(ccid)
        assert set(by_owner) == set(range(WORKERS)), by_owner
        victim, survivor = 0, 1
        watched = by_owner[survivor][0]
        for _, ccid in placed:
            if ccid == watched:
                rig.sdk.calls.actions.answer(ccid, stream_url=consumer.url,
                                             stream_track="inbound_track")
            else:
                rig.sdk.calls.actions.answer(ccid)
        conn = consumer.wait_connection()
        rig.hooks.wait_event("call.answered", watched)
        # A call of each bridged: the survivor's is unbridged once the victim's is ended.
        doomed, left = by_owner[victim][0], by_owner[survivor][-1]
        rig.hooks.wait_event("call.answered", doomed)
        rig.hooks.wait_event("call.answered", left)
        rig.sdk.calls.actions.bridge(doomed, call_control_id_to_bridge_with=left)
        time.sleep(2.0)
        pid, _ = _workers(rig)[victim]
        os.kill(pid, signal.SIGKILL)
        # Its calls end, each with one call.hangup, once it is started again.
        for ccid in by_owner[victim]:
            hangup = rig.hooks.wait_event("call.hangup", ccid, timeout=30)
            assert hangup.payload["hangup_source"] == "unknown"
        deadline = time.monotonic() + 30
        while _workers(rig)[victim][0] == pid:
            assert time.monotonic() < deadline, "the killed worker was not started again"
            time.sleep(0.1)
        unbridged = f"call {left}: unbridged, call {doomed} of another process ended"
        while unbridged not in rig.server.log():
            assert time.monotonic() < deadline, "the survivor's call stayed bridged"
            time.sleep(0.1)
        # The survivor's calls went on: none has ended yet, and the watched stream's
        # inbound audio is the caller's, bit-exact, across the kill.
        assert all(_hangups(rig, ccid) == 0 for ccid in by_owner[survivor])
        for caller, _ in placed:
            caller.finish(30)
        for ccid in by_owner[survivor]:
            rig.hooks.wait_event("call.hangup", ccid, timeout=20)
        assert conn.done.wait(10)
        heard = PCMU.new_decoder().decode(b"".join(
            base64.b64decode(f["media"]["payload"]) for f in conn.of("media")))
        sent = PCMU.new_decoder().decode(PCMU.new_encoder().encode(pcm))
        assert contains(heard, sent[8000 * 2:8000 * 2 * 6]), "survivor's audio not bit-exact"
        # Each call: one call.hangup; every stored webhook delivered.
        time.sleep(1.0)
        for _, ccid in placed:
            assert _hangups(rig, ccid) == 1, ccid
        delivered = {d.json["data"]["id"] for d in rig.hooks.events()}
        stored = {event["id"] for event in stored_events(rig.workdir)}
        assert stored <= delivered, stored - delivered
        assert rig.server.proc is not None and rig.server.proc.poll() is None
        assert httpx.get(rig.server.base_url + "/healthz").status_code == 200
        metrics = httpx.get(rig.server.base_url + "/metrics",
                            headers={"Authorization": f"Bearer {rig.server.api_key}"}).text
        assert f'callstream_worker_restarts_total{{worker="{victim}"}} 1.0' in metrics
        assert f"callstream_workers_running {float(WORKERS)}" in metrics
    finally:
        for caller, _ in placed:
            caller.kill()
