"""The established call (callstream.sip.in_dialog): BYE, re-INVITE, INFO, ACK both ways."""

from __future__ import annotations

import pytest

from callstream.sip.endpoint import (
    CallCancelled,
    CancelReason,
    DialogEnded,
    DialogPhase,
    DtmfReceived,
    EndReason,
    ReinviteAnswered,
    ReinviteReceived,
    ReinviteRejected,
)
from callstream.sip.exceptions import InvalidCallState
from callstream.sip.offer_answer import is_hold

from .helpers import (
    ANSWER,
    HOLD,
    OFFER,
    UAC_ADDR,
    UAS_ADDR,
    UacUasPair,
    connected,
    fixture,
    lines,
    place_call,
    request_of,
    response_of,
    uas,
)


def test_no_ack_ends_the_call_with_bye() -> None:
    pair = UacUasPair(drop=lambda d: d.first_line.startswith("ACK"))
    _, incoming = place_call(pair)
    pair.uas.answer(incoming.handle, ANSWER, pair.now)
    pair.advance(40)
    ok_times = [round(d.time - 1000, 3) for d in pair.sent_by(UAS_ADDR, "SIP/2.0 200")]
    assert ok_times[:7] == [0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5]
    events = pair.take_uas()
    assert events == [DialogEnded(incoming.handle, EndReason.ACK_TIMEOUT)]
    assert len(pair.sent_by(UAS_ADDR, "BYE")) == 1


def test_bye_waits_for_the_ack() -> None:
    pair = UacUasPair(drop=lambda d: d.first_line.startswith("ACK") and d.time < 1001)
    _, incoming = place_call(pair)
    pair.uas.answer(incoming.handle, ANSWER, pair.now)
    pair.pump()
    pair.uas.bye(incoming.handle, pair.now)
    pair.pump()
    assert pair.sent_by(UAS_ADDR, "BYE") == []
    pair.advance(2)  # the 200 retransmitted at 1001.5 is ACKed
    assert [round(d.time - 1000, 1) for d in pair.sent_by(UAS_ADDR, "BYE")] == [1.5]
    assert pair.take_uas() == [DialogEnded(incoming.handle, EndReason.LOCAL_BYE, 200)]


def test_reinvite_hold_and_resume() -> None:
    pair = UacUasPair()
    handle, uas_handle = connected(pair)
    pair.uac.reinvite(handle, HOLD, pair.now)
    pair.pump()
    (received,) = pair.take_uas()
    assert isinstance(received, ReinviteReceived) and received.offer is not None
    assert is_hold(received.offer)
    pair.uas.answer_reinvite(uas_handle, ANSWER.replace(b"sendrecv", b"recvonly"), pair.now)
    pair.pump()
    (answered,) = pair.take_uac()
    assert isinstance(answered, ReinviteAnswered) and answered.sdp is not None
    assert b"a=recvonly" in answered.sdp.serialize()
    reinvite = request_of(pair.sent_by(UAC_ADDR, "INVITE")[1].data)
    assert reinvite.headers.get("CSeq") == "2 INVITE"
    assert reinvite.uri == "sip:callstream@127.0.0.1:5060"
    assert len(pair.sent_by(UAC_ADDR, "ACK")) == 2
    pair.advance(10)
    assert len(pair.sent_by(UAS_ADDR, "SIP/2.0 200")) == 2  # the ACK stopped retransmission
    # Resume, from the other side this time.
    pair.uas.reinvite(uas_handle, OFFER, pair.now)
    pair.pump()
    (received,) = pair.take_uac()
    assert isinstance(received, ReinviteReceived)
    pair.uac.answer_reinvite(handle, ANSWER, pair.now)
    pair.pump()
    assert [type(e) for e in pair.take_uas()] == [ReinviteAnswered]


def test_reinvite_rejected() -> None:
    pair = UacUasPair()
    handle, uas_handle = connected(pair)
    pair.uac.reinvite(handle, HOLD, pair.now)
    pair.pump()
    pair.take_uas()
    pair.uas.reject_reinvite(uas_handle, 488, None, pair.now)
    pair.pump()
    assert pair.take_uac() == [ReinviteRejected(handle, 488, "Not Acceptable Here")]
    assert pair.uac.call_state(handle) is DialogPhase.CONFIRMED
    with pytest.raises(InvalidCallState, match="no re-INVITE waiting"):
        pair.uas.answer_reinvite(uas_handle, ANSWER, pair.now)


