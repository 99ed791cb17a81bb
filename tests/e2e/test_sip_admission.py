"""SIP admission against a real ``callstream serve`` (issue #11, items 6 and 7): who may
park calls, how many, for how long, and what a refused source gets back."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.e2e.calling import answer, events_for, incoming
from tests.e2e.conftest import Rig, make_rig
from tests.e2e.sipp import uac
from tests.helpers import (
    ServerProcess,
    entered_together,
    free_udp_tcp_port,
    raw_invite,
    running_server,
)

pytestmark = pytest.mark.slow

HOST = "127.0.0.1"
FLOOD = 200
#: How long a refused source's socket is watched: a stateful answer's Timer G would have
#: resent it at 0.5 and 1.5 s.
REFLECTION_WATCH_SECS = 2.0




def _collect(sock: socket.socket, seconds: float) -> list[bytes]:
    """Every datagram that arrives within ``seconds``."""
    got: list[bytes] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            got.append(sock.recv(65535))
        except TimeoutError:
            break
    return got


def _status(data: bytes) -> int:
    return int(data.split(b" ", 2)[1])


def _socket(host: str = HOST) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    return sock


#: The shortest park timeout the setting allows (seconds).
PARK_TIMEOUT = 1


@dataclass
class Servers:
    """The module's servers, one per configuration, all started at once."""

    forbidding: dict[str, ServerProcess]  # allow only 127.0.0.2, by forbidden action
    flood: Rig  # default admission settings
    park: Rig  # CALLSTREAM_SIP_PARK_TIMEOUT_SECS=PARK_TIMEOUT
    auth: Rig  # digest authentication


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    actions = ["reject", "drop"]
    forbidding = [running_server(tmp_path_factory.mktemp(f"forbidden-{action}"), {
        "CALLSTREAM_SIP_ALLOWED_NETWORKS": '["127.0.0.2/32"]',
        "CALLSTREAM_SIP_FORBIDDEN_ACTION": action}) for action in actions]
    with entered_together(
        *forbidding,
        # 400 RTP ports, room for 200 parked calls.
        make_rig(tmp_path_factory.mktemp("admission"), (37000, 37399)),
        make_rig(tmp_path_factory.mktemp("park"), (37400, 37419),
                 {"CALLSTREAM_SIP_PARK_TIMEOUT_SECS": str(PARK_TIMEOUT)}),
        make_rig(tmp_path_factory.mktemp("auth"), (37420, 37459),
                 {"CALLSTREAM_SIP_AUTH_USERNAME": "alice",
                  "CALLSTREAM_SIP_AUTH_PASSWORD": "s3cret"}),
    ) as started:
        yield Servers(dict(zip(actions, started, strict=False)), *started[len(actions):])


# -------------------------------------------------------------- item 7: reflection


@pytest.mark.parametrize(("action", "expected"), [("reject", [403]), ("drop", [])])
def test_forbidden_source_gets_one_stateless_answer_or_none(
    servers: Servers, action: str, expected: list[int]
) -> None:
    """Before: a stateful 403, resent by Timer G (0.5, 1, 2, 4 ... s) until Timer H."""
    server = servers.forbidding[action]
    with _socket() as sock:
        target = (HOST, server.sip_port)
        invite = raw_invite(sock, target, "reflect")
        sock.sendto(invite, target)
        got = _collect(sock, REFLECTION_WATCH_SECS)
        assert [_status(d) for d in got] == expected
        sent = sum(map(len, got))
        assert "refused: not in sip_allowed_networks" in server.log()
    print(f"\n[measured] forbidden_action={action}: {len(invite)} bytes in, {sent} bytes "
          f"out in {REFLECTION_WATCH_SECS:g} s ({sent / len(invite):.2f}x)")


# ------------------------------------------------------------ item 6: parking calls


