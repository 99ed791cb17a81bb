"""SIP edge cases against the server with real peers: CANCEL before answer, a
retransmitted INVITE, RFC 4733 DTMF from sip-tester's pcaps."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from tests.e2e.calling import answer, events_for, incoming, media_rig
from tests.e2e.conftest import Rig
from tests.e2e.sipp import uac
from tests.helpers import free_udp_tcp_port, raw_invite

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    yield from media_rig(tmp_path_factory, rtp_ports=(34000, 34199))


def test_cancel_before_answer(rig: Rig) -> None:
    proc = uac(rig.sip_target, "uac_cancel.xml", cwd=rig.workdir,
               local_port=free_udp_tcp_port(), media_port=free_udp_tcp_port(),
               hold_ms=500, service="cancel-me")
    ccid = incoming(rig, "cancel-me")
    assert proc.wait(30) == 0  # 200 to the CANCEL, 487 to the INVITE
    hangup = rig.hooks.wait_event("call.hangup", ccid)
    assert hangup.payload["hangup_cause"] == "originator_cancel"
    assert hangup.payload["hangup_source"] == "caller"
    assert not events_for(rig, "call.answered", ccid)




def _responses(sock: socket.socket, until: int, timeout: float = 10.0) -> list[bytes]:
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            data = sock.recv(65535)
        except TimeoutError:
            break
        got.append(data)
        if data.startswith(f"SIP/2.0 {until} ".encode()):
            return got
    lines = [g.split(b"\r\n")[0] for g in got]
    raise AssertionError(f"no {until} response; got {lines}")


def test_retransmitted_invite_makes_one_call(rig: Rig) -> None:
    target = ("127.0.0.1", rig.server.sip_port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        invite = raw_invite(sock, target, "twice", free_udp_tcp_port())
        sock.sendto(invite, target)
        sock.sendto(invite, target)  # the same bytes again, as a UDP retransmission
        ccid = incoming(rig, "twice")
        ringing = _responses(sock, 180)
        sock.sendto(invite, target)  # and once more after the ringing
        time.sleep(1.0)
        initiated = [d for d in rig.hooks.events("call.initiated")
                     if d.payload.get("to") == "twice"]
        assert len(initiated) == 1
        assert any(r.startswith(b"SIP/2.0 100 ") for r in ringing)

        rig.sdk.calls.actions.reject(ccid, cause="USER_BUSY")
        final = _responses(sock, 486)[-1]
        to = next(line for line in final.split(b"\r\n") if line.lower().startswith(b"to:"))
        ack = invite.split(b"\r\n\r\n")[0].replace(b"CSeq: 1 INVITE", b"CSeq: 1 ACK")
        ack = ack.replace(b"INVITE sip:", b"ACK sip:", 1)
        ack = b"\r\n".join(to if line.lower().startswith(b"to:") else line
                           for line in ack.split(b"\r\n")
                           if not line.lower().startswith((b"content-", b"contact:")))
        sock.sendto(ack + b"\r\nContent-Length: 0\r\n\r\n", target)
    hangup = rig.hooks.wait_event("call.hangup", ccid)
    assert hangup.payload["hangup_cause"] == "user_busy"
    assert len(events_for(rig, "call.hangup", ccid)) == 1


def test_dtmf_from_sipp_pcaps(rig: Rig) -> None:
    proc = uac(rig.sip_target, "uac_dtmf.xml", cwd=rig.workdir,
               local_port=free_udp_tcp_port(), media_port=free_udp_tcp_port(),
               hold_ms=1200, service="dtmf-pcap")
    ccid = incoming(rig, "dtmf-pcap")
    answer(rig, ccid)
    assert proc.wait(30) == 0
    rig.hooks.wait_event("call.hangup", ccid)
    digits = [d.payload for d in events_for(rig, "call.dtmf.received", ccid)]
    assert [d["digit"] for d in digits] == ["1", "#"]
    assert digits[0]["from"] == "+15550001111" and digits[0]["to"] == "dtmf-pcap"
