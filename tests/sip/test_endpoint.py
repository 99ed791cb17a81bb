"""Whole calls through callstream.sip.endpoint.SipEndpoint: a UAC and a UAS on a fake wire.

What needs both roles (hangup) or the whole endpoint (real peers' INVITEs, IPv6,
TCP, logging). Each layer has its own module: test_useragent, test_in_dialog,
test_uas, test_uac."""

from __future__ import annotations

import pytest

from callstream.sip.endpoint import (
    CallAnswered,
    CallCancelled,
    CallFailed,
    CallProgress,
    DialogEnded,
    DialogPhase,
    EndReason,
    IncomingCall,
    SipEndpoint,
)
from callstream.sip.exceptions import InvalidCallState
from callstream.sip.message import SipRequest
from callstream.sip.sdp import parse_sdp

from .helpers import (
    ANSWER,
    FROM,
    OFFER,
    TARGET,
    UAC_ADDR,
    UAS_ADDR,
    Delivered,
    UacUasPair,
    connected,
    fixture,
    lines,
    make_token,
    place_call,
    response_of,
    uas,
)


def test_invite_ring_answer_ack_bye() -> None:
    pair = UacUasPair()
    handle, incoming = place_call(pair)
    assert incoming.call_id.endswith("@127.0.0.1")
    assert (incoming.from_uri, incoming.to_uri, incoming.request_uri) == (FROM, TARGET, TARGET)
    assert incoming.offer is not None and incoming.offer.media[0].port == 40000
    assert incoming.source == UAC_ADDR and incoming.transport == "udp"
    assert pair.uas.call_state(incoming.handle) is DialogPhase.INCOMING
    pair.uas.ring(incoming.handle, pair.now)
    pair.pump()
    (progress,) = pair.take_uac()
    assert progress == CallProgress(handle, 180, "Ringing", None)
    assert pair.uac.call_state(handle) is DialogPhase.EARLY
    pair.uas.answer(incoming.handle, ANSWER, pair.now)
    pair.pump()
    (answered,) = pair.take_uac()
    assert isinstance(answered, CallAnswered) and answered.sdp == parse_sdp(ANSWER)
    assert pair.uac.call_state(handle) is DialogPhase.CONFIRMED
    assert pair.uas.call_state(incoming.handle) is DialogPhase.CONFIRMED
    pair.advance(5)
    pair.uac.bye(handle, pair.now)
    pair.pump()
    assert pair.take_uac() == [DialogEnded(handle, EndReason.LOCAL_BYE, 200)]
    assert pair.take_uas() == [DialogEnded(incoming.handle, EndReason.REMOTE_BYE)]
    assert lines(pair) == [
        f"INVITE {TARGET} SIP/2.0",
        "SIP/2.0 100 Trying",
        "SIP/2.0 180 Ringing",
        "SIP/2.0 200 OK",
        "ACK sip:callstream@127.0.0.1:5060 SIP/2.0",
        "BYE sip:callstream@127.0.0.1:5060 SIP/2.0",
        "SIP/2.0 200 OK",
    ]
    # Everything is forgotten once the stragglers' timers have run.
    pair.advance(60)
    assert pair.next_deadline() is None
    for endpoint in (pair.uac, pair.uas):
        assert not endpoint._calls and not endpoint._dialogs
        assert not endpoint._server_tx and not endpoint._client_tx and not endpoint._invites_in
    with pytest.raises(InvalidCallState, match="unknown call"):
        pair.uac.call_state(handle)


def test_uas_hangs_up() -> None:
    pair = UacUasPair()
    handle, uas_handle = connected(pair)
    pair.uas.hangup(uas_handle, pair.now)
    pair.pump()
    assert pair.take_uac() == [DialogEnded(handle, EndReason.REMOTE_BYE)]
    assert pair.take_uas() == [DialogEnded(uas_handle, EndReason.LOCAL_BYE, 200)]
    pair.uas.hangup(uas_handle, pair.now)  # idempotent once ended
    assert pair.uas.datagrams_to_send() == []


@pytest.mark.parametrize(
    ("name", "source"),
    [
        ("sipp_invite.sip", ("127.0.0.1", 5070)),
        ("asterisk_invite.sip", ("192.168.1.10", 5060)),
        ("baresip_invite.sip", ("127.0.0.1", 5062)),
        ("linphone_invite.sip", ("127.0.0.1", 5064)),
    ],
)
def test_real_peer_invites_are_answered(name: str, source: tuple[str, int]) -> None:
    endpoint = uas()
    endpoint.receive_datagram(fixture(name), source, 0.0)
    (trying,) = endpoint.datagrams_to_send()
    assert response_of(trying.data).status == 100 and trying.addr == source
    (incoming,) = endpoint.events_received()
    assert isinstance(incoming, IncomingCall) and incoming.offer is not None
    endpoint.answer(incoming.handle, ANSWER, 0.1)
    (ok,) = endpoint.datagrams_to_send()
    response = response_of(ok.data)
    assert response.status == 200 and response.body == ANSWER
    assert ";tag=" in (response.headers.get("To") or "")


