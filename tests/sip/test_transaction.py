"""Tests for callstream.sip.transaction: RFC 3261 §17 state machines and timers A-M.

Each test steps a fake clock through the transaction's deadlines, so the
retransmission schedules are exact, never slept.
"""

from __future__ import annotations

import dataclasses

import pytest

from callstream.sip.exceptions import InvalidTransactionStep
from callstream.sip.headers import parse_via
from callstream.sip.message import Headers, SipRequest, SipResponse
from callstream.sip.transaction import (
    INITIAL_STATE,
    STATE_TIMERS,
    TIMERS,
    TRANSITIONS,
    Input,
    Kind,
    Output,
    PassUp,
    Send,
    State,
    TimedOut,
    Timer,
    TimerConfig,
    Transaction,
    TransportFailed,
    build_ack_for_final,
    client_key,
    server_key,
    state_diagram,
)

from .helpers import fixture, request_of

INVITE = request_of(fixture("sipp_invite.sip"))
OPTIONS = request_of(fixture("asterisk_options.sip"))
T0 = 100.0


def response_to(request: SipRequest, status: int, *, tag: str = "as5f1c2a") -> SipResponse:
    headers = [
        ("Via", request.headers.get("Via") or ""),
        ("From", request.headers.get("From") or ""),
        (
            "To",
            f"{request.headers.get('To')};tag={tag}"
            if status > 100
            else request.headers.get("To") or "",
        ),
        ("Call-ID", request.headers.get("Call-ID") or ""),
        ("CSeq", request.headers.get("CSeq") or ""),
        ("Content-Length", "0"),
    ]
    return SipResponse(status, "Reason", Headers(headers))


def run_timers(tx: Transaction, until: float) -> list[tuple[float, Output]]:
    """Fire every deadline up to ``until``; return (time, output) pairs."""
    fired: list[tuple[float, Output]] = []
    while (deadline := tx.next_deadline()) is not None and deadline <= until:
        fired.extend((deadline - T0, output) for output in tx.handle_timeout(deadline))
    return fired


def send_times(fired: list[tuple[float, Output]]) -> list[float]:
    return [round(t, 3) for t, output in fired if isinstance(output, Send)]


# ----------------------------------------------------------------- INVITE client


def test_timer_a_doubles_and_timer_b_gives_up_at_64_t1() -> None:
    """§17.1.1.2: retransmit at T1, 2T1, 4T1...; Timer B = 64*T1 ends it."""
    tx = Transaction(Kind.INVITE_CLIENT, INVITE)
    assert tx.start(T0) == [Send(INVITE)]
    fired = run_timers(tx, T0 + 100)
    assert send_times(fired) == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert fired[-1] == (32.0, TimedOut(Timer.B))
    assert tx.terminated and tx.next_deadline() is None


def test_invite_client_1xx_stops_retransmission() -> None:
    tx = Transaction(Kind.INVITE_CLIENT, INVITE)
    tx.start(T0)
    ringing = response_to(INVITE, 180)
    assert tx.receive_response(ringing, T0 + 0.2) == [PassUp(ringing)]
    assert tx.state is State.PROCEEDING
    assert tx.next_deadline() is None  # no Timer A/B in Proceeding


def test_invite_client_non_2xx_acks_and_waits_timer_d() -> None:
    tx = Transaction(Kind.INVITE_CLIENT, INVITE)
    tx.start(T0)
    busy = response_to(INVITE, 486)
    outputs = tx.receive_response(busy, T0 + 1)
    ack = build_ack_for_final(INVITE, busy)
    assert outputs == [Send(ack), PassUp(busy)]
    assert tx.state is State.COMPLETED
    # "Any retransmissions of the final response ... MUST cause the ACK to be re-passed"
    assert tx.receive_response(busy, T0 + 2) == [Send(ack)]
    assert tx.next_deadline() == T0 + 1 + 32.0
    assert run_timers(tx, T0 + 40) == []
    assert tx.terminated


