"""Whole-call tests for callstream.sip.endpoint: a UAC and a UAS endpoint on a fake wire."""

from __future__ import annotations

import ipaddress

import pytest

from callstream.sip.admission import AdmissionLimits, ForbiddenAction, RefusalReason
from callstream.sip.digest import (
    Credentials,
    DigestServer,
    build_authorization,
    parse_challenge,
)
from callstream.sip.endpoint import (
    ALLOW_ALL,
    CallAnswered,
    CallCancelled,
    CallFailed,
    CallProgress,
    CancelReason,
    DialogEnded,
    DialogPhase,
    DtmfReceived,
    EndReason,
    IncomingCall,
    ReinviteAnswered,
    ReinviteReceived,
    ReinviteRejected,
    RequestForbidden,
    RequestRefused,
    SipEndpoint,
)
from callstream.sip.exceptions import InvalidCallState
from callstream.sip.message import SipRequest, SipResponse
from callstream.sip.offer_answer import is_hold
from callstream.sip.sdp import parse_sdp

from .helpers import (
    ANSWER,
    OFFER,
    UAC_ADDR,
    UAS_ADDR,
    Delivered,
    UacUasPair,
    fixture,
    make_token,
    request_of,
    response_of,
)

TARGET = "sip:service@127.0.0.1:5060"
FROM = "sip:alice@127.0.0.1:5070"
HOLD = OFFER.replace(b"a=sendrecv", b"a=sendonly")


def place_call(pair: UacUasPair) -> tuple[str, IncomingCall]:
    handle = pair.uac.invite(TARGET, from_uri=FROM, sdp=OFFER, now=pair.now)
    pair.pump()
    (incoming,) = pair.take_uas()
    assert isinstance(incoming, IncomingCall)
    return handle, incoming


def connected(pair: UacUasPair) -> tuple[str, str]:
    handle, incoming = place_call(pair)
    pair.uas.answer(incoming.handle, ANSWER, pair.now)
    pair.pump()
    assert [type(e) for e in pair.take_uac()] == [CallAnswered]
    return handle, incoming.handle


def lines(pair: UacUasPair, source: tuple[str, int] | None = None) -> list[str]:
    return [d.first_line for d in pair.wire if source is None or d.source == source]


# ------------------------------------------------------------------- basic call


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


def test_reject() -> None:
    pair = UacUasPair()
    handle, incoming = place_call(pair)
    pair.uas.reject(incoming.handle, 486, "Busy Here", pair.now)
    pair.pump()
    assert pair.take_uac() == [CallFailed(handle, 486, "Busy Here")]
    assert lines(pair)[-2:] == ["SIP/2.0 486 Busy Here", f"ACK {TARGET} SIP/2.0"]
    pair.advance(40)
    assert len(pair.sent_by(UAS_ADDR, "SIP/2.0 486")) == 1  # the ACK stopped Timer G
    with pytest.raises(ValueError, match="300-699"):
        pair.uas.reject(incoming.handle, 200, None, pair.now)


# ---------------------------------------------------------------- retransmission


def test_retransmitted_invite_makes_one_call() -> None:
    """The INVITE's responses are lost for 0.9 s: the UAC resends at 0.5 s and
    1.5 s; the UAS transaction absorbs the copies (§17.2.3) and resends its 100."""
    pair = UacUasPair(drop=lambda d: d.source == UAS_ADDR and d.time < 1000.9)
    pair.uac.invite(TARGET, from_uri=FROM, sdp=OFFER, now=pair.now)
    pair.advance(2)
    assert [round(d.time - 1000, 1) for d in pair.sent_by(UAC_ADDR, "INVITE")] == [0, 0.5, 1.5]
    assert len(pair.sent_by(UAS_ADDR, "SIP/2.0 100")) == 3
    assert [type(e) for e in pair.take_uas()] == [IncomingCall]
    assert pair.uas.stats.retransmissions_absorbed == 2
    assert pair.uas.stats.calls_in == 1


def test_lost_200_is_retransmitted_until_ack() -> None:
    """§13.3.1.4: the UAS resends its 2xx at T1, 2T1... until the ACK arrives."""
    pair = UacUasPair(drop=lambda d: d.first_line.startswith("ACK") and d.time < 1003)
    _, incoming = place_call(pair)
    pair.uas.answer(incoming.handle, ANSWER, pair.now)
    pair.advance(10)
    ok_times = [round(d.time - 1000, 3) for d in pair.sent_by(UAS_ADDR, "SIP/2.0 200")]
    assert ok_times == [0, 0.5, 1.5, 3.5]
    ack_times = [round(d.time - 1000, 3) for d in pair.sent_by(UAC_ADDR, "ACK")]
    assert ack_times == ok_times  # the UAC ACKs every copy
    assert [type(e) for e in pair.take_uac()] == [CallAnswered]  # reported once
    assert pair.uas.call_state(incoming.handle) is DialogPhase.CONFIRMED


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


