"""Outgoing calls (callstream.sip.uac): INVITE outcomes, CANCEL, digest retry, forks."""

from __future__ import annotations

import pytest

from callstream.sip.digest import (
    Credentials,
    build_authorization,
    parse_challenge,
)
from callstream.sip.endpoint import (
    CallAnswered,
    CallCancelled,
    CallFailed,
    CancelReason,
    DialogEnded,
    DialogPhase,
    EndReason,
    IncomingCall,
    SipEndpoint,
)
from callstream.sip.exceptions import InvalidCallState
from callstream.sip.message import SipResponse

from .helpers import (
    ANSWER,
    FROM,
    OFFER,
    REASONS,
    TARGET,
    UAC_ADDR,
    UAS_ADDR,
    UacUasPair,
    challenge_response,
    connected,
    lines,
    make_token,
    place_call,
    request_of,
    response_of,
)


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