def test_ack_for_non_2xx_follows_17_1_1_3() -> None:
    busy = response_to(INVITE, 486, tag="xyz")
    ack = build_ack_for_final(INVITE, busy)
    assert ack.method == "ACK" and ack.uri == INVITE.uri
    assert ack.headers.get_all("Via") == [INVITE.headers.get("Via")]  # same branch
    assert ack.headers.get("To") == busy.headers.get("To")
    assert ack.headers.get("From") == INVITE.headers.get("From")
    assert ack.headers.get("CSeq") == "1 ACK"


def test_invite_client_2xx_goes_to_accepted_and_passes_retransmissions() -> None:
    """RFC 6026 §8.4: 2xx retransmissions are passed up for Timer M = 64*T1."""
    tx = Transaction(Kind.INVITE_CLIENT, INVITE)
    tx.start(T0)
    ok = response_to(INVITE, 200)
    assert tx.receive_response(ok, T0 + 1) == [PassUp(ok)]
    assert tx.state is State.ACCEPTED
    assert tx.receive_response(ok, T0 + 1.5) == [PassUp(ok)]
    assert tx.receive_response(response_to(INVITE, 486), T0 + 2) == []
    assert tx.next_deadline() == T0 + 33
    run_timers(tx, T0 + 40)
    assert tx.terminated


def test_invite_client_transport_error() -> None:
    tx = Transaction(Kind.INVITE_CLIENT, INVITE, reliable=True)
    tx.start(T0)
    assert tx.transport_error(T0) == [TransportFailed()]
    assert tx.terminated
    assert tx.transport_error(T0) == []  # nothing left to fail


# ------------------------------------------------------------- non-INVITE client


def test_timer_e_caps_at_t2_and_timer_f_gives_up() -> None:
    """§17.1.2.2: E = T1, 2T1... capped at T2 (0.5, 1, 2, 4, 4, ...); F = 64*T1."""
    tx = Transaction(Kind.NON_INVITE_CLIENT, OPTIONS)
    tx.start(T0)
    fired = run_timers(tx, T0 + 100)
    times = send_times(fired)
    intervals = [round(b - a, 3) for a, b in zip([0.0, *times], times, strict=False)]
    assert intervals == [0.5, 1, 2, 4, 4, 4, 4, 4, 4, 4]
    assert fired[-1] == (32.0, TimedOut(Timer.F))


def test_timer_e_uses_t2_in_proceeding() -> None:
    tx = Transaction(Kind.NON_INVITE_CLIENT, OPTIONS)
    tx.start(T0)
    run_timers(tx, T0 + 0.5)  # one retransmission, next E interval would be 1 s
    tx.receive_response(response_to(OPTIONS, 100), T0 + 0.6)
    assert tx.state is State.PROCEEDING
    fired = run_timers(tx, T0 + 20)
    assert send_times(fired)[:3] == [1.5, 5.5, 9.5]  # then every T2


def test_non_invite_client_final_then_timer_k() -> None:
    tx = Transaction(Kind.NON_INVITE_CLIENT, OPTIONS)
    tx.start(T0)
    ok = response_to(OPTIONS, 200)
    assert tx.receive_response(ok, T0 + 0.1) == [PassUp(ok)]
    assert tx.receive_response(ok, T0 + 0.2) == []  # buffered retransmission
    assert tx.next_deadline() == T0 + 0.1 + 5.0  # Timer K = T4
    run_timers(tx, T0 + 10)
    assert tx.terminated


# ----------------------------------------------------------------- INVITE server


def test_invite_server_timer_g_and_h() -> None:
    """§17.2.1: final non-2xx resent on G (T1 doubling, cap T2) until ACK or H (64*T1)."""
    tx = Transaction(Kind.INVITE_SERVER, INVITE)
    assert tx.start(T0) == []
    trying = response_to(INVITE, 100)
    assert tx.send_response(trying, T0) == [Send(trying)]
    assert tx.receive_request(INVITE, T0 + 0.1) == [Send(trying)]  # retransmitted INVITE
    busy = response_to(INVITE, 486)
    assert tx.send_response(busy, T0 + 1) == [Send(busy)]
    fired = run_timers(tx, T0 + 100)
    times = send_times(fired)
    assert [round(t - 1, 3) for t in times[:6]] == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5]
    assert fired[-1] == (33.0, TimedOut(Timer.H))


