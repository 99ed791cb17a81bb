"""The official Node SDK (npm `telnyx`, as examples/node_sdk locks it) on live calls.

Every streaming, forking and transcription action goes through the SDK's own methods
(tests/examples/node/sdk_driver.mjs), against a real `callstream serve` that real SIP
calls (`callstream call`) reach; each test checks what the action did, not only its
HTTP 200: the consumer's WebSocket frames, the caller's recording, the fork targets'
RTP, the transcripts. Every webhook of these calls goes to the driver and must pass the
SDK's verifier (`client.webhooks.unwrap`; `TelnyxWebhook` for TeXML's form callbacks).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import numpy as np
import pytest

from callstream.media.codecs import PCMU
from callstream.media.rtp import RtpPacket
from tests.audio import read_wav, speech, tone, write_wav
from tests.corpus import clip as corpus_clip
from tests.corpus import normalize, phone_band, wer
from tests.e2e.calling import JITTER_BUFFER_MS, CallerProcess, speech_pcap, start_caller
from tests.e2e.sipp import uas
from tests.e2e.test_forking import recorders, settle, wait_until
from tests.examples.node_driver import NodeApiError, NodeSdk, node_sdk
from tests.examples.test_python_sdk_app import forge
from tests.helpers import (
    ServerProcess,
    free_port,
    free_udp_tcp_port,
    running_server,
    stored_events,
)
from tests.streaming.test_playback import mp3_file
from tests.ws_consumer import Connection, Consumer, ws_consumer

pytestmark = pytest.mark.slow

RATE = 8000
TONE_HZ = 1000.0
#: Louder than this (PCM s16) is the consumer's tone in the caller's recording, not silence.
LOUD = 2000


@dataclass
class NodeRig:
    server: ServerProcess
    sdk: NodeSdk
    workdir: Path


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeRig]:
    """A server whose webhooks all go to the Node driver, which verifies each one."""
    workdir = tmp_path_factory.mktemp("node-sdk")
    port = free_port()
    env = {"CALLSTREAM_WEBHOOK_URL": f"http://127.0.0.1:{port}/webhooks",
           "CALLSTREAM_JITTER_BUFFER_MS": JITTER_BUFFER_MS,
           "CALLSTREAM_RTP_PORT_MIN": "39700", "CALLSTREAM_RTP_PORT_MAX": "39899"}
    with running_server(workdir / "data", env=env) as server:
        public_key = server.webhook_public_key()
        with node_sdk(server.api_key, public_key, server.api_url, port) as sdk:
            yield NodeRig(server, sdk, workdir)
            assert not sdk.rejected, f"the SDK refused callstream's webhooks: {sdk.rejected}"


@pytest.fixture
def consumer() -> Iterator[Consumer]:
    with ws_consumer() as c:
        yield c


@dataclass
class LiveCall:
    ccid: str
    caller: CallerProcess
    played: bytes  # PCM the caller plays once answered
    heard: Path  # its recording of what the server sent it


#: ``call_in(user, pcm, seconds)``: a call to ``user`` that plays ``pcm``, ended by the
#: caller after ``seconds`` unless the server hangs up first.
PlaceCall = Callable[[str, bytes, float], LiveCall]


@pytest.fixture
def call_in(rig: NodeRig, tmp_path: Path) -> Iterator[PlaceCall]:
    """Places a call (`callstream call`) to ``user`` and returns it once the SDK has seen
    (and verified) its call.initiated; the caller is ended with the test."""
    callers: list[CallerProcess] = []

    def place(user: str, pcm: bytes, seconds: float) -> LiveCall:
        write_wav(tmp_path / f"{user}.wav", pcm, RATE)
        heard = tmp_path / f"{user}-heard.wav"
        caller = start_caller(f"sip:{user}@127.0.0.1:{rig.server.sip_port}", "--play",
                              str(tmp_path / f"{user}.wav"), "--record", str(heard),
                              "--codec", "PCMU", "--duration", str(seconds))
        callers.append(caller)
        initiated = rig.sdk.wait_webhook("call.initiated", to=user, direction="incoming")
        return LiveCall(initiated["call_control_id"], caller, pcm, heard)

    yield place
    for caller in callers:
        caller.kill()


def _ulaw(pcm: bytes) -> bytes:
    return PCMU.new_encoder().encode(pcm)


def _pcm(ulaw: bytes) -> bytes:
    return PCMU.new_decoder().decode(ulaw)


def _payloads(conn: Connection, track: str) -> bytes:
    return b"".join(base64.b64decode(f["media"]["payload"]) for f in conn.of("media")
                    if f["media"]["track"] == track)


def _sent_in_order(conn: Connection, sent: bytes) -> int:
    """Each voiced inbound frame of the stream is a frame of ``sent`` (the PCMU the caller
    put on the wire), in the order sent; returns how many there were. Frames may be
    missing (a busy server drops overdue audio), never altered or reordered."""
    at = 0
    frames = [payload for f in conn.of("media") if f["media"]["track"] == "inbound"
              and len(set(payload := base64.b64decode(f["media"]["payload"]))) > 1]
    for k, frame in enumerate(frames):
        found = sent.find(frame, at)
        assert found >= 0, f"inbound frame {k} of {len(frames)} is not what the caller sent"
        at = found + len(frame)
    return len(frames)


def _tone_seconds(pcm: bytes, rate: int = RATE) -> float:
    """How long ``pcm`` carries the consumer's tone: its loud 20 ms frames, which must be
    the tone's frequency."""
    x = np.frombuffer(pcm, "<i2").astype(np.float64)
    frame = rate // 50
    frames = x[: len(x) // frame * frame].reshape(-1, frame)
    loud = frames[np.abs(frames).max(axis=1) > LOUD]
    if not len(loud):
        return 0.0
    joined = loud.reshape(-1)
    spectrum = np.abs(np.fft.rfft(joined * np.hanning(len(joined))))
    peak = float(np.fft.rfftfreq(len(joined), 1 / rate)[np.argmax(spectrum)])
    assert abs(peak - TONE_HZ) < 20, f"the loud audio peaks at {peak:.0f} Hz, not {TONE_HZ}"
    return len(loud) / 50


def _answered(rig: NodeRig, live: LiveCall, *args: Any) -> None:
    reply = rig.sdk.call("calls.actions.answer", live.ccid, *args)
    assert reply.status == 200 and reply.result == {"data": {"result": "ok"}}
    # No params: the SDK sends no body at all (JSON content type, zero bytes).
    assert reply.sent.body == (json.dumps(args[0], separators=(",", ":")) if args else None)
    rig.sdk.wait_webhook("call.answered", live.ccid)


def _all_verified(rig: NodeRig, ccid: str) -> list[str]:
    """Every webhook the server stored for the call reached the SDK and passed its
    verifier; returns their types in the order stored."""
    stored = [e for e in stored_events(rig.server.data_dir)
              if (e.get("payload") or {}).get("call_control_id") == ccid]
    wait_until(lambda: {e["id"] for e in stored} <= {e["id"] for e in rig.sdk.events(ccid)},
               timeout=20, what="every stored webhook verified by the Node SDK")
    return [e["event_type"] for e in stored]


def test_streaming_start_and_stop_with_every_option(rig: NodeRig, consumer: Consumer,
                                                    call_in: PlaceCall) -> None:
    """answer and streaming_stop with no body; streaming_start with every bidirectional
    option (L16 at 16 kHz back to the caller); a second stream in MP3 mode, stopped by its
    id; hangup with no body."""
    live = call_in("stream", speech("beckett")[: 2 * RATE * 6], 30)
    _answered(rig, live)
    state = base64.b64encode(b"node-agent").decode()
    options = {
        "stream_url": consumer.url, "stream_track": "both_tracks", "stream_codec": "PCMU",
        "stream_bidirectional_mode": "rtp", "stream_bidirectional_codec": "L16",
        "stream_bidirectional_sampling_rate": 16000,
        "stream_bidirectional_target_legs": "self", "stream_auth_token": "node-token",
        "custom_parameters": [{"name": "agent", "value": "node-sdk"}],
        "client_state": state, "command_id": "node-stream-1",
    }
    reply = rig.sdk.call("calls.actions.startStreaming", live.ccid, options)
    assert reply.sent.content_type == "application/json"
    assert reply.sent.body is not None and json.loads(reply.sent.body) == options

    conn = consumer.wait_connection()
    conn.wait_for(lambda c: "start" in c.events())
    assert conn.headers["x-telnyx-streaming-auth-token"] == "node-token"
    start = conn.of("start")[0]
    assert start["start"]["custom_parameters"] == {"agent": "node-sdk"}
    assert start["start"]["client_state"] == state
    assert start["start"]["media_format"] == {"encoding": "PCMU", "sample_rate": RATE,
                                              "channels": 1}
    started = rig.sdk.wait_webhook("streaming.started", live.ccid)
    assert started["stream_id"] == start["stream_id"] and started["client_state"] == state

    # The caller's speech arrives as it sent it; 1.5 s of tone sent back in L16 16 kHz
    # big-endian is heard by the caller, and its mark comes back once played.
    conn.wait_for(lambda c: len(_payloads(c, "inbound")) >= RATE)
    assert _sent_in_order(conn, _ulaw(live.played)) >= 50
    reply_pcm = np.frombuffer(tone(TONE_HZ, 1.5, 16000), "<i2").astype(">i2").tobytes()
    consumer.send(conn, {"event": "media",
                         "media": {"payload": base64.b64encode(reply_pcm).decode()}},
                  {"event": "mark", "mark": {"name": "tone-played"}})
    conn.wait_for(lambda c: bool(c.of("mark")), timeout=20)
    assert conn.of("mark")[0]["mark"] == {"name": "tone-played"}
    assert _tone_seconds(_pcm(_payloads(conn, "outbound"))) >= 1.3

    reply = rig.sdk.call("calls.actions.stopStreaming", live.ccid)
    assert reply.sent.body is None
    assert conn.done.wait(10) and conn.closed_code == 1000
    assert conn.events()[-1] == "stop"
    stopped = rig.sdk.wait_webhook("streaming.stopped", live.ccid)
    assert stopped["stream_id"] == start["stream_id"]

    # A second stream: L16 at 16 kHz to the consumer, which answers with an MP3 file (the
    # default bidirectional mode) of 1 s of tone; stopped by its stream_id.
    rig.sdk.call("calls.actions.startStreaming", live.ccid,
                 {"stream_url": consumer.url, "stream_codec": "L16",
                  "stream_bidirectional_mode": "mp3"})
    second = consumer.wait_connection(1)
    second.wait_for(lambda c: len(c.of("media")) >= 10)
    sid = second.of("start")[0]["stream_id"]
    assert second.of("start")[0]["start"]["media_format"] == {
        "encoding": "L16", "sample_rate": 16000, "channels": 1}
    rig.sdk.wait_webhook("streaming.started", live.ccid, stream_id=sid)
    consumer.send(second, {"event": "media", "media": {
        "payload": base64.b64encode(mp3_file(tone(TONE_HZ, 1.0), RATE)).decode()}},
                  {"event": "mark", "mark": {"name": "mp3-played"}})
    second.wait_for(lambda c: bool(c.of("mark")), timeout=20)
    rig.sdk.call("calls.actions.stopStreaming", live.ccid, {"stream_id": sid})
    assert second.done.wait(10) and second.events()[-1] == "stop"
    rig.sdk.wait_webhook("streaming.stopped", live.ccid, stream_id=sid)

    assert rig.sdk.call("calls.actions.hangup", live.ccid).sent.body is None
    code, summary, err = live.caller.finish(30)
    assert code == 0 and summary["ended_by"] == "remote", err
    heard = _tone_seconds(read_wav(live.heard)[0])
    print(f"\n[measured] tone of 1.5 s (L16 16 kHz) + 1 s (MP3): {heard:.2f} s heard by "
          "the caller")
    assert 2.2 <= heard <= 2.8
    rig.sdk.wait_webhook("call.hangup", live.ccid)
    kinds = _all_verified(rig, live.ccid)
    assert kinds.count("streaming.started") == kinds.count("streaming.stopped") == 2


def test_dial_with_a_stream_opened_before_the_call(rig: NodeRig, consumer: Consumer,
                                                  tmp_path: Path) -> None:
    """calls.dial with stream fields and stream_establish_before_call_originate: the
    WebSocket is open when dial answers, then carries what the callee says."""
    said = speech("two_cities")[: 2 * RATE * 3]
    speech_pcap(tmp_path / "speech.pcap", said, "PCMU")
    port = free_udp_tcp_port()
    callee = uas("uas_pcap.xml", cwd=tmp_path, port=port, media_port=free_udp_tcp_port(),
                 extra=("-d", "4000"))
    try:
        state = base64.b64encode(b"node-dial").decode()
        reply = rig.sdk.call("calls.dial", {
            "connection_id": "default", "to": f"sip:callee@127.0.0.1:{port}",
            "from": "+15550004444", "client_state": state, "stream_url": consumer.url,
            "stream_track": "inbound_track", "stream_codec": "PCMU",
            "stream_bidirectional_mode": "rtp", "stream_bidirectional_codec": "PCMU",
            "stream_establish_before_call_originate": True})
        ccid = reply.result["data"]["call_control_id"]
        assert consumer.connections, "dial answered before its WebSocket was open"
        conn = consumer.connections[0]
        rig.sdk.wait_webhook("call.answered", ccid)
        conn.wait_for(lambda c: len(_payloads(c, "inbound")) >= RATE)
        start = conn.of("start")[0]["start"]
        assert (start["call_control_id"], start["from"], start["client_state"]) == (
            ccid, "+15550004444", state)
        assert _sent_in_order(conn, _ulaw(said)) >= 50
        rig.sdk.wait_webhook("call.hangup", ccid, timeout=30)  # the callee's BYE
        assert conn.done.wait(10) and conn.events()[-1] == "stop"
        kinds = _all_verified(rig, ccid)
        assert kinds.index("streaming.started") < kinds.index("streaming.stopped") \
            < kinds.index("call.hangup")
        assert callee.wait(30) == 0
    finally:
        if callee.poll() is None:
            callee.kill()
            callee.wait()


def test_fork_start_and_stop(rig: NodeRig, consumer: Consumer, call_in: PlaceCall) -> None:
    """fork_start sends the caller's RTP to rx and the server's (a bot's reply, streamed
    back on the stream answer started) to tx, byte for byte; fork_stop with no body ends
    both."""
    live = call_in("fork", speech("two_cities")[: 2 * RATE * 8], 30)
    _answered(rig, live, {"stream_url": consumer.url, "stream_bidirectional_mode": "rtp",
                          "stream_bidirectional_codec": "PCMU"})
    conn = consumer.wait_connection()
    conn.wait_for(lambda c: "start" in c.events())
    bot = _ulaw(speech("beckett")[: 2 * RATE * 5])
    consumer.send(conn, {"event": "media", "media": {"payload": base64.b64encode(bot).decode()}})
    with recorders("127.0.0.1", "127.0.0.1") as (rx, tx):
        reply = rig.sdk.call("calls.actions.startForking", live.ccid,
                             {"rx": rx.udp, "tx": tx.udp, "stream_type": "decrypted"})
        assert reply.status == 200
        rig.sdk.wait_webhook("call.fork.started", live.ccid)
        wait_until(lambda: len(rx.packets()) >= 50 and len(tx.packets()) >= 50, timeout=20,
                   what="a second of forked RTP each way")
        for target, audio in ((rx, _ulaw(live.played)), (tx, bot)):
            packets = [RtpPacket.parse(p) for p in target.packets()]
            assert {p.payload_type for p in packets} == {0}
            voiced = [p.payload for p in packets if len(set(p.payload)) > 1]
            assert voiced and all(payload in audio for payload in voiced)

        assert rig.sdk.call("calls.actions.stopForking", live.ccid).sent.body is None
        rig.sdk.wait_webhook("call.fork.stopped", live.ccid)
        settle(rx, tx)
        counts = len(rx.packets()), len(tx.packets())
        time.sleep(1.0)  # both still talk: nothing more may be forked
        assert (len(rx.packets()), len(tx.packets())) == counts
    rig.sdk.call("calls.actions.hangup", live.ccid, {"client_state": "ZW5k"})
    assert live.caller.finish(30)[0] == 0
    assert rig.sdk.wait_webhook("call.hangup", live.ccid)["client_state"] == "ZW5k"
    _all_verified(rig, live.ccid)


def test_transcription_start_and_stop(rig: NodeRig, call_in: PlaceCall) -> None:
    """transcription_start: the caller's first sentence comes back in verified
    call.transcription webhooks; transcription_stop with no body: its second is never
    transcribed."""
    first, second = corpus_clip("sense_and_sensibility_01_austen_64kb-0870"), \
        corpus_clip("goforward")
    lead, gap = 2.5, 6.0  # silence before each sentence: time for the SDK's request
    first_pcm = phone_band(first)
    line = (b"\0\0" * int(lead * RATE) + first_pcm + b"\0\0" * int(gap * RATE)
            + phone_band(second) + b"\0\0" * RATE)
    live = call_in("transcribe", line, len(line) / 2 / RATE + 1.0)
    _answered(rig, live, {})  # an empty object: the SDK sends "{}"
    answered_at = time.monotonic()
    rig.sdk.call("calls.actions.startTranscription", live.ccid, {
        "transcription_engine": "B", "transcription_tracks": "inbound",
        "transcription_engine_config": {"transcription_engine": "B", "language": "en",
                                        "interim_results": True}})
    assert time.monotonic() < answered_at + lead, "transcription started after the speech"
    # Stop once the first sentence has been said (its final may follow the stop: an
    # utterance in progress is finished), well before the second starts.
    time.sleep(max(0.0, answered_at + lead + len(first_pcm) / 2 / RATE + 1.0
                   - time.monotonic()))
    assert rig.sdk.call("calls.actions.stopTranscription", live.ccid).sent.body is None
    stopped_at = time.monotonic()
    assert stopped_at < answered_at + lead + len(first_pcm) / 2 / RATE + gap - 1.0, \
        "the stop came too late to prove anything"
    with pytest.raises(NodeApiError) as info:  # nothing left to stop
        rig.sdk.call("calls.actions.stopTranscription", live.ccid)
    assert info.value.cls == "UnprocessableEntityError" and info.value.code == "10015"

    assert live.caller.finish(60)[0] == 0
    rig.sdk.wait_webhook("call.hangup", live.ccid)

    def transcripts() -> list[dict[str, Any]]:
        return [e["payload"]["transcription_data"] for e in rig.sdk.events(live.ccid)
                if e["event_type"] == "call.transcription"]

    # The final of speech cut off by the stop may come after the hangup (a busy machine).
    wait_until(lambda: any(t["is_final"] for t in transcripts()), timeout=60,
               what="a final transcript")
    _all_verified(rig, live.ccid)
    data = transcripts()
    finals = " ".join(t["transcript"] for t in data if t["is_final"])
    assert wer(first.reference, finals) <= 0.25, finals
    assert {t["transcription_track"] for t in data} == {"inbound"}
    heard = normalize(" ".join(t["transcript"] for t in data))
    assert not {"forward", "meters"} & set(heard), f"transcribed after the stop: {heard}"


def test_texml_streams_json_is_form_encoded_and_works(rig: NodeRig, consumer: Consumer,
                                                      call_in: PlaceCall) -> None:
    """texml.accounts.calls.streamsJson and streams.streamingSidJson send forms; the
    stream carries the call both ways; the status callbacks (POST forms, GET query
    strings) pass the SDK's TelnyxWebhook verifier."""
    live = call_in("texml", speech("beckett")[: 2 * RATE * 6], 30)
    _answered(rig, live)
    fields = {"Url": consumer.url, "Track": "both_tracks", "Name": "node-texml",
              "BidirectionalMode": "rtp", "BidirectionalCodec": "PCMU",
              "StatusCallback": rig.sdk.url, "StatusCallbackMethod": "POST"}
    reply = rig.sdk.call("texml.accounts.calls.streamsJson", live.ccid,
                         {"account_sid": "AC-node", **fields})
    assert reply.sent.content_type == "application/x-www-form-urlencoded"
    assert reply.sent.body is not None and dict(parse_qsl(reply.sent.body)) == fields
    sid = reply.result["sid"]
    assert reply.result["status"] == "in-progress" and reply.result["name"] == "node-texml"
    assert reply.result["account_sid"] == "AC-node" and reply.result["call_sid"] == live.ccid

    conn = consumer.wait_connection()
    conn.wait_for(lambda c: len(_payloads(c, "inbound")) >= RATE)
    assert conn.of("start")[0]["stream_id"] == sid
    assert _sent_in_order(conn, _ulaw(live.played)) >= 50
    consumer.send(conn, {"event": "media", "media": {
        "payload": base64.b64encode(_ulaw(tone(TONE_HZ, 1.0))).decode()}})
    conn.wait_for(lambda c: _tone_seconds(_pcm(_payloads(c, "outbound"))) >= 0.9, timeout=20)
    started = rig.sdk.wait_callback(StreamEvent="stream-started", StreamSid=sid)
    assert started["AccountSid"] == "AC-node" and started["CallSid"] == live.ccid
    assert started["StreamName"] == "node-texml"

    reply = rig.sdk.call("texml.accounts.calls.streams.streamingSidJson", sid,
                         {"account_sid": "AC-node", "call_sid": live.ccid,
                          "Status": "stopped"})
    assert reply.sent.content_type == "application/x-www-form-urlencoded"
    assert reply.sent.body == "Status=stopped" and reply.result["status"] == "stopped"
    assert conn.done.wait(10) and conn.events()[-1] == "stop"
    rig.sdk.wait_callback(StreamEvent="stream-stopped", StreamSid=sid)

    # Callbacks by GET (signed over the query string); a stop with nothing but the path,
    # which the SDK sends as a form content type with no body at all.
    fields = {"Url": consumer.url, "StatusCallback": rig.sdk.url, "StatusCallbackMethod": "GET"}
    reply = rig.sdk.call("texml.accounts.calls.streamsJson", live.ccid,
                         {"account_sid": "AC-node", **fields})
    assert reply.sent.body is not None and dict(parse_qsl(reply.sent.body)) == fields
    sid = reply.result["sid"]
    second = consumer.wait_connection(1)
    second.wait_for(lambda c: len(c.of("media")) >= 10)
    assert {f["media"]["track"] for f in second.of("media")} == {"inbound"}
    rig.sdk.wait_callback(StreamEvent="stream-started", StreamSid=sid)
    reply = rig.sdk.call("texml.accounts.calls.streams.streamingSidJson", sid,
                         {"account_sid": "AC-node", "call_sid": live.ccid})
    assert (reply.sent.content_type, reply.sent.body) == ("application/x-www-form-urlencoded",
                                                          None)
    assert second.done.wait(10) and second.events()[-1] == "stop"
    rig.sdk.wait_callback(StreamEvent="stream-stopped", StreamSid=sid)
    rig.sdk.call("calls.actions.hangup", live.ccid)
    assert live.caller.finish(30)[0] == 0
    _all_verified(rig, live.ccid)


def test_typed_errors_and_a_forged_webhook(rig: NodeRig) -> None:
    """What tests/api/test_sdk.py checks of the Python SDK, through the Node SDK; and the
    verifier refuses a webhook signed by anyone else."""
    sdk = rig.sdk
    with pytest.raises(NodeApiError) as info:
        sdk.call("calls.retrieveStatus", "v3:missing")
    assert (info.value.cls, info.value.status, info.value.code) == ("NotFoundError", 404,
                                                                     "10005")
    with pytest.raises(NodeApiError) as info:
        sdk.call("calls.actions.hangup", "v3:missing")
    assert (info.value.cls, info.value.status, info.value.code) == (
        "UnprocessableEntityError", 422, "90015")
    with pytest.raises(NodeApiError) as info:
        sdk.call("calls.dial", {"connection_id": "nope", "to": "sip:a@127.0.0.1:9",
                                "from": "+15550001111"})
    error = info.value.body["errors"][0]
    assert (error["code"], error["source"]["pointer"]) == ("10015", "/connection_id")
    with pytest.raises(NodeApiError) as info:
        sdk.call("calls.actions.startStreaming", "v3:missing",
                 {"stream_url": "http://127.0.0.1:9/", "stream_codec": "PCMU"})
    assert info.value.body["errors"][0]["source"]["pointer"] == "/stream_url"
    with pytest.raises(NodeApiError) as info:
        sdk.call("texml.accounts.calls.streamsJson", "v3:missing",
                 {"account_sid": "AC-node", "Url": "ws://127.0.0.1:9/"})
    assert info.value.status == 404
    assert info.value.body == {"errors": [{"detail": "Resource not found"}]}

    app = sdk.call("callControlApplications.create",
                   {"application_name": "node", "webhook_event_url": "https://example.com/h"})
    got = sdk.call("callControlApplications.retrieve", str(app.result["data"]["id"]))
    assert got.result["data"]["application_name"] == "node"
    assert got.result["data"]["webhook_event_url"] == "https://example.com/h"

    assert forge(sdk.url, "v3:forged").status_code == 400
    assert "signature" in sdk.take_rejected().lower()
