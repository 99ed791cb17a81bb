"""Tests for callstream.sip.dialog (RFC 3261 §12, §13.2.2.4)."""

from __future__ import annotations

import dataclasses

from callstream.sip.dialog import Dialog, DialogId, DialogState
from callstream.sip.headers import parse_name_addr
from callstream.sip.message import Headers, SipResponse
from callstream.sip.uri import parse_uri

from .helpers import fixture, request_of, response_of

VIA = "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKnew"


def test_uas_dialog_from_invite_with_record_route() -> None:
    invite = request_of(fixture("sipp_invite.sip"))
    invite = dataclasses.replace(
        invite,
        headers=Headers(
            [
                *invite.headers.items()[:1],
                ("Record-Route", "<sip:p1.example.com;lr>, <sip:p2.example.com;lr>"),
                *invite.headers.items()[1:],
            ]
        ),
    )
    dialog = Dialog.as_uas(invite, "ourtag")
    assert dialog.id == DialogId("1-4711@127.0.0.1", "ourtag", "4711SIPpTag001")
    assert dialog.remote_seq == 1 and dialog.local_seq == 0
    assert dialog.remote_target == parse_uri("sip:sipp@127.0.0.1:5070;transport=UDP")
    assert [r.uri.host for r in dialog.route_set] == ["p1.example.com", "p2.example.com"]
    bye = dialog.create_request("BYE", via=VIA)
    # Loose routing: Request-URI is the remote target, Route is the route set in order.
    assert bye.uri == "sip:sipp@127.0.0.1:5070;transport=UDP"
    assert bye.headers.get_all("Route") == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    assert bye.headers.get("From") == "<sip:service@127.0.0.1:5060>;tag=ourtag"
    assert bye.headers.get("To") == '"sipp" <sip:sipp@127.0.0.1:5070>;tag=4711SIPpTag001'
    assert bye.headers.get("CSeq") == "1 BYE"
    assert dialog.next_hop().host == "p1.example.com"


def test_uac_dialog_from_2xx_reverses_record_route() -> None:
    ok = response_of(fixture("freeswitch_200.sip"))
    request = request_of(
        b"INVITE sip:1000@10.0.0.9 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK7d2c1b0a\r\n"
        b"From: <sip:callstream@10.0.0.5>;tag=gc8Ht0Xj\r\n"
        b"To: <sip:1000@10.0.0.9>\r\n"
        b"Call-ID: 4c5d6e7f8a9b@10.0.0.5\r\n"
        b"CSeq: 1 INVITE\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    dialog = Dialog.as_uac(request, ok)
    assert dialog.state is DialogState.CONFIRMED
    assert dialog.id == DialogId("4c5d6e7f8a9b@10.0.0.5", "gc8Ht0Xj", "8N6v0gjpy0KjH")
    assert [r.uri.host for r in dialog.route_set] == ["10.0.0.2", "10.0.0.1"]
    assert dialog.local_seq == 1 and dialog.remote_seq is None
    ack = dialog.create_ack(1, via=VIA)
    assert ack.method == "ACK" and ack.headers.get("CSeq") == "1 ACK"
    assert ack.uri == "sip:1000@10.0.0.9:5060;transport=udp"
    assert dialog.local_seq == 1  # the ACK reuses the INVITE's number
    reinvite = dialog.create_request(
        "INVITE", via=VIA, contact="<sip:cs@10.0.0.5>", body=b"v=0\r\n"
    )
    assert reinvite.headers.get("CSeq") == "2 INVITE"
    assert reinvite.headers.get("Content-Type") == "application/sdp"
    assert reinvite.headers.get("Content-Length") == "5"
    info = dialog.create_request(
        "INFO", via=VIA, body=b"Signal=1\r\n", content_type="application/dtmf-relay"
    )
    assert info.headers.get("CSeq") == "3 INFO"
    assert info.headers.get("Content-Type") == "application/dtmf-relay"


def test_strict_router() -> None:
    ok = response_of(fixture("freeswitch_200.sip"))
    ok = dataclasses.replace(
        ok,
        headers=ok.headers.without("Record-Route").replaced(
            "Record-Route", "<sip:strict.example.com;maddr=10.0.0.1;method=INVITE>"
        ),
    )
    request = request_of(fixture("sipp_invite.sip"))
    dialog = Dialog.as_uac(request, ok)
    bye = dialog.create_request("BYE", via=VIA)
    # §12.2.1.1: the first route goes in the Request-URI (minus forbidden params),
    # the remote target goes last in Route.
    assert bye.uri == "sip:strict.example.com;maddr=10.0.0.1"
    assert bye.headers.get_all("Route") == ["<sip:1000@10.0.0.9:5060;transport=udp>"]


def test_early_dialog_confirm_and_target_refresh() -> None:
    request = request_of(fixture("sipp_invite.sip"))
    ringing = response_of(fixture("ringing_180.sip"))
    dialog = Dialog.as_uac(request, ringing)
    assert dialog.state is DialogState.EARLY
    ok = SipResponse(
        200,
        "OK",
        ringing.headers.replaced("Contact", "<sip:moved@127.0.0.1:6000>").replaced(
            "Record-Route", "<sip:proxy.example.com;lr>"
        ),
    )
    dialog.confirm(ok)
    assert dialog.state.name == "CONFIRMED"  # (mypy keeps the EARLY narrowing)
    assert dialog.remote_target == parse_uri("sip:moved@127.0.0.1:6000")
    assert [r.uri.host for r in dialog.route_set] == ["proxy.example.com"]


def test_remote_cseq_ordering() -> None:
    dialog = Dialog.as_uas(request_of(fixture("sipp_invite.sip")), "t")
    assert dialog.accept_remote_seq(2, "BYE")
    assert not dialog.accept_remote_seq(1, "INFO")  # §12.2.2: lower -> 500
    assert dialog.accept_remote_seq(1, "ACK")  # not checked
    assert dialog.remote_seq == 2


def test_missing_contact_falls_back() -> None:
    invite = request_of(fixture("sipp_invite.sip"))
    invite = dataclasses.replace(invite, headers=invite.headers.without("Contact"))
    dialog = Dialog.as_uas(invite, "t")
    assert dialog.remote_target == parse_name_addr(invite.headers.get("From") or "").uri
    assert "Dialog" in repr(dialog)