def test_invite_timeout_timer_b() -> None:
    pair = UacUasPair(drop=lambda d: True)
    handle = pair.uac.invite(TARGET, from_uri=FROM, sdp=OFFER, now=pair.now)
    pair.advance(40)
    assert len(pair.sent_by(UAC_ADDR, "INVITE")) == 7
    assert pair.take_uac() == [CallFailed(handle, 408, "Request Timeout")]


def test_transport_failure_fails_the_call() -> None:
    pair = UacUasPair(drop=lambda d: True)
    handle = pair.uac.invite(TARGET, from_uri=FROM, sdp=OFFER, now=pair.now)
    pair.pump()
    pair.uac.transport_failed(UAS_ADDR, "udp", pair.now)
    pair.pump()
    assert pair.take_uac() == [CallFailed(handle, 503, "Service Unavailable")]


# --------------------------------------------------------------------- CANCEL


def test_cancel_before_answer() -> None:
    pair = UacUasPair()
    handle, incoming = place_call(pair)
    pair.uas.ring(incoming.handle, pair.now)
    pair.pump()
    pair.take_uac()
    pair.uac.cancel(handle, pair.now)
    pair.pump()
    assert pair.take_uas() == [CallCancelled(incoming.handle)]
    assert pair.take_uac() == [CallFailed(handle, 487, "Request Terminated")]
    assert lines(pair)[3:] == [
        f"CANCEL {TARGET} SIP/2.0",
        "SIP/2.0 200 OK",
        "SIP/2.0 487 Request Terminated",
        f"ACK {TARGET} SIP/2.0",
    ]
    cancel = request_of(pair.sent_by(UAC_ADDR, "CANCEL")[0].data)
    invite = request_of(pair.sent_by(UAC_ADDR, "INVITE")[0].data)
    assert cancel.headers.get("Via") == invite.headers.get("Via")  # same branch (§9.1)
    assert cancel.headers.get("CSeq") == "1 CANCEL"
    with pytest.raises(InvalidCallState):
        pair.uas.answer(incoming.handle, ANSWER, pair.now)


def test_cancel_waits_for_a_provisional_response() -> None:
    """§9.1: "If no provisional response has been received, the CANCEL request MUST NOT be sent"."""
    pair = UacUasPair(drop=lambda d: d.first_line == "SIP/2.0 100 Trying")
    handle, incoming = place_call(pair)
    pair.uac.cancel(handle, pair.now)
    pair.pump()
    assert pair.sent_by(UAC_ADDR, "CANCEL") == []
    pair.advance(1)
    pair.uas.ring(incoming.handle, pair.now)
    pair.pump()
    assert len(pair.sent_by(UAC_ADDR, "CANCEL")) == 1
    assert pair.take_uac()[-1] == CallFailed(handle, 487, "Request Terminated")


def test_cancel_loses_the_race_with_200() -> None:
    pair = UacUasPair()
    handle, incoming = place_call(pair)
    pair.uas.ring(incoming.handle, pair.now)
    pair.uas.answer(incoming.handle, ANSWER, pair.now)
    # The UAC cancels before it has read the 180 and the 200.
    pair.uac.cancel(handle, pair.now)
    pair.pump()
    uac_events = pair.take_uac()
    assert uac_events[-1] == CallFailed(handle, 487, "Request Terminated")
    assert CallAnswered not in [type(e) for e in uac_events]
    assert pair.take_uas() == [DialogEnded(incoming.handle, EndReason.REMOTE_BYE)]
    pair.advance(40)
    assert pair.take_uac() == []


def test_cancel_without_final_response_gives_up_after_64_t1() -> None:
    pair = UacUasPair(drop=lambda d: d.source == UAS_ADDR and d.time > 1000)
    handle, incoming = place_call(pair)
    pair.uas.ring(incoming.handle, pair.now)
    pair.pump()
    pair.advance(1)
    pair.uac.cancel(handle, pair.now)
    pair.advance(40)
    assert pair.take_uac()[-1] == CallFailed(handle, 487, "Request Terminated")


def test_cancel_for_unknown_transaction_gets_481() -> None:
    pair = UacUasPair()
    pair.uas.receive_datagram(fixture("cancel.sip"), UAC_ADDR, pair.now)
    (out,) = pair.uas.datagrams_to_send()
    assert out.data.startswith(b"SIP/2.0 481 Call/Transaction Does Not Exist\r\n")


# ------------------------------------------------------------------ re-INVITE


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


# --------------------------------------------------------------------- INFO


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


# ------------------------------------------------------------ digest (401/407)


REASONS = {401: "Unauthorized", 407: "Proxy Authentication Required"}


