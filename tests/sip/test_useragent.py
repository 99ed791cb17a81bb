"""The user agent core (callstream.sip.useragent): intake of every message.

Out-of-dialog requests, the allow-list, parse errors and what they are answered
with, keep-alives, stray responses, the transaction limit."""

from __future__ import annotations

import ipaddress

import pytest

from callstream.sip.admission import AdmissionLimits, ForbiddenAction
from callstream.sip.endpoint import (
    ALLOW_ALL,
    IncomingCall,
    RequestForbidden,
    SipEndpoint,
)

from .helpers import (
    PRIVATE_NETWORKS,
    UAC_ADDR,
    UAS_ADDR,
    answer_to,
    fixture,
    make_token,
    new_invite,
    response_of,
    uas,
)


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


def test_stray_response_is_counted() -> None:
    endpoint = uas()
    endpoint.receive_datagram(fixture("ringing_180.sip"), UAC_ADDR, 0.0)
    assert endpoint.stats.stray_responses == 1


def test_transaction_limit_answers_statelessly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("callstream.sip.useragent.MAX_TRANSACTIONS", 0)
    endpoint = uas()
    assert answer_to(endpoint, fixture("asterisk_options.sip"), ("10.0.0.1", 5060)).status == 503
    assert not endpoint._server_tx


def test_header_failing_late_still_gets_a_final_response() -> None:
    """A server transaction must never be left without a final response."""
    endpoint = uas()
    require = ", ".join(f"ext{i}" for i in range(70)).encode()
    data = fixture("asterisk_options.sip").replace(b"Max-Forwards: 70", b"Require: " + require)
    response = answer_to(endpoint, data, ("192.168.1.10", 5060))
    assert response.status == 400
    assert "more than 64 values" in (response.headers.get("Warning") or "")


def test_forbidden_source_can_be_dropped() -> None:
    endpoint = SipEndpoint(UAS_ADDR, forbidden_action=ForbiddenAction.DROP)
    for data in (fixture("sipp_invite.sip"), fixture("asterisk_options.sip")):
        endpoint.receive_datagram(data, ("203.0.113.7", 5070), 0.0)
    assert endpoint.datagrams_to_send() == []
    assert endpoint.stats.forbidden == 2 and endpoint.stats.dropped == 2
    assert [type(e) for e in endpoint.events_received()] == [RequestForbidden] * 2
    assert endpoint.next_deadline() is None


def test_rate_limit_spares_requests_that_make_no_dialog() -> None:
    endpoint = SipEndpoint(UAS_ADDR, token=make_token("b"), allowed_networks=PRIVATE_NETWORKS,
                           limits=AdmissionLimits(rate_per_sec=1.0, burst=1))
    for _ in range(5):  # a trunk's keep-alives
        assert answer_to(endpoint, fixture("asterisk_options.sip"),
                         ("192.168.1.10", 5060)).status == 200
    assert answer_to(endpoint, new_invite(1), ("192.168.1.10", 5060)).status == 100
    assert answer_to(endpoint, new_invite(2), ("192.168.1.10", 5060)).status == 503


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