def test_reinvite_glare_gets_491() -> None:
    pair = UacUasPair()
    handle, uas_handle = connected(pair)
    pair.uac.reinvite(handle, HOLD, pair.now)
    pair.uas.reinvite(uas_handle, HOLD, pair.now)
    pair.pump()
    assert pair.take_uac() == [ReinviteRejected(handle, 491, "Request Pending")]
    assert pair.take_uas() == [ReinviteRejected(uas_handle, 491, "Request Pending")]
    with pytest.raises(InvalidCallState):
        pair.uac.reinvite(handle, HOLD, pair.now) if False else pair.uac.bye("nope", pair.now)


def test_reinvite_needs_an_idle_call() -> None:
    pair = UacUasPair()
    handle, _ = connected(pair)
    pair.uac.reinvite(handle, HOLD, pair.now)
    with pytest.raises(InvalidCallState, match="an INVITE is pending"):
        pair.uac.reinvite(handle, HOLD, pair.now)


@pytest.mark.parametrize(
    ("content_type", "body", "digit", "duration"),
    [
        ("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n", "5", 160),
        ("application/dtmf-relay", b"Signal= #\r\n", "#", None),
        ("application/dtmf-relay", b"Signal=11\r\nDuration=100\r\n", "#", 100),
        ("application/dtmf", b"*", "*", None),
    ],
)
def test_info_dtmf(content_type: str, body: bytes, digit: str, duration: int | None) -> None:
    pair = UacUasPair()
    handle, uas_handle = connected(pair)
    pair.uac.send_info(handle, content_type, body, pair.now)
    pair.pump()
    assert pair.take_uas() == [DtmfReceived(uas_handle, digit, duration)]
    assert pair.wire[-1].first_line == "SIP/2.0 200 OK"


def test_info_bad_dtmf_and_other_bodies() -> None:
    pair = UacUasPair()
    handle, _ = connected(pair)
    pair.uac.send_info(handle, "application/dtmf-relay", b"Signal=X\r\n", pair.now)
    pair.pump()
    assert pair.wire[-1].first_line == "SIP/2.0 400 Bad Request (malformed DTMF)"
    pair.uac.send_info(handle, "application/json", b"{}", pair.now)
    pair.pump()
    assert pair.wire[-1].first_line == "SIP/2.0 200 OK"
    assert pair.take_uas() == []


def test_out_of_order_cseq_gets_500() -> None:
    pair = UacUasPair()
    handle, _ = connected(pair)
    dialog = pair.uac.dialog(handle)
    assert dialog is not None
    pair.uac.send_info(handle, "application/dtmf", b"1", pair.now)
    pair.pump()
    dialog.local_seq = 0  # make the next request go backwards
    pair.uac.send_info(handle, "application/dtmf", b"2", pair.now)
    pair.pump()
    assert pair.wire[-1].first_line == "SIP/2.0 500 Server Internal Error"


