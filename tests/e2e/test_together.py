"""A WebSocket stream, an RTP fork and transcription on the same call (spec §3.1 item 5).

SIPp plays real speech as PCMU; the application answers with a stream, then forks the
call's RTP to a UDP socket and starts transcription. Each consumer gets the same audio:
the fork's RTP payloads appear, in order, among the stream's ``media`` payloads (same
codec: bytes untouched), and the transcript matches what was said.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator

import pytest

from tests.audio import rtp_packets, write_pcap
from tests.corpus import clip, phone_band, wer
from tests.e2e.conftest import Rig, make_rig
from tests.e2e.sipp import uac
from tests.e2e.test_forking import UdpRecorder
from tests.helpers import free_udp_tcp_port
from tests.ws_consumer import ws_consumer

pytestmark = pytest.mark.slow

RATE = 8000
SPEECH = "sense_and_sensibility_01_austen_64kb-0870"


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    with make_rig(tmp_path_factory.mktemp("e2e-together"), (36000, 36999)) as rig:
        yield rig


def _payload(rtp: bytes) -> bytes:
    first = rtp[0]
    start = 12 + 4 * (first & 0x0F)
    if first & 0x10:  # header extension
        start += 4 + 4 * struct.unpack("!H", rtp[start + 2:start + 4])[0]
    return rtp[start:]


def test_stream_fork_and_transcription_share_a_call(rig: Rig) -> None:
    speech = b"\0\0" * int(2.5 * RATE) + phone_band(clip(SPEECH)) + b"\0\0" * int(2.0 * RATE)
    write_pcap(rig.workdir / "call.pcap", rtp_packets(speech, "PCMU"))
    proc = uac(rig.sip_target, "uac_call_pcap.xml", cwd=rig.workdir,
               local_port=free_udp_tcp_port(), media_port=free_udp_tcp_port(),
               hold_ms=int(len(speech) / 2 / RATE * 1000) + 1000)
    try:
        ccid = rig.hooks.wait_for(lambda d: d.event_type == "call.initiated",
                                  timeout=20).payload["call_control_id"]
        fork = UdpRecorder()
        with ws_consumer() as consumer:
            rig.sdk.calls.actions.answer(
                ccid, stream_url=consumer.url, stream_track="inbound_track",
                transcription=True,
                transcription_config={"transcription_tracks": "inbound"})
            rig.hooks.wait_event("call.answered", ccid)
            rig.sdk.calls.actions.start_forking(ccid, rx=fork.udp, tx=fork.udp)
            assert proc.wait(40) == 0
            rig.hooks.wait_event("call.hangup", ccid)
            conn = consumer.wait_connection()
            conn.wait_for(lambda c: "stop" in c.events())
        fork.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    # The stream: inbound media in spec order, untouched PCMU payloads.
    streamed = [base64.b64decode(f["media"]["payload"]) for f in conn.of("media")
                if f["media"]["track"] == "inbound"]
    assert len(streamed) > 100
    # The fork: the packets the call received (rx), byte for byte; their payloads are a
    # run of the stream's, since the fork started after the stream.
    received = [p for p in fork.packets() if p[1] & 0x7F == 0]
    forked = [_payload(p) for p in received]
    assert len(forked) > 100
    # Align on the first frame of speech (silence frames are all alike).
    first = next(i for i, p in enumerate(forked) if p.count(0xFF) < len(p) // 2)
    start = streamed.index(forked[first])
    tail = forked[first:]
    assert len(tail) > 100
    assert streamed[start:start + len(tail)] == tail

    # Transcription of the same audio.
    finals = [d.payload["transcription_data"] for d in rig.hooks.events("call.transcription")
              if d.payload["call_control_id"] == ccid
              and d.payload["transcription_data"]["is_final"]]
    text = " ".join(t["transcript"] for t in finals)
    assert wer(clip(SPEECH).reference, text) <= 0.2, text
    assert {t["transcription_track"] for t in finals} == {"inbound"}

    # Both features say they stopped, before the call's end.
    order = [d.event_type for d in rig.hooks.events()
             if d.payload.get("call_control_id") == ccid]
    hangup = order.index("call.hangup")
    assert "call.fork.stopped" in order[:hangup]
    assert "streaming.stopped" in order[:hangup]