def test_ipv6_call() -> None:
    uac = SipEndpoint(("::1", 5070), token=make_token("a"))
    uas6 = SipEndpoint(("::1", 5060), token=make_token("b"))
    handle = uac.invite("sip:service@[::1]:5060", from_uri="sip:alice@[::1]", sdp=OFFER, now=0.0)
    (invite,) = uac.datagrams_to_send()
    assert invite.addr == ("::1", 5060)
    assert b"Via: SIP/2.0/UDP [::1]:5070;rport;branch=" in invite.data
    uas6.receive_datagram(invite.data, ("::1", 5070), 0.0)
    (incoming,) = uas6.events_received()
    assert isinstance(incoming, IncomingCall)
    uas6.answer(incoming.handle, ANSWER, 0.0)
    for datagram in uas6.datagrams_to_send():
        assert datagram.addr == ("::1", 5070)
        uac.receive_datagram(datagram.data, ("::1", 5060), 0.0)
    assert [type(e) for e in uac.events_received()] == [CallAnswered]
    (ack,) = uac.datagrams_to_send()
    assert ack.data.startswith(b"ACK sip:callstream@[::1]:5060 SIP/2.0")
    assert uac.call_state(handle) is DialogPhase.CONFIRMED


def test_tcp_transport_has_no_retransmissions() -> None:
    uac = SipEndpoint(UAC_ADDR, token=make_token("a"))
    handle = uac.invite(TARGET + ";transport=tcp", from_uri=FROM, sdp=OFFER, now=0.0)
    (invite,) = uac.datagrams_to_send()
    assert invite.transport == "tcp"
    assert b"Via: SIP/2.0/TCP 127.0.0.1:5070;branch=" in invite.data
    assert b"Contact: <sip:callstream@127.0.0.1:5070;transport=tcp>" in invite.data
    assert uac.next_deadline() == 32.0  # Timer B only
    uac.handle_timeout(31.0)
    assert uac.datagrams_to_send() == []
    server = SipEndpoint(UAS_ADDR, token=make_token("b"))
    server.receive_datagram(invite.data, ("127.0.0.1", 40000), 0.0, transport="tcp")
    (trying,) = server.datagrams_to_send()
    assert (trying.addr, trying.transport) == (("127.0.0.1", 40000), "tcp")
    assert handle


def test_commands_in_the_wrong_state() -> None:
    pair = UacUasPair()
    handle, incoming = place_call(pair)
    with pytest.raises(InvalidCallState, match="can't send BYE"):
        pair.uac.bye(handle, pair.now)
    with pytest.raises(InvalidCallState, match="can't answer"):
        pair.uac.answer(handle, ANSWER, pair.now)
    with pytest.raises(InvalidCallState, match="can't cancel"):
        pair.uas.cancel(incoming.handle, pair.now)
    with pytest.raises(InvalidCallState, match="can't re-INVITE"):
        pair.uas.reinvite(incoming.handle, OFFER, pair.now)
    with pytest.raises(InvalidCallState, match="can't send INFO"):
        pair.uas.send_info(incoming.handle, "application/dtmf", b"1", pair.now)
    with pytest.raises(InvalidCallState, match="unknown call"):
        pair.uas.ring("call-999", pair.now)
    with pytest.raises(ValueError, match="unsupported transport"):
        pair.uac.invite(TARGET + ";transport=sctp", from_uri=FROM, sdp=OFFER, now=pair.now)
    pair.uas.hangup(incoming.handle, pair.now)  # rejects with 603
    pair.pump()
    assert pair.take_uac()[-1] == CallFailed(handle, 603, "Decline")
    assert pair.uas.active_calls == 0


def test_uac_hangup_cancels() -> None:
    pair = UacUasPair()
    handle, incoming = place_call(pair)
    pair.uas.ring(incoming.handle, pair.now)
    pair.pump()
    pair.uac.hangup(handle, pair.now)
    pair.uac.hangup(handle, pair.now)  # a second hangup does nothing more
    pair.pump()
    assert pair.take_uas() == [CallCancelled(incoming.handle)]
    assert len(pair.sent_by(UAC_ADDR, "CANCEL")) == 1


def test_drop_helper_records(tmp_path: object) -> None:
    record = Delivered(0.0, UAC_ADDR, UAS_ADDR, fixture("sipp_ack.sip"))
    assert record.first_line.startswith("ACK") and isinstance(record.message, SipRequest)


def test_debug_logging_names_messages(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="callstream.sip.endpoint")
    pair = UacUasPair()
    place_call(pair)
    assert any(record.getMessage().startswith("> ") for record in caplog.records)
    assert any("< ('127.0.0.1', 5060) 100 Trying" in r.getMessage() for r in caplog.records)
