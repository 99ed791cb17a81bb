"""Media streaming end to end: real SIP calls (SIPp signalling, real RTP sockets), a real
WebSocket consumer, webhooks through the real receiver, driven by the official SDK."""

from __future__ import annotations

import base64
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from subprocess import Popen
from urllib.parse import parse_qsl

import numpy as np
import pytest
from nacl.signing import VerifyKey
from telnyx import UnprocessableEntityError

from callstream.media.codecs import PCMU
from callstream.webhooks.signing import WebhookSigner, load_or_create_seed
from tests.audio import resample, rtp_packets, segment_snr, snr_db, speech, write_pcap
from tests.e2e.conftest import Rig
from tests.e2e.sipp import DATA, sipp, uac
from tests.helpers import free_udp_tcp_port
from tests.receiver import webhook_receiver
from tests.rtp_peer import RtpPeer
from tests.ws_consumer import Connection, Consumer, ws_consumer

pytestmark = pytest.mark.slow


@dataclass
class PeerCall:
    ccid: str
    peer: RtpPeer
    sipp: Popen[bytes]


@pytest.fixture
def consumer() -> Iterator[Consumer]:
    with ws_consumer() as c:
        yield c


@contextmanager
def peer_call(rig: Rig, **dial: object) -> Iterator[PeerCall]:
    """callstream dials a SIPp UAS whose SDP points at our own RTP socket."""
    peer = RtpPeer()
    port = free_udp_tcp_port()
    proc = sipp("-sf", str(DATA / "uas_rtp_peer.xml"), "-i", "127.0.0.1", "-p", str(port),
                "-mp", str(free_udp_tcp_port()), "-m", "1", "-key", "rtp_port", str(peer.port),
                "-trace_logs", cwd=rig.workdir, timeout=60)
    try:
        call = rig.sdk.calls.dial(connection_id="default", to=f"sip:peer@127.0.0.1:{port}",
                                  from_="+15550003333", **dial)  # type: ignore[arg-type]
        assert call.data is not None and call.data.call_control_id
        ccid = call.data.call_control_id
        rig.hooks.wait_event("call.answered", ccid)
        log = rig.workdir / f"uas_rtp_peer_{proc.pid}_logs.log"
        deadline = time.monotonic() + 10
        while not (log.exists() and "OFFER_PORT=" in log.read_text()):
            assert time.monotonic() < deadline, "SIPp logged no offer port"
            time.sleep(0.05)
        match = re.search(r"OFFER_PORT=(\d+)", log.read_text())
        assert match
        peer.remote = ("127.0.0.1", int(match[1]))
        yield PeerCall(ccid, peer, proc)
    finally:
        peer.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def _ulaw(pcm: bytes) -> bytes:
    return PCMU.new_encoder().encode(pcm)


def _pcm(ulaw: bytes) -> bytes:
    return PCMU.new_decoder().decode(ulaw)


def _payloads(conn: Connection, track: str) -> bytes:
    return b"".join(base64.b64decode(f["media"]["payload"]) for f in conn.of("media")
                    if f["media"]["track"] == track)