def challenge_response(invite: SipRequest, status: int, header: str, nonce: str) -> bytes:
    response = (
        f"SIP/2.0 {status} {REASONS[status]}\r\n"
        f"Via: {invite.headers.get('Via')}\r\n"
        f"From: {invite.headers.get('From')}\r\n"
        f"To: {invite.headers.get('To')};tag=trunk1\r\n"
        f"Call-ID: {invite.headers.get('Call-ID')}\r\n"
        f"CSeq: {invite.headers.get('CSeq')}\r\n"
        f'{header}: Digest realm="trunk", nonce="{nonce}", algorithm=MD5, qop="auth"\r\n'
        "Content-Length: 0\r\n\r\n"
    )
    return response.encode()


@pytest.mark.parametrize(
    ("status", "header", "answer_header"),
    [
        (401, "WWW-Authenticate", "Authorization"),
        (407, "Proxy-Authenticate", "Proxy-Authorization"),
    ],
)
def test_digest_challenge_is_answered(status: int, header: str, answer_header: str) -> None:
    uac = SipEndpoint(UAC_ADDR, token=make_token("a"))
    handle = uac.invite(
        TARGET, from_uri=FROM, sdp=OFFER, now=0.0, credentials=Credentials("alice", "s3cret")
    )
    (first,) = uac.datagrams_to_send()
    invite = request_of(first.data)
    uac.receive_datagram(challenge_response(invite, status, header, "n1"), UAS_ADDR, 0.1)
    ack, retry = uac.datagrams_to_send()
    ack_request, retried = request_of(ack.data), request_of(retry.data)
    assert ack_request.method == "ACK"
    assert ack_request.headers.get("Via") == invite.headers.get("Via")  # non-2xx ACK: same branch
    assert retried.method == "INVITE"
    assert retried.headers.get("CSeq") == "2 INVITE"
    assert retried.headers.get("Call-ID") == invite.headers.get("Call-ID")
    assert retried.headers.get("From") == invite.headers.get("From")
    assert retried.headers.get("Via") != invite.headers.get("Via")
    authorization = retried.headers.get(answer_header) or ""
    cnonce = authorization.split('cnonce="', 1)[1].split('"', 1)[0]
    expected = build_authorization(
        parse_challenge('Digest realm="trunk", nonce="n1", algorithm=MD5, qop="auth"'),
        Credentials("alice", "s3cret"),
        method="INVITE",
        uri=TARGET,
        cnonce=cnonce,
    )
    assert authorization == expected
    # The same nonce again means the password was wrong: give up.
    uac.receive_datagram(challenge_response(retried, status, header, "n1"), UAS_ADDR, 0.2)
    assert uac.events_received() == [CallFailed(handle, status, REASONS[status])]


def test_challenge_without_credentials_fails() -> None:
    uac = SipEndpoint(UAC_ADDR, token=make_token("a"))
    handle = uac.invite(TARGET, from_uri=FROM, sdp=OFFER, now=0.0)
    invite = request_of(uac.datagrams_to_send()[0].data)
    uac.receive_datagram(challenge_response(invite, 401, "WWW-Authenticate", "n"), UAS_ADDR, 0.1)
    assert uac.events_received() == [CallFailed(handle, 401, "Unauthorized")]


def test_authenticated_call_completes_against_uas() -> None:
    """A full call where a hand-written trunk challenges the first INVITE."""
    pair = UacUasPair()
    uac = pair.uac
    handle = uac.invite(
        TARGET, from_uri=FROM, sdp=OFFER, now=pair.now, credentials=Credentials("alice", "pw")
    )
    invite = request_of(uac.datagrams_to_send()[0].data)
    uac.receive_datagram(
        challenge_response(invite, 407, "Proxy-Authenticate", "n"), UAS_ADDR, pair.now
    )
    pair.pump()  # ACK for the 407 and the retried INVITE reach the UAS
    (incoming,) = [e for e in pair.take_uas() if isinstance(e, IncomingCall)]
    assert "Proxy-Authorization" in incoming.headers
    pair.uas.answer(incoming.handle, ANSWER, pair.now)
    pair.pump()
    assert [type(e) for e in pair.take_uac()] == [CallAnswered]
    assert pair.uac.call_state(handle) is DialogPhase.CONFIRMED


# -------------------------------------------------------- requests outside calls