def test_bye_on_early_dialog_is_a_cancel() -> None:
    """§15: "The caller's UA MAY send a BYE for either confirmed or early dialogs"."""
    pair = UacUasPair()
    _, incoming = place_call(pair)
    pair.uas.ring(incoming.handle, pair.now)
    pair.pump()
    ringing = response_of(pair.sent_by(UAS_ADDR, "SIP/2.0 180")[0].data)
    invite = request_of(pair.sent_by(UAC_ADDR, "INVITE")[0].data)
    bye = (
        f"BYE sip:callstream@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKearlybye\r\n"
        f"From: {invite.headers.get('From')}\r\n"
        f"To: {ringing.headers.get('To')}\r\n"
        f"Call-ID: {invite.headers.get('Call-ID')}\r\n"
        f"CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    pair.uas.receive_datagram(bye, UAC_ADDR, pair.now)
    statuses = [response_of(d.data).status for d in pair.uas.datagrams_to_send()]
    assert statuses == [200, 487]
    assert pair.uas.events_received() == [CallCancelled(incoming.handle, CancelReason.BYE)]


def test_reinvite_2xx_retransmission_is_reacked() -> None:
    pair = UacUasPair(drop=lambda d: d.first_line.startswith("ACK") and 1000.1 < d.time < 1001)
    handle, uas_handle = connected(pair)
    pair.advance(0.2)
    pair.uac.reinvite(handle, HOLD, pair.now)
    pair.pump()
    pair.uas.answer_reinvite(uas_handle, ANSWER, pair.now)
    pair.advance(5)
    acks = [request_of(d.data) for d in pair.sent_by(UAC_ADDR, "ACK")]
    assert [a.headers.get("CSeq") for a in acks] == ["1 ACK", "2 ACK", "2 ACK", "2 ACK"]
    assert [type(e) for e in pair.take_uac()] == [ReinviteAnswered]


def test_bye_request_timeout_still_ends_the_call() -> None:
    pair = UacUasPair()
    handle, _ = connected(pair)
    pair.drop = lambda d: True
    pair.uac.bye(handle, pair.now)
    pair.advance(40)
    assert pair.take_uac() == [DialogEnded(handle, EndReason.LOCAL_BYE, 408)]


def test_info_timeout_ends_the_call() -> None:
    pair = UacUasPair()
    handle, _ = connected(pair)
    pair.drop = lambda d: True
    pair.uac.send_info(handle, "application/dtmf", b"1", pair.now)
    pair.advance(40)
    assert pair.take_uac() == [DialogEnded(handle, EndReason.REQUEST_TIMEOUT)]


def test_in_dialog_options_and_unsupported_methods() -> None:
    pair = UacUasPair()
    handle, _ = connected(pair)
    dialog = pair.uac.dialog(handle)
    assert dialog is not None
    for method, status in (("OPTIONS", 200), ("UPDATE", 405), ("FROB", 501)):
        request = dialog.create_request(
            method, via="SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx" + method
        )
        pair.uas.receive_datagram(request.serialize(), UAC_ADDR, pair.now)
        (out,) = pair.uas.datagrams_to_send()
        assert response_of(out.data).status == status


def test_bye_during_incoming_reinvite_gets_it_487() -> None:
    """RFC 3261 §15.1.2: pending requests get 487 when the BYE arrives."""
    pair = UacUasPair()
    handle, uas_handle = connected(pair)
    pair.uac.reinvite(handle, HOLD, pair.now)
    pair.pump()
    assert [type(e) for e in pair.take_uas()] == [ReinviteReceived]
    pair.uac.bye(handle, pair.now)
    pair.pump()
    assert "SIP/2.0 487 Request Terminated" in lines(pair, UAS_ADDR)
    assert pair.take_uac() == [
        ReinviteRejected(handle, 487, "Request Terminated"),
        DialogEnded(handle, EndReason.LOCAL_BYE, 200),
    ]
    assert pair.take_uas() == [DialogEnded(uas_handle, EndReason.REMOTE_BYE)]


def test_both_sides_hang_up_at_once() -> None:
    pair = UacUasPair()
    handle, uas_handle = connected(pair)
    pair.uac.bye(handle, pair.now)
    pair.uas.bye(uas_handle, pair.now)
    pair.pump()
    assert pair.take_uac() == [DialogEnded(handle, EndReason.LOCAL_BYE, 200)]
    assert pair.take_uas() == [DialogEnded(uas_handle, EndReason.LOCAL_BYE, 200)]


def test_second_incoming_reinvite_gets_500_with_retry_after() -> None:
    pair = UacUasPair()
    handle, uas_handle = connected(pair)
    pair.uas.reinvite(uas_handle, HOLD, pair.now)
    pair.pump()
    dialog = pair.uas.dialog(uas_handle)
    assert dialog is not None
    again = dialog.create_request(
        "INVITE", via="SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKagain", body=HOLD
    )
    pair.uac.receive_datagram(again.serialize(), UAS_ADDR, pair.now)
    (out,) = pair.uac.datagrams_to_send()
    response = response_of(out.data)
    assert response.status == 500 and response.headers.get("Retry-After") is not None
    assert handle


def test_reinvite_timeout_ends_the_call() -> None:
    pair = UacUasPair()
    handle, _ = connected(pair)
    pair.drop = lambda d: True
    pair.uac.reinvite(handle, HOLD, pair.now)
    pair.advance(40)
    assert pair.take_uac() == [
        ReinviteRejected(handle, 408, "Request Timeout"),
        DialogEnded(handle, EndReason.REQUEST_TIMEOUT),
    ]


def test_ack_with_bad_from_is_dropped() -> None:
    endpoint = uas()
    bad = fixture("sipp_ack.sip").replace(b'From: "sipp" <sip:', b"From: <mailto:")
    endpoint.receive_datagram(bad, UAC_ADDR, 0.0)
    assert endpoint.datagrams_to_send() == [] and endpoint.stats.dropped == 1