def test_dial_with_bidirectional_stream(rig: Rig, consumer: Consumer) -> None:
    """Dial with stream fields: frame order and fields, bit-exact inbound audio, DTMF,
    audio sent back reaches the caller, mark echoed when it has played, stop on hangup."""
    state = base64.b64encode(b"agent-7").decode()
    with peer_call(rig, stream_url=consumer.url, stream_track="both_tracks",
                   stream_auth_token="s3cr3t", stream_bidirectional_mode="rtp",
                   stream_bidirectional_codec="PCMU", client_state=state) as pc:
        conn = consumer.wait_connection()
        conn.wait_for(lambda c: "start" in c.events())
        assert conn.headers["x-telnyx-streaming-auth-token"] == "s3cr3t"
        started = rig.hooks.wait_event("streaming.started", pc.ccid)
        assert started.payload["stream_url"] == consumer.url
        assert started.payload["client_state"] == state
        connected, start = conn.frames[0], conn.frames[1]
        assert connected == {"event": "connected", "version": "1.0.0",
                             "x-telnyx-streaming-auth-token": "s3cr3t"}
        assert start["sequence_number"] == "1"
        assert start["stream_id"] == started.payload["stream_id"]
        details = start["start"]
        assert details["call_control_id"] == pc.ccid
        assert details["from"] == "+15550003333"
        assert details["client_state"] == state
        assert details["media_format"] == {"encoding": "PCMU", "sample_rate": 8000,
                                           "channels": 1}
        assert details["custom_parameters"] == {}

        caller = speech("beckett")[: 8000 * 2 * 3]  # 3 s
        talker = threading.Thread(target=pc.peer.play, args=(caller,))
        talker.start()
        # The consumer talks back while the caller talks: 2 s of other speech, then a mark.
        reply = _ulaw(speech("two_cities")[8000 * 2 * 2: 8000 * 2 * 4])
        # A pause in -0 (0x7F), which a decode and encode again would send as +0 (0xFF).
        reply = reply[:4000] + b"\x7f" * 800 + reply[4800:]
        sent_at = time.monotonic()
        consumer.send(conn, {"event": "media",
                             "media": {"payload": base64.b64encode(reply).decode()}},
                      {"event": "mark", "mark": {"name": "reply-done"}})
        talker.join()
        pc.peer.dtmf("5")
        conn.wait_for(lambda c: bool(c.of("dtmf")) and bool(c.of("mark")))
        mark_index = [f["event"] for f in conn.frames].index("mark")
        mark_delay = conn.times[mark_index] - sent_at
        assert 1.8 <= mark_delay <= 3.0, mark_delay  # echoed once the 2 s had played
        assert conn.of("mark")[0]["mark"] == {"name": "reply-done"}
        assert conn.of("dtmf")[0]["dtmf"] == {"digit": "5"}
        time.sleep(0.3)

        rig.sdk.calls.actions.hangup(pc.ccid)
        assert conn.done.wait(10)
        stopped = rig.hooks.wait_event("streaming.stopped", pc.ccid)
        assert stopped.payload["stream_id"] == start["stream_id"]

    # The frame sequence: connected, start, then media/dtmf/mark..., stop; numbered 1, 2, ...
    events = conn.events()
    assert events[:2] == ["connected", "start"] and events[-1] == "stop"
    assert set(events[2:-1]) <= {"media", "dtmf", "mark"}
    numbers = [int(f["sequence_number"]) for f in conn.frames[1:]]
    assert numbers == list(range(1, len(numbers) + 1))
    assert all(f["stream_id"] == start["stream_id"] for f in conn.frames[1:])
    assert conn.closed_code == 1000
    assert conn.frames[-1]["stop"]["call_control_id"] == pc.ccid
    for track in ("inbound", "outbound"):
        media = [f["media"] for f in conn.of("media") if f["media"]["track"] == track]
        assert [m["chunk"] for m in media] == [str(i) for i in range(1, len(media) + 1)]
        stamps = [int(m["timestamp"]) for m in media]
        assert stamps == sorted(stamps)

    # Inbound: exactly the caller's bytes, a contiguous run of what it sent.
    sent = b"".join(pc.peer.sent)
    inbound = _payloads(conn, "inbound")
    assert len(inbound) >= len(sent) * 0.9
    assert inbound in sent
    # Outbound: exactly what the caller received, and that carries the consumer's audio.
    received = pc.peer.audio(0)
    outbound = _payloads(conn, "outbound")
    assert outbound and outbound in received
    assert reply in received  # byte for byte: a PCMU leg sends a PCMU stream as it came
    assert snr_db(_pcm(reply), _pcm(received)) > 40
    hooks = [d.event_type for d in rig.hooks.events()
             if d.payload.get("call_control_id") == pc.ccid]
    assert hooks.index("streaming.stopped") < hooks.index("call.hangup")


def _sipp_call(rig: Rig, pcm: bytes, hold_ms: int) -> tuple[Popen[bytes], str]:
    """SIPp calls in and, once answered, plays ``pcm`` as PCMU RTP from a pcap."""
    write_pcap(rig.workdir / "caller_speech.pcap", rtp_packets(pcm, "PCMU"))
    proc = uac(rig.sip_target, "uac_caller_speech.xml", cwd=rig.workdir,
               local_port=free_udp_tcp_port(), media_port=free_udp_tcp_port(),
               hold_ms=hold_ms)
    seen = {d.payload["call_control_id"] for d in rig.hooks.events("call.initiated")}
    initiated = rig.hooks.wait_for(
        lambda d: d.event_type == "call.initiated" and d.payload.get("direction") == "incoming"
        and d.payload["call_control_id"] not in seen, timeout=20)
    return proc, initiated.payload["call_control_id"]