def test_invite_flood_parks_a_bounded_number_and_others_get_through(servers: Servers) -> None:
    """Before: 200 INVITEs from one source parked every call the RTP ports allowed,
    each with a call.initiated, and held them for 300 s."""
    rig = servers.flood
    target = (HOST, rig.server.sip_port)
    with _socket() as sock:
        for _ in range(FLOOD):
            sock.sendto(raw_invite(sock, target, "flood"), target)
        # Every answer, and Timer G's first resends (0.5 and 1.5 s) had any been stateful.
        got = _collect(sock, 3.0)
    statuses = [_status(d) for d in got]
    parked = statuses.count(100)
    # Defaults: burst 20 then 5/s; at most 10 unanswered calls per source.
    assert 1 <= parked <= 10, statuses
    refused = statuses.count(486) + statuses.count(503)
    # One answer per INVITE, never resent (loopback may lose a few of a burst this size).
    assert refused <= FLOOD - parked and refused >= FLOOD // 2, sorted(set(statuses))
    assert set(statuses) <= {100, 180, 486, 503} and statuses.count(180) == parked

    def flood_calls() -> int:
        return sum(d.payload["to"] == "flood" for d in rig.hooks.events("call.initiated"))

    # Let the parked calls' webhooks arrive (as a rule they all have by now).
    deadline = time.monotonic() + 20.0
    while flood_calls() < parked and time.monotonic() < deadline:
        time.sleep(0.05)
    assert flood_calls() == parked
    # Another source is not held back by the first one's flood.
    with _socket("127.0.0.2") as other:
        other.sendto(raw_invite(other, target, "legit"), target)
        other.settimeout(2.0)
        assert _status(other.recv(65535)) == 100  # its first answer
    incoming(rig, "legit")
    with rig.server.client() as http:
        metrics = http.get("/metrics").text
    assert 'callstream_sip_refused_total{reason="parked_limit"}' in metrics
    print(f"\n[measured] {FLOOD} INVITEs from one source: {parked} parked, "
          f"{statuses.count(486)} x 486, {statuses.count(503)} x 503")


def test_park_timeout_ends_the_call_once(servers: Servers) -> None:
    """Before: a parked call lasted 300 s (the SIP endpoint's setup timeout)."""
    rig = servers.park
    with _socket() as sock:
        target = (HOST, rig.server.sip_port)
        sock.sendto(raw_invite(sock, target, "nobody-answers"), target)
        started = time.monotonic()
        ccid = incoming(rig, "nobody-answers")
        got: list[int] = []
        while 480 not in got and time.monotonic() - started < 15.0:
            got += [_status(d) for d in _collect(sock, 0.2)]
        waited = time.monotonic() - started
        assert 480 in got, got
        hangup = rig.hooks.wait_event("call.hangup", ccid)
        assert hangup.payload["hangup_cause"] == "timeout"
        assert hangup.payload["hangup_source"] == "callee"
        assert hangup.payload["sip_hangup_cause"] == "480"
        time.sleep(1.0)
        assert len(events_for(rig, "call.hangup", ccid)) == 1
        assert not events_for(rig, "call.answered", ccid)
    print(f"\n[measured] park timeout {PARK_TIMEOUT} s: 480 {waited:.1f} s after the INVITE")


def test_digest_challenge_then_the_call_is_answered(servers: Servers) -> None:
    rig = servers.auth
    proc = uac(rig.sip_target, "uac_auth.xml", cwd=rig.workdir,
               local_port=free_udp_tcp_port(), media_port=free_udp_tcp_port(),
               hold_ms=500, service="authed", extra=("-au", "alice", "-ap", "s3cret"))
    try:
        ccid = incoming(rig, "authed")
        answer(rig, ccid)
        assert proc.wait(30) == 0  # 401, ACK, INVITE with Authorization, 200, ACK, BYE, 200
    finally:
        if proc.poll() is None:
            proc.kill()
    hangup = rig.hooks.wait_event("call.hangup", ccid)
    assert hangup.payload["hangup_cause"] == "normal_clearing"


def test_wrong_password_never_parks_a_call(servers: Servers) -> None:
    rig = servers.auth
    proc = uac(rig.sip_target, "uac_auth.xml", cwd=rig.workdir,
               local_port=free_udp_tcp_port(), media_port=free_udp_tcp_port(),
               hold_ms=500, service="intruder", extra=("-au", "alice", "-ap", "guess"))
    try:
        # The retried INVITE gets a second 401 where the scenario expects 200.
        deadline = time.monotonic() + 20
        while "refused: wrong digest credentials" not in rig.server.log():
            assert time.monotonic() < deadline, "the wrong password was not refused"
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        proc.kill()
        proc.wait()
    assert not [d for d in rig.hooks.events("call.initiated") if d.payload["to"] == "intruder"]
    # Without credentials at all: a 401 challenge, statelessly, and no call either.
    with _socket() as sock:
        target = (HOST, rig.server.sip_port)
        sock.sendto(raw_invite(sock, target, "anonymous"), target)
        got = _collect(sock, 2.0)
    assert [_status(d) for d in got] == [401]
    assert b'WWW-Authenticate: Digest realm="callstream"' in got[0]
