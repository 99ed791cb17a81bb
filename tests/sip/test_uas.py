"""Incoming calls (callstream.sip.uas): admission, answers, CANCEL received, timeouts."""

from __future__ import annotations

import pytest

from callstream.sip.admission import AdmissionLimits, RefusalReason
from callstream.sip.digest import (
    Credentials,
    DigestServer,
    parse_challenge,
)
from callstream.sip.endpoint import (
    CallAnswered,
    CallCancelled,
    CallFailed,
    CallProgress,
    CancelReason,
    DialogEnded,
    DialogPhase,
    EndReason,
    IncomingCall,
    RequestForbidden,
    RequestRefused,
    SipEndpoint,
)
from callstream.sip.sdp import parse_sdp

from .helpers import (
    ANSWER,
    FROM,
    OFFER,
    TARGET,
    UAC_ADDR,
    UAS_ADDR,
    UacUasPair,
    answer_to,
    connected,
    fixture,
    lines,
    make_token,
    new_invite,
    place_call,
    response_of,
    uas,
)


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


def test_cancel_for_unknown_transaction_gets_481() -> None:
    pair = UacUasPair()
    pair.uas.receive_datagram(fixture("cancel.sip"), UAC_ADDR, pair.now)
    (out,) = pair.uas.datagrams_to_send()
    assert out.data.startswith(b"SIP/2.0 481 Call/Transaction Does Not Exist\r\n")


def test_merged_invite_gets_482() -> None:
    endpoint = uas()
    endpoint.receive_datagram(fixture("sipp_invite.sip"), UAC_ADDR, 0.0)
    endpoint.datagrams_to_send()
    forked = fixture("sipp_invite.sip").replace(b"branch=z9hG4bK-4711-1-0", b"branch=z9hG4bK-other")
    assert answer_to(endpoint, forked).status == 482


def test_max_calls() -> None:
    endpoint = SipEndpoint(UAS_ADDR, max_calls=0)
    response = answer_to(endpoint, fixture("sipp_invite.sip"))
    assert response.status == 503 and response.headers.get("Retry-After") == "5"


def test_progress_carries_early_media_sdp() -> None:
    pair = UacUasPair()
    handle, incoming = place_call(pair)
    pair.uas.progress(incoming.handle, parse_sdp(ANSWER), pair.now)
    pair.pump()
    (progress,) = pair.take_uac()
    assert progress == CallProgress(handle, 183, "Session Progress", parse_sdp(ANSWER))


def test_unanswered_incoming_call_times_out_with_480() -> None:
    pair = UacUasPair()
    pair.uas.answer_timeout = 60.0
    handle, incoming = place_call(pair)
    pair.uas.ring(incoming.handle, pair.now)
    pair.advance(61)
    assert pair.take_uas() == [CallCancelled(incoming.handle, CancelReason.SETUP_TIMEOUT)]
    assert pair.take_uac()[-1] == CallFailed(handle, 480, "Temporarily Unavailable")


def test_forbidden_cancel() -> None:
    endpoint = uas()
    response = answer_to(endpoint, fixture("cancel.sip"), ("198.51.100.9", 5070))
    assert response.status == 403
    assert endpoint.events_received() == [RequestForbidden("CANCEL", ("198.51.100.9", 5070))]


def test_forbidden_cancel_is_refused_statelessly() -> None:
    endpoint = uas()
    data = fixture("sipp_invite.sip").replace(b"INVITE", b"CANCEL")
    assert answer_to(endpoint, data, ("203.0.113.7", 5070)).status == 403
    assert endpoint.next_deadline() is None


def test_rate_limit_answers_503_statelessly() -> None:
    endpoint = SipEndpoint(UAS_ADDR, token=make_token("b"),
                           limits=AdmissionLimits(rate_per_sec=1.0, burst=2, retry_after=7))
    statuses = [answer_to(endpoint, new_invite(n)).status for n in range(1, 4)]
    assert statuses == [100, 100, 503]
    (refused,) = [e for e in endpoint.events_received() if isinstance(e, RequestRefused)]
    assert refused == RequestRefused("INVITE", UAC_ADDR, RefusalReason.RATE_LIMITED)
    assert endpoint.active_calls == 2 and endpoint.stats.rate_limited == 1
    endpoint.receive_datagram(new_invite(4), UAC_ADDR, 0.0)
    (datagram,) = endpoint.datagrams_to_send()
    response = response_of(datagram.data)
    assert (response.status, response.headers.get("Retry-After")) == (503, "7")
    # The INVITE that got 503 has no transaction: its retransmission is a new request.
    endpoint.receive_datagram(new_invite(4), UAC_ADDR, 0.5)
    assert response_of(endpoint.datagrams_to_send()[0].data).status == 503
    assert answer_to(endpoint, new_invite(5), ("127.0.0.2", 5070)).status == 100  # another source
    endpoint.receive_datagram(new_invite(6), UAC_ADDR, 1.0)  # a second later: a token again
    assert response_of(endpoint.datagrams_to_send()[0].data).status == 100


def test_parked_cap_per_source_and_its_release() -> None:
    endpoint = SipEndpoint(UAS_ADDR, token=make_token("b"),
                           limits=AdmissionLimits(max_parked_per_source=2))
    assert [answer_to(endpoint, new_invite(n)).status for n in (1, 2, 3)] == [100, 100, 486]
    calls = [e for e in endpoint.events_received() if isinstance(e, IncomingCall)]
    assert endpoint.stats.parked_limited == 1 and endpoint.active_calls == 2
    assert answer_to(endpoint, new_invite(4), ("127.0.0.2", 5070)).status == 100
    endpoint.answer(calls[0].handle, ANSWER, 0.0)  # answered: no longer parked
    endpoint.datagrams_to_send()
    assert answer_to(endpoint, new_invite(5)).status == 100
    assert answer_to(endpoint, new_invite(6)).status == 486
    endpoint.reject(calls[1].handle, 486, None, 0.0)  # rejected: gone
    endpoint.datagrams_to_send()
    assert answer_to(endpoint, new_invite(7)).status == 100


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


def test_draining_refuses_new_calls_and_probes_with_503_but_keeps_live_ones() -> None:
    """drain(): a SIP front's OPTIONS probe and a new INVITE get 503 (statelessly, with
    Retry-After), so the front fails over; the call already up goes on to its BYE."""
    pair = UacUasPair()
    handle, uas_handle = connected(pair)
    pair.uas.drain()
    options = fixture("asterisk_options.sip")
    response = answer_to(pair.uas, options, ("127.0.0.1", 5090))
    assert (response.status, response.headers.get("Retry-After")) == (503, "300")
    response = answer_to(pair.uas, new_invite(7))
    assert (response.status, response.headers.get("Retry-After")) == (503, "300")
    assert pair.uas.events_received() == [
        RequestRefused("INVITE", UAC_ADDR, RefusalReason.DRAINING)]
    assert pair.uas.active_calls == 1  # the live call only: no state for the refused one
    dialog = pair.uac.dialog(handle)
    assert dialog is not None  # OPTIONS inside the live call's dialog is still 200
    request = dialog.create_request("OPTIONS", via="SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKo")
    pair.uas.receive_datagram(request.serialize(), UAC_ADDR, pair.now)
    (out,) = pair.uas.datagrams_to_send()
    assert response_of(out.data).status == 200
    pair.uac.bye(handle, pair.now)
    pair.pump()
    assert pair.take_uas() == [DialogEnded(uas_handle, EndReason.REMOTE_BYE)]
    assert pair.take_uac() == [DialogEnded(handle, EndReason.LOCAL_BYE, 200)]