def test_answer_with_l16_stream_transcodes(rig: Rig, consumer: Consumer) -> None:
    """answer with stream fields: L16 16 kHz big-endian frames carry the caller's speech."""
    caller = speech("beckett")[: 8000 * 2 * 3]
    proc, ccid = _sipp_call(rig, caller, hold_ms=4000)
    rig.sdk.calls.actions.answer(
        ccid, stream_url=consumer.url, stream_codec="L16",
        extra_body={"custom_parameters": [{"name": "customer_id", "value": "c-42"}]})
    conn = consumer.wait_connection()
    assert "x-telnyx-streaming-auth-token" not in conn.headers
    assert proc.wait(30) == 0
    rig.hooks.wait_event("call.hangup", ccid)
    assert conn.done.wait(10) and conn.closed_code == 1000
    start = conn.of("start")[0]["start"]
    assert start["media_format"] == {"encoding": "L16", "sample_rate": 16000, "channels": 1}
    assert start["custom_parameters"] == {"customer_id": "c-42"}
    assert conn.frames[0] == {"event": "connected", "version": "1.0.0"}
    media = [f["media"] for f in conn.of("media")]
    assert media and {m["track"] for m in media} == {"inbound"}
    payloads = [base64.b64decode(m["payload"]) for m in media]
    assert {len(p) for p in payloads} == {640}
    big_endian = b"".join(payloads)
    pcm16 = np.frombuffer(big_endian, ">i2").astype("<i2").tobytes()
    reference = resample(_pcm(_ulaw(caller)), 8000, 16000)
    assert segment_snr(reference, pcm16, 16000) > 15
    rig.hooks.wait_event("streaming.stopped", ccid)