def test_invite_server_ack_confirms_then_timer_i() -> None:
    tx = Transaction(Kind.INVITE_SERVER, INVITE)
    tx.start(T0)
    tx.send_response(response_to(INVITE, 486), T0)
    ack = build_ack_for_final(INVITE, response_to(INVITE, 486))
    assert tx.receive_request(ack, T0 + 0.2) == []
    assert tx.state is State.CONFIRMED
    assert tx.receive_request(ack, T0 + 0.3) == []  # absorbed
    assert tx.receive_request(INVITE, T0 + 0.4) == []  # absorbed
    assert tx.next_deadline() == T0 + 0.2 + 5.0  # Timer I = T4
    run_timers(tx, T0 + 10)
    assert tx.terminated


def test_invite_server_2xx_accepted_absorbs_retransmissions() -> None:
    """RFC 6026 §8.7: INVITE retransmissions after a 2xx are absorbed for Timer L."""
    tx = Transaction(Kind.INVITE_SERVER, INVITE)
    tx.start(T0)
    ok = response_to(INVITE, 200)
    assert tx.send_response(ok, T0) == [Send(ok)]
    assert tx.state is State.ACCEPTED
    assert tx.receive_request(INVITE, T0 + 0.5) == []
    assert tx.send_response(ok, T0 + 0.5) == [Send(ok)]  # TU's own retransmission
    assert tx.next_deadline() == T0 + 32
    run_timers(tx, T0 + 40)
    assert tx.terminated


def test_second_final_response_is_a_caller_bug() -> None:
    tx = Transaction(Kind.INVITE_SERVER, INVITE)
    tx.start(T0)
    tx.send_response(response_to(INVITE, 486), T0)
    with pytest.raises(InvalidTransactionStep) as info:
        tx.send_response(response_to(INVITE, 200), T0)
    assert str(info.value) == "can't handle TU sends 2xx in state Completed of IST INVITE"
    assert isinstance(info.value, AssertionError)


# ------------------------------------------------------------- non-INVITE server


def test_non_invite_server_timer_j() -> None:
    tx = Transaction(Kind.NON_INVITE_SERVER, OPTIONS)
    tx.start(T0)
    assert tx.receive_request(OPTIONS, T0) == []  # Trying: discarded
    ok = response_to(OPTIONS, 200)
    assert tx.send_response(ok, T0 + 0.1) == [Send(ok)]
    assert tx.receive_request(OPTIONS, T0 + 1) == [Send(ok)]
    assert tx.next_deadline() == T0 + 0.1 + 32
    with pytest.raises(InvalidTransactionStep):
        tx.send_response(ok, T0 + 2)
    run_timers(tx, T0 + 40)
    assert tx.terminated


def test_non_invite_server_provisional() -> None:
    tx = Transaction(Kind.NON_INVITE_SERVER, OPTIONS)
    tx.start(T0)
    trying = response_to(OPTIONS, 100)
    assert tx.send_response(trying, T0) == [Send(trying)]
    assert tx.receive_request(OPTIONS, T0 + 0.1) == [Send(trying)]
    assert tx.state is State.PROCEEDING


# --------------------------------------------------------------- reliable (TCP)


@pytest.mark.parametrize(
    ("kind", "request_", "final"),
    [
        (Kind.INVITE_CLIENT, INVITE, 486),
        (Kind.NON_INVITE_CLIENT, OPTIONS, 200),
    ],
)
def test_reliable_client_no_retransmit_and_zero_wait(
    kind: Kind, request_: SipRequest, final: int
) -> None:
    tx = Transaction(kind, request_, reliable=True)
    tx.start(T0)
    assert tx.next_deadline() == T0 + 32  # only B or F
    tx.receive_response(response_to(request_, final), T0 + 1)
    assert tx.terminated  # D or K is zero over TCP


