"""SIP header injection through dial: bad custom headers and display names are refused
with 422 10015 naming the field, and what is accepted reaches the callee as one field.

The callee is a test-owned UDP socket on loopback that receives the INVITE.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from callstream.sip.headers import parse_name_addr
from callstream.sip.message import SipRequest, parse_message
from tests.helpers import ServerProcess, running_server

#: Generous: the INVITE leaves as soon as dial answers, but the host may be busy.
RECEIVE_TIMEOUT = 15.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(Path(tmp_path_factory.mktemp("headers")) / "data") as srv:
        yield srv


@pytest.fixture
def callee() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock
    finally:
        sock.close()


def dial_body(callee: socket.socket, **extra: Any) -> dict[str, Any]:
    port = callee.getsockname()[1]
    return {"connection_id": "default", "to": f"sip:bob@127.0.0.1:{port}",
            "from": "+15550001111", "timeout_secs": 5, **extra}


def invites(sock: socket.socket, timeout: float) -> list[SipRequest]:
    """Every INVITE that arrives within ``timeout`` (retransmissions included)."""
    sock.settimeout(timeout)
    out: list[SipRequest] = []
    while True:
        try:
            data = sock.recv(65535)
        except TimeoutError:
            return out
        message = parse_message(data)
        assert isinstance(message, SipRequest)
        if message.method == "INVITE":
            out.append(message)
            sock.settimeout(0.5)


SMUGGLED = "1\r\nP-Asserted-Identity: <sip:boss@127.0.0.1>\r\nRecord-Route: <sip:evil>"
TCP_BYE = "1\r\nContent-Length: 0\r\n\r\nBYE sip:bob@127.0.0.1 SIP/2.0\r\nVia: x"


#: (dial fields, the pointer of the 422 that refuses them).
REFUSED: list[tuple[dict[str, Any], str]] = [
    ({"custom_headers": [{"name": "X-Trace", "value": SMUGGLED}]}, "/custom_headers/0/value"),
    ({"custom_headers": [{"name": "X-Ok", "value": "1"},
                         {"name": "X-Trace", "value": TCP_BYE}]}, "/custom_headers/1/value"),
    ({"custom_headers": [{"name": "X-Nul", "value": "a\x00b"}]}, "/custom_headers/0/value"),
    ({"custom_headers": [{"name": "Content-Length", "value": "5"}]},
     "/custom_headers/0/name"),
    ({"custom_headers": [{"name": "l", "value": "5"}]}, "/custom_headers/0/name"),
    ({"custom_headers": [{"name": "via", "value": "SIP/2.0/UDP 10.0.0.1"}]},
     "/custom_headers/0/name"),
    ({"custom_headers": [{"name": "Call-ID", "value": "x"}]}, "/custom_headers/0/name"),
    ({"custom_headers": [{"name": "X-A: b\r\nRoute", "value": "<sip:evil>"}]},
     "/custom_headers/0/name"),
    ({"custom_headers": [{"name": "X A", "value": "1"}]}, "/custom_headers/0/name"),
    ({"from_display_name": "Ann\r\nP-Asserted-Identity: <sip:boss@x>"},
     "/from_display_name"),
]


def test_injection_is_refused(server: ServerProcess, callee: socket.socket,
                              subtests: pytest.Subtests) -> None:
    """Each dial is refused; none reached the wire (one wait for all: the last dial's
    INVITE, had there been one, would have had as long as each had alone)."""
    with server.client() as client:
        for extra, pointer in REFUSED:
            with subtests.test(pointer=pointer, extra=extra):
                reply = client.post("/v2/calls", json=dial_body(callee, **extra))
                assert reply.status_code == 422, reply.text
                [error] = reply.json()["errors"]
                assert error["code"] == "10015"
                assert error["source"] == {"pointer": pointer}
    assert invites(callee, 1.0) == []  # nothing reached the wire


def test_hangup_headers_are_checked_too(server: ServerProcess) -> None:
    with server.client() as client:
        reply = client.post("/v2/calls/v3:nope/actions/hangup", json={
            "custom_headers": [{"name": "X-Why", "value": "bye\r\nBYE sip:x SIP/2.0"}]})
    assert reply.status_code == 422, reply.text
    assert reply.json()["errors"][0]["source"] == {"pointer": "/custom_headers/0/value"}


def test_valid_headers_reach_the_callee_once(server: ServerProcess, callee: socket.socket) -> None:
    display = 'Ann "the boss" \\ Smith'
    with server.client() as client:
        reply = client.post("/v2/calls", json=dial_body(
            callee, from_display_name=display,
            custom_headers=[{"name": "X-Trace", "value": "abc;def=1"},
                            {"name": "P-Asserted-Identity", "value": "<sip:+15550001111@h>"}]))
    assert reply.status_code == 200, reply.text
    received = invites(callee, RECEIVE_TIMEOUT)
    assert received, "no INVITE reached the callee"
    invite = received[0]
    assert invite.headers.get_all("X-Trace") == ["abc;def=1"]
    assert invite.headers.get_all("P-Asserted-Identity") == ["<sip:+15550001111@h>"]
    for name in ("Via", "Call-ID", "CSeq", "Content-Length", "From", "To", "Contact"):
        assert len(invite.headers.get_all(name)) == 1, name
    # The display name went out as one RFC 3261 quoted-string and reads back intact.
    assert parse_name_addr(invite.headers.get("From") or "").display_name == display