#: The fixtures come from peers on private networks, and the helpers from loopback.
PRIVATE_NETWORKS = [
    ipaddress.ip_network(net)
    for net in ("127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
]


def uas() -> SipEndpoint:
    return SipEndpoint(UAS_ADDR, token=make_token("b"), allowed_networks=PRIVATE_NETWORKS)


def answer_to(
    endpoint: SipEndpoint, data: bytes, source: tuple[str, int] = UAC_ADDR
) -> SipResponse:
    endpoint.receive_datagram(data, source, 0.0)
    out = endpoint.datagrams_to_send()
    assert len(out) == 1, out
    return response_of(out[0].data)


def test_options_keepalive() -> None:
    response = answer_to(uas(), fixture("asterisk_options.sip"), ("192.168.1.10", 5060))
    assert response.status == 200
    assert response.headers.get("Allow") == "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO"
    assert response.headers.get("Accept") == "application/sdp"
    assert ";tag=" in (response.headers.get("To") or "")
    assert response.headers.get("Via") == (
        "SIP/2.0/UDP 192.168.1.10:5060;branch=z9hG4bKPj8a7b6c5d-4e3f-2a1b-0c9d-8e7f6a5b4c3d;"
        "received=192.168.1.10;rport=5060"
    )


def test_forbidden_source() -> None:
    endpoint = uas()
    response = answer_to(endpoint, fixture("sipp_invite.sip"), ("203.0.113.7", 5070))
    assert response.status == 403
    assert endpoint.events_received() == [RequestForbidden("INVITE", ("203.0.113.7", 5070))]
    assert endpoint.stats.forbidden == 1
    # Stateless: no transaction, so nothing is ever resent; a retransmission is
    # a new request and gets its own single 403.
    assert endpoint.next_deadline() is None
    endpoint.handle_timeout(100.0)
    assert endpoint.datagrams_to_send() == []
    assert answer_to(endpoint, fixture("sipp_invite.sip"), ("203.0.113.7", 5070)).status == 403
    assert endpoint.stats.forbidden == 2
    open_endpoint = SipEndpoint(UAS_ADDR, allowed_networks=ALLOW_ALL)
    open_endpoint.receive_datagram(fixture("sipp_invite.sip"), ("203.0.113.7", 5070), 0.0)
    assert [type(e) for e in open_endpoint.events_received()] == [IncomingCall]


def test_ipv4_mapped_source_is_checked_as_ipv4() -> None:
    endpoint = SipEndpoint(UAS_ADDR, allowed_networks=[ipaddress.ip_network("10.0.0.0/8")])
    endpoint.receive_datagram(fixture("asterisk_options.sip"), ("::ffff:10.1.2.3", 5060), 0.0)
    assert response_of(endpoint.datagrams_to_send()[0].data).status == 200


def test_unknown_dialog_bye_gets_481() -> None:
    response = answer_to(uas(), fixture("freeswitch_bye.sip"), ("10.0.0.9", 5060))
    assert response.status == 481
    no_tag = fixture("freeswitch_bye.sip").replace(b";tag=gc8Ht0Xj", b"")
    assert answer_to(uas(), no_tag, ("10.0.0.9", 5060)).status == 481


@pytest.mark.parametrize(
    ("method", "status"),
    [("SUBSCRIBE", 405), ("REGISTER", 405), ("MESSAGE", 405), ("FROB", 501)],
)
def test_unsupported_methods(method: str, status: int) -> None:
    data = fixture("asterisk_options.sip").replace(b"OPTIONS", method.encode())
    response = answer_to(uas(), data, ("192.168.1.10", 5060))
    assert response.status == status
    if status == 405:
        # RFC 3261 §8.2.1: "...MUST include an Allow header field".
        assert response.headers.get("Allow") == "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO"


def test_require_unknown_extension_gets_420() -> None:
    data = fixture("sipp_invite.sip").replace(b"Max-Forwards: 70", b"Require: 100rel, timer")
    response = answer_to(uas(), data)
    assert response.status == 420
    assert response.headers.get("Unsupported") == "100rel, timer"


def test_bad_sdp_gets_400_and_wrong_type_415() -> None:
    bad_sdp = fixture("sipp_invite.sip").replace(b"v=0\r\n", b"x=0\r\n")
    response = answer_to(uas(), bad_sdp)
    assert (response.status, response.reason) == (400, "Bad Request (malformed SDP)")
    assert response.headers.get("Warning") == (
        "399 127.0.0.1 \"line 1: first line must be v=0, not 'x=0'\""
    )
    wrong_type = fixture("sipp_invite.sip").replace(b"application/sdp", b"text/plain")
    response = answer_to(uas(), wrong_type)
    assert response.status == 415 and response.headers.get("Accept") == "application/sdp"


def test_malformed_request_gets_400_with_warning() -> None:
    endpoint = uas()
    response = answer_to(endpoint, fixture("bad_no_colon.sip"))
    assert response.status == 400
    assert response.headers.get("Warning") == (
        "399 127.0.0.1 \"line 4: header line has no colon: 'This line is not a header'\""
    )
    assert response.headers.get("CSeq") == "1 OPTIONS"
    assert endpoint.stats.parse_errors == 1 and endpoint.stats.bad_requests_answered == 1


def test_unsupported_version_gets_505() -> None:
    response = answer_to(uas(), fixture("bad_version.sip"))
    assert response.status == 505


def test_malformed_from_gets_400() -> None:
    data = fixture("sipp_invite.sip").replace(b'From: "sipp" <sip:', b"From: <mailto:")
    response = answer_to(uas(), data)
    assert response.status == 400
    assert "scheme is not sip" in (response.headers.get("Warning") or "")


@pytest.mark.parametrize(
    "data",
    [
        fixture("bad_request_line.sip"),  # no start line to answer
        fixture("bad_status_code.sip"),  # a response
        fixture("sipp_ack.sip").replace(b"CSeq: 1 ACK", b"CSeq: 1 BYE"),  # never answer an ACK
        fixture("bad_fold_first.sip"),  # Via lost: nowhere to send
        fixture("sipp_invite.sip").replace(b"Via: SIP/2.0/UDP", b"Via: SIP/9.0/UDP"),
    ],
)
def test_unanswerable_garbage_is_counted_and_dropped(data: bytes) -> None:
    endpoint = uas()
    endpoint.receive_datagram(data, UAC_ADDR, 0.0)
    assert endpoint.datagrams_to_send() == []
    assert endpoint.stats.parse_errors == 1 and endpoint.stats.dropped == 1


def test_garbage_from_forbidden_source_is_not_answered() -> None:
    endpoint = uas()
    endpoint.receive_datagram(fixture("bad_no_colon.sip"), ("198.51.100.1", 5060), 0.0)
    assert endpoint.datagrams_to_send() == []


def test_keepalive_crlf_is_ignored() -> None:
    endpoint = uas()
    endpoint.receive_datagram(b"\r\n\r\n", UAC_ADDR, 0.0)
    assert endpoint.datagrams_to_send() == [] and endpoint.stats.keepalives == 1


def test_merged_invite_gets_482() -> None:
    endpoint = uas()
    endpoint.receive_datagram(fixture("sipp_invite.sip"), UAC_ADDR, 0.0)
    endpoint.datagrams_to_send()
    forked = fixture("sipp_invite.sip").replace(b"branch=z9hG4bK-4711-1-0", b"branch=z9hG4bK-other")
    assert answer_to(endpoint, forked).status == 482


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


def test_stray_response_is_counted() -> None:
    endpoint = uas()
    endpoint.receive_datagram(fixture("ringing_180.sip"), UAC_ADDR, 0.0)
    assert endpoint.stats.stray_responses == 1


def test_max_calls() -> None:
    endpoint = SipEndpoint(UAS_ADDR, max_calls=0)
    response = answer_to(endpoint, fixture("sipp_invite.sip"))
    assert response.status == 503 and response.headers.get("Retry-After") == "5"


# --------------------------------------------------------------- peer fixtures


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


# ------------------------------------------------------------ command misuse


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


def test_progress_carries_early_media_sdp() -> None:
    pair = UacUasPair()
    handle, incoming = place_call(pair)
    pair.uas.progress(incoming.handle, parse_sdp(ANSWER), pair.now)
    pair.pump()
    (progress,) = pair.take_uac()
    assert progress == CallProgress(handle, 183, "Session Progress", parse_sdp(ANSWER))


def test_drop_helper_records(tmp_path: object) -> None:
    record = Delivered(0.0, UAC_ADDR, UAS_ADDR, fixture("sipp_ack.sip"))
    assert record.first_line.startswith("ACK") and isinstance(record.message, SipRequest)


# ------------------------------------------------------------- setup timeouts


def test_unanswered_incoming_call_times_out_with_480() -> None:
    pair = UacUasPair()
    pair.uas.answer_timeout = 60.0
    handle, incoming = place_call(pair)
    pair.uas.ring(incoming.handle, pair.now)
    pair.advance(61)
    assert pair.take_uas() == [CallCancelled(incoming.handle, CancelReason.SETUP_TIMEOUT)]
    assert pair.take_uac()[-1] == CallFailed(handle, 480, "Temporarily Unavailable")


def test_unanswered_outgoing_call_is_cancelled_after_setup_timeout() -> None:
    pair = UacUasPair()
    pair.uac.setup_timeout = 60.0
    pair.uas.answer_timeout = 300.0
    handle, incoming = place_call(pair)
    pair.uas.ring(incoming.handle, pair.now)
    pair.advance(61)
    assert len(pair.sent_by(UAC_ADDR, "CANCEL")) == 1
    assert pair.take_uac()[-1] == CallFailed(handle, 408, "Request Timeout")
    assert pair.take_uas() == [CallCancelled(incoming.handle, CancelReason.CANCEL)]


def test_setup_timeout_without_any_response() -> None:
    uac = SipEndpoint(UAC_ADDR, token=make_token("a"), setup_timeout=10.0)
    handle = uac.invite(TARGET, from_uri=FROM, sdp=OFFER, now=0.0)
    uac.handle_timeout(10.0)
    assert uac.events_received() == [CallFailed(handle, 408, "Request Timeout")]


# ------------------------------------------------------------------ odd peers


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


def test_forked_second_2xx_is_acked_and_hung_up() -> None:
    pair = UacUasPair()
    handle, uas_handle = connected(pair)
    first_ok = response_of(pair.sent_by(UAS_ADDR, "SIP/2.0 200")[0].data)
    forked = SipResponse(
        200,
        "OK",
        first_ok.headers.replaced("To", f"<{TARGET}>;tag=otherfork").replaced(
            "Contact", "<sip:fork@127.0.0.1:5090>"
        ),
        first_ok.body,
    )
    pair.uac.receive_datagram(forked.serialize(), ("127.0.0.1", 5090), pair.now)
    sent = pair.uac.datagrams_to_send()
    assert [(d.data.split(b" ", 1)[0], d.addr) for d in sent] == [
        (b"ACK", ("127.0.0.1", 5090)),
        (b"BYE", ("127.0.0.1", 5090)),
    ]
    assert pair.uac.events_received() == []
    assert pair.uac.call_state(handle) is DialogPhase.CONFIRMED
    assert uas_handle


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


# -------------------------------------------------------------- more corners


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


def test_outbound_proxy_gets_every_request() -> None:
    uac = SipEndpoint(UAC_ADDR, token=make_token("a"))
    proxy = ("10.9.9.9", 5060)
    handle = uac.invite(
        "sip:bob@far.example.com", from_uri=FROM, sdp=OFFER, now=0.0, transport_addr=proxy
    )
    (invite,) = uac.datagrams_to_send()
    assert invite.addr == proxy
    request = request_of(invite.data)
    ok = (
        f"SIP/2.0 200 OK\r\nVia: {request.headers.get('Via')}\r\nFrom: {request.headers.get('From')}\r\n"  # noqa: E501
        f"To: <sip:bob@far.example.com>;tag=far\r\nCall-ID: {request.headers.get('Call-ID')}\r\n"
        f"CSeq: 1 INVITE\r\nContact: <sip:bob@192.0.2.50>\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    uac.receive_datagram(ok, proxy, 0.1)
    (ack,) = uac.datagrams_to_send()
    assert ack.addr == proxy and ack.data.startswith(b"ACK sip:bob@192.0.2.50 SIP/2.0")
    assert uac.events_received() == [CallAnswered(handle, None)]


def test_2xx_without_usable_contact_fails_the_call() -> None:
    uac = SipEndpoint(UAC_ADDR, token=make_token("a"))
    uac.invite(TARGET, from_uri=FROM, sdp=OFFER, now=0.0)
    request = request_of(uac.datagrams_to_send()[0].data)
    ok = (
        f"SIP/2.0 200 OK\r\nVia: {request.headers.get('Via')}\r\nFrom: {request.headers.get('From')}\r\n"  # noqa: E501
        f"To: <{TARGET}>;tag=x\r\nCall-ID: {request.headers.get('Call-ID')}\r\n"
        f"CSeq: 1 INVITE\r\nContact: <mailto:nobody>\r\nContent-Type: application/sdp\r\n"
        f"Content-Length: 5\r\n\r\nv=1\r\n"
    ).encode()
    uac.receive_datagram(ok, UAS_ADDR, 0.1)
    (failed,) = uac.events_received()
    assert isinstance(failed, CallFailed) and failed.status == 502
    assert uac.datagrams_to_send() == []


def test_unparseable_answer_sdp_is_reported_as_none() -> None:
    pair = UacUasPair()
    handle, incoming = place_call(pair)
    pair.uas.answer(incoming.handle, b"v=9\r\n", pair.now)
    pair.pump()
    assert pair.take_uac() == [CallAnswered(handle, None)]
    assert pair.uac.stats.parse_errors == 1


def test_forbidden_cancel() -> None:
    endpoint = uas()
    response = answer_to(endpoint, fixture("cancel.sip"), ("198.51.100.9", 5070))
    assert response.status == 403
    assert endpoint.events_received() == [RequestForbidden("CANCEL", ("198.51.100.9", 5070))]


def test_ack_with_bad_from_is_dropped() -> None:
    endpoint = uas()
    bad = fixture("sipp_ack.sip").replace(b'From: "sipp" <sip:', b"From: <mailto:")
    endpoint.receive_datagram(bad, UAC_ADDR, 0.0)
    assert endpoint.datagrams_to_send() == [] and endpoint.stats.dropped == 1


def test_transaction_limit_answers_statelessly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("callstream.sip.useragent.MAX_TRANSACTIONS", 0)
    endpoint = uas()
    assert answer_to(endpoint, fixture("asterisk_options.sip"), ("10.0.0.1", 5060)).status == 503
    assert not endpoint._server_tx


def test_challenge_for_another_realm_is_not_answered() -> None:
    uac = SipEndpoint(UAC_ADDR, token=make_token("a"))
    handle = uac.invite(
        TARGET, from_uri=FROM, sdp=OFFER, now=0.0, credentials=Credentials("a", "b", realm="mine")
    )
    invite = request_of(uac.datagrams_to_send()[0].data)
    uac.receive_datagram(challenge_response(invite, 401, "WWW-Authenticate", "n"), UAS_ADDR, 0.1)
    assert uac.events_received() == [CallFailed(handle, 401, "Unauthorized")]
    uac.datagrams_to_send()  # the ACK for that 401
    handle = uac.invite(
        TARGET, from_uri=FROM, sdp=OFFER, now=0.0, credentials=Credentials("a", "b")
    )
    invite = request_of(uac.datagrams_to_send()[0].data)
    unusable = challenge_response(invite, 401, "WWW-Authenticate", "n").replace(b"Digest", b"Basic")
    uac.receive_datagram(unusable, UAS_ADDR, 0.1)
    assert uac.events_received() == [CallFailed(handle, 401, "Unauthorized")]


def test_debug_logging_names_messages(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="callstream.sip.endpoint")
    pair = UacUasPair()
    place_call(pair)
    assert any(record.getMessage().startswith("> ") for record in caplog.records)
    assert any("< ('127.0.0.1', 5060) 100 Trying" in r.getMessage() for r in caplog.records)


def test_header_failing_late_still_gets_a_final_response() -> None:
    """A server transaction must never be left without a final response."""
    endpoint = uas()
    require = ", ".join(f"ext{i}" for i in range(70)).encode()
    data = fixture("asterisk_options.sip").replace(b"Max-Forwards: 70", b"Require: " + require)
    response = answer_to(endpoint, data, ("192.168.1.10", 5060))
    assert response.status == 400
    assert "more than 64 values" in (response.headers.get("Warning") or "")


# -------------------------------------------------------------------- admission


def _invite(n: int) -> bytes:
    """The SIPp INVITE as a new call: its own Call-ID, From tag and branch."""
    return (fixture("sipp_invite.sip")
            .replace(b"1-4711@", f"{n}-4711@".encode())
            .replace(b"SIPpTag001", f"SIPpTag{n:03d}".encode())
            .replace(b"-4711-1-0", f"-4711-{n}-0".encode()))


def test_forbidden_source_can_be_dropped() -> None:
    endpoint = SipEndpoint(UAS_ADDR, forbidden_action=ForbiddenAction.DROP)
    for data in (fixture("sipp_invite.sip"), fixture("asterisk_options.sip")):
        endpoint.receive_datagram(data, ("203.0.113.7", 5070), 0.0)
    assert endpoint.datagrams_to_send() == []
    assert endpoint.stats.forbidden == 2 and endpoint.stats.dropped == 2
    assert [type(e) for e in endpoint.events_received()] == [RequestForbidden] * 2
    assert endpoint.next_deadline() is None


def test_forbidden_cancel_is_refused_statelessly() -> None:
    endpoint = uas()
    data = fixture("sipp_invite.sip").replace(b"INVITE", b"CANCEL")
    assert answer_to(endpoint, data, ("203.0.113.7", 5070)).status == 403
    assert endpoint.next_deadline() is None


def test_rate_limit_answers_503_statelessly() -> None:
    endpoint = SipEndpoint(UAS_ADDR, token=make_token("b"),
                           limits=AdmissionLimits(rate_per_sec=1.0, burst=2, retry_after=7))
    statuses = [answer_to(endpoint, _invite(n)).status for n in range(1, 4)]
    assert statuses == [100, 100, 503]
    (refused,) = [e for e in endpoint.events_received() if isinstance(e, RequestRefused)]
    assert refused == RequestRefused("INVITE", UAC_ADDR, RefusalReason.RATE_LIMITED)
    assert endpoint.active_calls == 2 and endpoint.stats.rate_limited == 1
    endpoint.receive_datagram(_invite(4), UAC_ADDR, 0.0)
    (datagram,) = endpoint.datagrams_to_send()
    response = response_of(datagram.data)
    assert (response.status, response.headers.get("Retry-After")) == (503, "7")
    # The INVITE that got 503 has no transaction: its retransmission is a new request.
    endpoint.receive_datagram(_invite(4), UAC_ADDR, 0.5)
    assert response_of(endpoint.datagrams_to_send()[0].data).status == 503
    assert answer_to(endpoint, _invite(5), ("127.0.0.2", 5070)).status == 100  # another source
    endpoint.receive_datagram(_invite(6), UAC_ADDR, 1.0)  # a second later: a token again
    assert response_of(endpoint.datagrams_to_send()[0].data).status == 100


def test_parked_cap_per_source_and_its_release() -> None:
    endpoint = SipEndpoint(UAS_ADDR, token=make_token("b"),
                           limits=AdmissionLimits(max_parked_per_source=2))
    assert [answer_to(endpoint, _invite(n)).status for n in (1, 2, 3)] == [100, 100, 486]
    calls = [e for e in endpoint.events_received() if isinstance(e, IncomingCall)]
    assert endpoint.stats.parked_limited == 1 and endpoint.active_calls == 2
    assert answer_to(endpoint, _invite(4), ("127.0.0.2", 5070)).status == 100
    endpoint.answer(calls[0].handle, ANSWER, 0.0)  # answered: no longer parked
    endpoint.datagrams_to_send()
    assert answer_to(endpoint, _invite(5)).status == 100
    assert answer_to(endpoint, _invite(6)).status == 486
    endpoint.reject(calls[1].handle, 486, None, 0.0)  # rejected: gone
    endpoint.datagrams_to_send()
    assert answer_to(endpoint, _invite(7)).status == 100


def test_parked_call_times_out_and_frees_its_place() -> None:
    pair = UacUasPair()
    pair.uas.answer_timeout = 5.0
    pair.uas.limits = AdmissionLimits(max_parked_per_source=1)
    handle, incoming = place_call(pair)
    pair.uac.invite(TARGET, from_uri=FROM, sdp=OFFER, now=pair.now)
    pair.pump()
    assert len(pair.sent_by(UAS_ADDR, "SIP/2.0 486")) == 1
    pair.take_uac()
    pair.take_uas()
    pair.advance(6)
    assert pair.take_uas() == [CallCancelled(incoming.handle, CancelReason.SETUP_TIMEOUT)]
    assert pair.take_uac()[-1] == CallFailed(handle, 480, "Temporarily Unavailable")
    place_call(pair)  # the source's place is free again


def test_digest_challenge_then_authorized_invite() -> None:
    pair = UacUasPair()
    pair.uas.auth = DigestServer(Credentials("alice", "s3cret"), realm="callstream")
    handle = pair.uac.invite(TARGET, from_uri=FROM, sdp=OFFER, now=pair.now,
                             credentials=Credentials("alice", "s3cret"))
    pair.pump()
    (incoming,) = pair.take_uas()
    assert isinstance(incoming, IncomingCall)
    assert lines(pair, UAS_ADDR)[:2] == ["SIP/2.0 401 Unauthorized", "SIP/2.0 100 Trying"]
    assert pair.uas.stats.auth_challenges == 1 and pair.uas.stats.auth_failures == 0
    assert pair.uas.active_calls == 1
    pair.uas.answer(incoming.handle, ANSWER, pair.now)
    pair.pump()
    assert [type(e) for e in pair.take_uac()] == [CallAnswered]
    assert pair.uac.call_state(handle) is DialogPhase.CONFIRMED


def test_digest_wrong_password_never_makes_a_call() -> None:
    pair = UacUasPair()
    pair.uas.auth = DigestServer(Credentials("alice", "s3cret"), realm="callstream")
    handle = pair.uac.invite(TARGET, from_uri=FROM, sdp=OFFER, now=pair.now,
                             credentials=Credentials("alice", "guess"))
    pair.pump()
    assert pair.take_uac() == [CallFailed(handle, 401, "Unauthorized")]
    events = pair.take_uas()
    assert events == [RequestRefused("INVITE", UAC_ADDR, RefusalReason.AUTH_FAILED)]
    assert pair.uas.stats.auth_failures == 1 and pair.uas.active_calls == 0
    # Every 401 was stateless: nothing left to resend.
    assert pair.uas.next_deadline() is None


def test_digest_without_credentials_gets_a_challenge_once_per_request() -> None:
    endpoint = uas()
    endpoint.auth = DigestServer(Credentials("alice", "s3cret"), realm="callstream")
    response = answer_to(endpoint, fixture("sipp_invite.sip"))
    assert response.status == 401
    challenge = parse_challenge(response.headers.get("WWW-Authenticate") or "")
    assert (challenge.realm, challenge.qop) == ("callstream", ("auth",))
    assert endpoint.next_deadline() is None and endpoint.active_calls == 0
    assert endpoint.events_received() == []


def test_rate_limit_spares_requests_that_make_no_dialog() -> None:
    endpoint = SipEndpoint(UAS_ADDR, token=make_token("b"), allowed_networks=PRIVATE_NETWORKS,
                           limits=AdmissionLimits(rate_per_sec=1.0, burst=1))
    for _ in range(5):  # a trunk's keep-alives
        assert answer_to(endpoint, fixture("asterisk_options.sip"),
                         ("192.168.1.10", 5060)).status == 200
    assert answer_to(endpoint, _invite(1), ("192.168.1.10", 5060)).status == 100
    assert answer_to(endpoint, _invite(2), ("192.168.1.10", 5060)).status == 503


def test_unparsable_request_whose_headers_cannot_be_echoed_gets_no_answer() -> None:
    # Found by the hostile e2e fuzz: a bad start line makes the 400 echo the raw From,
    # which holds a NUL the serializer refuses. The request is dropped, nothing raises.
    endpoint = uas()
    data = fixture("bad_version.sip").replace(b"From: ", b"From: \x00", 1)
    assert b"\x00" in data
    endpoint.receive_datagram(data, ("127.0.0.1", 5080), 0.0)
    assert endpoint.datagrams_to_send() == []
    assert endpoint.stats.parse_errors == 1 and endpoint.stats.dropped == 1
    assert endpoint.stats.bad_requests_answered == 0