def test_reliable_server_zero_wait() -> None:
    ist = Transaction(Kind.INVITE_SERVER, INVITE, reliable=True)
    ist.start(T0)
    ist.send_response(response_to(INVITE, 486), T0)
    assert ist.next_deadline() == T0 + 32  # H only, no G
    ist.receive_request(build_ack_for_final(INVITE, response_to(INVITE, 486)), T0 + 1)
    assert ist.terminated  # Timer I is zero
    nist = Transaction(Kind.NON_INVITE_SERVER, OPTIONS, reliable=True)
    nist.start(T0)
    nist.send_response(response_to(OPTIONS, 200), T0)
    assert nist.terminated  # Timer J is zero


def test_custom_timer_config() -> None:
    tx = Transaction(Kind.INVITE_CLIENT, INVITE, config=TimerConfig(t1=0.1))
    tx.start(T0)
    fired = run_timers(tx, T0 + 100)
    assert fired[-1][0] == pytest.approx(6.4)


# --------------------------------------------------------------------- tables


@pytest.mark.parametrize("kind", list(Kind))
def test_every_peer_input_has_a_row(kind: Kind) -> None:
    """Only a TU bug may hit InvalidTransactionStep: every message a peer can send
    has a row in every live state the transaction can be in."""
    peer_inputs = (
        [Input.RECV_1XX, Input.RECV_2XX, Input.RECV_FINAL]
        if kind.is_client
        else [Input.RECV_REQUEST] + ([Input.RECV_ACK] if kind is Kind.INVITE_SERVER else [])
    )
    states = {INITIAL_STATE[kind]} | {row[0] for (k, _, _), row in TRANSITIONS.items() if k is kind}
    for state in states - {State.TERMINATED}:
        for event in peer_inputs:
            if event is Input.RECV_ACK and state is State.PROCEEDING:
                continue  # an ACK before any final response matches no transaction
            assert (kind, state, event) in TRANSITIONS, (kind, state, event)


def test_every_timer_in_a_state_has_its_row() -> None:
    for (kind, state), timers in STATE_TIMERS.items():
        for timer in timers:
            assert timer in TIMERS
            assert (kind, state, Input[f"TIMER_{timer.value}"]) in TRANSITIONS


def test_keys_match_per_17_2_3() -> None:
    via = parse_via(INVITE.headers.get("Via") or "")
    invite_key = server_key(INVITE, via)
    ack = build_ack_for_final(INVITE, response_to(INVITE, 486))
    assert server_key(ack, parse_via(ack.headers.get("Via") or "")) == invite_key
    cancel = SipRequest(
        "CANCEL", INVITE.uri, INVITE.headers.replaced("CSeq", "1 CANCEL"), INVITE.body
    )
    cancel_key = server_key(cancel, via)
    assert cancel_key != invite_key and cancel_key[:-1] == invite_key[:-1]
    assert client_key("z9hG4bK1", "INVITE") != client_key("z9hG4bK1", "CANCEL")


def test_rfc2543_key_without_magic_cookie() -> None:
    old = dataclasses.replace(
        INVITE, headers=INVITE.headers.replaced("Via", "SIP/2.0/UDP 10.0.0.1:5060;branch=1")
    )
    via = parse_via(old.headers.get("Via") or "")
    key = server_key(old, via)
    assert key[0] == "2543"
    ack = build_ack_for_final(old, response_to(old, 486))
    assert server_key(ack, parse_via(ack.headers.get("Via") or "")) == key


def test_state_diagram_comes_from_the_table() -> None:
    diagram = state_diagram(Kind.INVITE_SERVER)
    assert diagram.startswith("stateDiagram-v2\n    [*] --> Proceeding\n")
    assert "    Completed --> Confirmed: ACK received\n" in diagram
    assert "    Proceeding --> Accepted: TU sends 2xx / send_response\n" in diagram
    assert "Confirmed --> Confirmed" not in diagram  # absorbing loops left out