def _wait_count(rig: Rig, event_type: str, ccid: str, count: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        got = [d for d in rig.hooks.events(event_type) if d.payload["call_control_id"] == ccid]
        if len(got) >= count or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(got) == count, (event_type, len(got))


def _error(exc: pytest.ExceptionInfo[UnprocessableEntityError]) -> dict[str, object]:
    body = exc.value.body
    assert isinstance(body, dict)
    return dict(body["errors"][0])


def test_streaming_start_stop_via_sdk(rig: Rig, consumer: Consumer) -> None:
    """start_streaming/stop_streaming: validation, several streams and one bidirectional,
    stop by stream_id and stop all, per-stream counters on /metrics, clear timing."""
    with peer_call(rig) as pc:
        actions = rig.sdk.calls.actions
        bad = [
            ({"stream_url": consumer.url, "stream_track": "left"}, "10032", "/stream_track"),
            ({"stream_url": "http://example.com/x"}, "10003", "/stream_url"),
            ({"stream_url": consumer.url, "stream_codec": "AMR-WB"}, "10015", "/stream_codec"),
            ({"stream_url": consumer.url, "stream_bidirectional_codec": "OPUS",
              "stream_bidirectional_sampling_rate": 22050}, "10015",
             "/stream_bidirectional_sampling_rate"),
            ({"stream_url": consumer.url, "stream_bidirectional_codec": "AMR-WB"}, "10015",
             "/stream_bidirectional_codec"),
            ({"stream_url": consumer.url, "stream_bidirectional_sampling_rate": 11025},
             "10032", "/stream_bidirectional_sampling_rate"),
            ({"stream_url": consumer.url, "enable_dialogflow": True}, "10015",
             "/enable_dialogflow"),
            ({"stream_url": consumer.url, "stream_auth_token": "x" * 4001}, "10033",
             "/stream_auth_token"),
            ({}, "10004", "/stream_url"),
        ]
        for body, code, pointer in bad:
            with pytest.raises(UnprocessableEntityError) as info:
                actions.start_streaming(pc.ccid, extra_body=body)
            err = _error(info)
            assert (err["code"], err["source"]) == (code, {"pointer": pointer}), (body, err)

        actions.start_streaming(pc.ccid, stream_url=consumer.url, command_id="s1")
        actions.start_streaming(pc.ccid, stream_url=consumer.url, command_id="s1")  # repeat
        actions.start_streaming(pc.ccid, stream_url=consumer.url + "?two",
                                stream_track="outbound_track")
        actions.start_streaming(pc.ccid, stream_url=consumer.url + "?bidi",
                                stream_bidirectional_mode="rtp",
                                stream_bidirectional_target_legs="self")
        with pytest.raises(UnprocessableEntityError) as info:
            actions.start_streaming(pc.ccid, stream_url=consumer.url,
                                    stream_bidirectional_mode="mp3")
        assert _error(info)["code"] == "90045"
        conns = [consumer.wait_connection(i) for i in range(3)]
        for conn in conns:
            conn.wait_for(lambda c: "start" in c.events())
        time.sleep(0.2)
        assert len(consumer.connections) == 3  # the repeated command_id started nothing
        bidi = next(c for c in conns if c.path.endswith("?bidi"))
        first = next(c for c in conns if c.path == "/media")
        first_id = first.of("start")[0]["stream_id"]

        talker = threading.Thread(target=pc.peer.play, args=(speech("beckett")[:16000],))
        talker.start()
        first.wait_for(lambda c: len(c.of("media")) >= 20)
        with rig.server.client() as http:
            metrics = http.get("/metrics").text
        sent = re.search(
            rf'callstream_stream_frames_sent_total{{stream_id="{first_id}"}} (\d+)', metrics)
        assert sent and int(float(sent[1])) >= 20
        assert f'callstream_stream_connect_seconds{{stream_id="{first_id}"}}' in metrics
        assert f'callstream_stream_frames_dropped_total{{stream_id="{first_id}"}}' in metrics

        # clear: 10 s queued, a mark behind it; clear after 0.5 s echoes the mark at once
        # and the caller stops hearing it.
        talker.join()
        long_reply = _ulaw(speech("two_cities")[: 8000 * 2 * 10])
        consumer.send(bidi, {"event": "media",
                             "media": {"payload": base64.b64encode(long_reply).decode()}},
                      {"event": "mark", "mark": {"name": "after-long"}})
        time.sleep(0.5)
        cleared_at = time.monotonic()
        consumer.send(bidi, {"event": "clear"})
        bidi.wait_for(lambda c: bool(c.of("mark")), timeout=5)
        echoed = bidi.times[[f["event"] for f in bidi.frames].index("mark")]
        assert echoed - cleared_at < 0.3
        time.sleep(0.3)
        before = len(pc.peer.received)
        time.sleep(0.5)
        assert len(pc.peer.received) - before <= 2  # nothing more of it plays
        assert 15 <= before <= 60  # about 0.5 s of it had played

        actions.stop_streaming(pc.ccid, stream_id=first_id)
        assert first.done.wait(10) and first.events()[-1] == "stop"
        assert first.closed_code == 1000
        stopped = rig.hooks.wait_for(lambda d: d.event_type == "streaming.stopped"
                                     and d.payload.get("stream_id") == first_id)
        assert stopped.payload["call_control_id"] == pc.ccid
        with pytest.raises(UnprocessableEntityError) as info:
            actions.stop_streaming(pc.ccid, stream_id=first_id)
        assert _error(info)["code"] == "10005"
        actions.stop_streaming(pc.ccid)  # every remaining stream
        for conn in conns:
            assert conn.done.wait(10) and conn.events()[-1] == "stop"
        _wait_count(rig, "streaming.stopped", pc.ccid, 3)
        assert rig.sdk.calls.retrieve_status(pc.ccid).data.is_alive  # type: ignore[union-attr]
        rig.sdk.calls.actions.hangup(pc.ccid)
        rig.hooks.wait_event("call.hangup", pc.ccid)


def test_streaming_before_answer_is_refused(rig: Rig, consumer: Consumer) -> None:
    proc, ccid = _sipp_call(rig, speech("beckett")[:8000], hold_ms=500)
    with pytest.raises(UnprocessableEntityError) as info:
        rig.sdk.calls.actions.start_streaming(ccid, stream_url=consumer.url)
    assert _error(info)["code"] == "90034"
    rig.sdk.calls.actions.answer(ccid)
    assert proc.wait(30) == 0
    rig.hooks.wait_event("call.hangup", ccid)
    with pytest.raises(UnprocessableEntityError) as info:
        rig.sdk.calls.actions.start_streaming(ccid, stream_url=consumer.url)
    assert _error(info)["code"] == "90018"


def test_consumer_refuses_dies_or_leaves(rig: Rig, consumer: Consumer) -> None:
    """A refused upgrade and a consumer that dies give streaming.failed, one that closes
    cleanly gives streaming.stopped; the call goes on through all of them."""
    with peer_call(rig) as pc:
        actions = rig.sdk.calls.actions
        consumer.refuse = True
        actions.start_streaming(pc.ccid, stream_url=consumer.url)
        failed = rig.hooks.wait_event("streaming.failed", pc.ccid)
        assert failed.payload["failure_reason"] == "connection_failed"
        assert failed.payload["stream_type"] == "websocket"
        assert failed.payload["stream_params"] == {
            "stream_url": consumer.url, "track": "inbound_track",
            "stream_track": "inbound_track"}
        consumer.refuse = False

        talker = threading.Thread(target=pc.peer.play, args=(speech("beckett")[:8000 * 2 * 2],))
        talker.start()
        consumer.die_after = 10
        actions.start_streaming(pc.ccid, stream_url=consumer.url + "?dies")
        rig.hooks.wait_for(lambda d: d.event_type == "streaming.failed"
                           and d.payload["failure_reason"] == "connection_lost")
        consumer.die_after = None
        consumer.close_after = 10
        actions.start_streaming(pc.ccid, stream_url=consumer.url + "?leaves")
        rig.hooks.wait_event("streaming.stopped", pc.ccid)
        talker.join()
        assert rig.sdk.calls.retrieve_status(pc.ccid).data.is_alive  # type: ignore[union-attr]
        with rig.server.client() as http:
            assert http.get("/v2/calls").json()["meta"]["total_results"] >= 1
        rig.sdk.calls.actions.hangup(pc.ccid)
        hangup = rig.hooks.wait_event("call.hangup", pc.ccid)
        assert hangup.payload["hangup_cause"] == "normal_clearing"
        types = [d.event_type for d in rig.hooks.events()
                 if d.payload.get("call_control_id") == pc.ccid]
        assert types.count("streaming.started") == 2
        assert types.count("streaming.stopped") == 1


def test_both_tracks_on_a_bridged_call(rig: Rig, consumer: Consumer) -> None:
    """Two dialled legs bridged: both_tracks on A carries A (inbound) and B (outbound);
    a bidirectional stream targeting the opposite leg is heard by B."""
    with peer_call(rig) as a, peer_call(rig) as b:
        with rig.server.client() as http:
            bridged = http.post(f"/v2/calls/{a.ccid}/actions/bridge",
                                json={"call_control_id": b.ccid})
            assert bridged.status_code == 200, bridged.text
        rig.sdk.calls.actions.start_streaming(
            a.ccid, stream_url=consumer.url, stream_track="both_tracks",
            stream_bidirectional_mode="rtp", stream_bidirectional_target_legs="opposite")
        conn = consumer.wait_connection()
        conn.wait_for(lambda c: "start" in c.events())
        talkers = [threading.Thread(target=a.peer.play, args=(speech("beckett")[:48000],)),
                   threading.Thread(target=b.peer.play, args=(speech("two_cities")[:48000],))]
        for t in talkers:
            t.start()
        for t in talkers:
            t.join()
        # Then A is silent and the consumer talks: only B must hear it.
        reply = _ulaw(speech("two_cities")[8000 * 2 * 10: 8000 * 2 * 12])
        consumer.send(conn, {"event": "media",
                             "media": {"payload": base64.b64encode(reply).decode()}})
        time.sleep(2.4)
        rig.sdk.calls.actions.stop_streaming(a.ccid)
        assert conn.done.wait(10)
        inbound, outbound = _payloads(conn, "inbound"), _payloads(conn, "outbound")
        assert len(inbound) > 0.8 * len(b"".join(a.peer.sent)) and inbound in b"".join(a.peer.sent)
        assert outbound and outbound in a.peer.audio()  # what A heard, byte for byte
        assert segment_snr(_pcm(b"".join(b.peer.sent)), _pcm(outbound), 8000) > 20  # B's voice
        heard = _pcm(b.peer.audio())
        snr = segment_snr(heard[-8000 * 2 * 3:], _pcm(reply), 8000)
        assert snr > 30, snr  # B heard the consumer...
        assert _pcm(reply)[:3200] not in _pcm(a.peer.audio())  # ...and A did not
        for pc in (a, b):
            rig.sdk.calls.actions.hangup(pc.ccid)
            rig.hooks.wait_event("call.hangup", pc.ccid)


def test_texml_streams_with_signed_status_callbacks(rig: Rig, consumer: Consumer) -> None:
    """The SDK's texml streams_json / streaming_sid_json (JSON), and the same as a form."""
    seed = load_or_create_seed(rig.workdir / "webhook_signing_key")
    verify = VerifyKey(WebhookSigner(seed).public_key)
    with peer_call(rig) as pc, webhook_receiver() as callbacks:
        texml = rig.sdk.texml.accounts.calls
        started = texml.streams_json(pc.ccid, account_sid="acct-1", url=consumer.url,
                                     name="agent", track="both_tracks",
                                     status_callback=callbacks.url)
        assert started.status == "in-progress" and started.name == "agent"
        assert started.call_sid == pc.ccid and started.account_sid == "acct-1"
        uri = f"/v2/texml/Accounts/acct-1/Calls/{pc.ccid}/Streams/{started.sid}.json"
        assert started.uri == uri
        conn = consumer.wait_connection()
        conn.wait_for(lambda c: "start" in c.events())
        assert conn.of("start")[0]["stream_id"] == started.sid
        assert started.sid is not None
        stopped = texml.streams.streaming_sid_json(started.sid, account_sid="acct-1",
                                                   call_sid=pc.ccid, status="stopped")
        assert stopped.status == "stopped" and stopped.sid == started.sid
        assert conn.done.wait(10) and conn.events()[-1] == "stop"

        with rig.server.client() as http:  # Node's form encoding
            form = http.post(f"/v2/texml/Accounts/acct-1/Calls/{pc.ccid}/Streams.json",
                             content=f"Url={consumer.url}&Track=inbound_track&Name=form",
                             headers={"content-type": "application/x-www-form-urlencoded"})
            assert form.status_code == 200, form.text
            sid = form.json()["sid"]
            bad = http.post(f"/v2/texml/Accounts/acct-1/Calls/{pc.ccid}/Streams.json",
                            content="Url=http://x&Track=inbound_track",
                            headers={"content-type": "application/x-www-form-urlencoded"})
            assert bad.status_code == 422
            assert bad.json()["errors"][0]["source"] == {"pointer": "/Url"}
            missing = http.post("/v2/texml/Accounts/acct-1/Calls/v3:nope/Streams.json",
                                json={"Url": consumer.url})
            assert missing.status_code == 404
            assert missing.json() == {"errors": [{"detail": "Resource not found"}]}
            unknown = http.post(f"/v2/texml/Accounts/acct-1/Calls/{pc.ccid}/Streams/x.json",
                                content="Status=stopped",
                                headers={"content-type": "application/x-www-form-urlencoded"})
            assert unknown.status_code == 404
            done = http.post(f"/v2/texml/Accounts/acct-1/Calls/{pc.ccid}/Streams/{sid}.json",
                             content="Status=stopped",
                             headers={"content-type": "application/x-www-form-urlencoded"})
            assert done.json()["status"] == "stopped"

        deadline = time.monotonic() + 10
        while len(callbacks.deliveries) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        forms = [d for d in callbacks.deliveries]
        assert len(forms) == 2
        for d in forms:
            assert d.headers["content-type"] == "application/x-www-form-urlencoded"
            ts = d.headers["telnyx-timestamp"]
            verify.verify(ts.encode() + b"|" + d.body,
                          base64.b64decode(d.headers["telnyx-signature-ed25519"]))
        fields = [dict(parse_qsl(d.body.decode())) for d in forms]
        assert [f["StreamEvent"] for f in fields] == ["stream-started", "stream-stopped"]
        for f in fields:
            assert f["StreamSid"] == started.sid and f["CallSid"] == pc.ccid
            assert f["AccountSid"] == "acct-1" and f["StreamName"] == "agent"
        rig.sdk.calls.actions.hangup(pc.ccid)


def test_dial_establishes_stream_before_originate(rig: Rig, consumer: Consumer) -> None:
    with peer_call(rig, stream_url=consumer.url,
                   stream_establish_before_call_originate=True) as pc:
        conn = consumer.wait_connection()
        conn.wait_for(lambda c: "start" in c.events())
        # connected arrived before the call was answered; start after.
        answered = rig.hooks.wait_event("call.answered", pc.ccid)
        assert conn.events()[:2] == ["connected", "start"]
        assert conn.times[0] < conn.times[1]
        assert answered is not None
        pc.peer.play(speech("beckett")[:16000])
        conn.wait_for(lambda c: len(c.of("media")) >= 40)
        rig.sdk.calls.actions.hangup(pc.ccid)
        assert conn.done.wait(10) and conn.events()[-1] == "stop"
        rig.hooks.wait_event("streaming.stopped", pc.ccid)
