"""The outbound policy on a real `callstream serve`: URLs that lead to internal
addresses are refused with 422 naming the field, and a connection the policy forbids is
never opened (issue #11, item 8: SSRF)."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import ServerProcess, free_udp_tcp_port, running_server

METADATA = "169.254.169.254 is denied by CALLSTREAM_OUTBOUND_DENY (169.254.0.0/16)"


def refusal(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 422, r.text
    errors: list[dict[str, Any]] = r.json()["errors"]
    assert len(errors) == 1
    return errors[0]


def refused(detail: str, pointer: str) -> dict[str, Any]:
    return {"code": "10015", "title": "Destination not allowed",
            "detail": f"Refused destination: {detail}.", "source": {"pointer": pointer}}


@pytest.mark.parametrize(("url", "detail"), [
    ("http://169.254.169.254/latest/meta-data/iam/security-credentials/", METADATA),
    ("https://[::ffff:169.254.169.254]/", "::ffff:169.254.169.254 is denied by "
     "CALLSTREAM_OUTBOUND_DENY (169.254.0.0/16)"),
    # One number the resolver reads as 169.254.169.254: judged by what it resolves to.
    ("http://2852039166/", "2852039166 resolves to 169.254.169.254, which is denied by "
     "CALLSTREAM_OUTBOUND_DENY (169.254.0.0/16)"),
    ("http://user@169.254.170.2/v2/credentials", "169.254.170.2 is denied by "
     "CALLSTREAM_OUTBOUND_DENY (169.254.0.0/16)"),
    ("http://100.100.100.200/latest/meta-data/", "100.100.100.200 is denied by "
     "CALLSTREAM_OUTBOUND_DENY (100.100.100.200/32)"),
    ("http://[fe80::1]:8080/", "fe80::1 is denied by CALLSTREAM_OUTBOUND_DENY (fe80::/10)"),
    ("http://0.0.0.0:8080/", "0.0.0.0 is an unspecified address (this host)"),
])
def test_application_urls_to_internal_addresses_are_refused(
        server: ServerProcess, url: str, detail: str) -> None:
    with server.client() as c:
        r = c.post("/v2/call_control_applications",
                   json={"application_name": "ssrf", "webhook_event_url": url})
        assert refusal(r) == refused(detail, "/webhook_event_url")
        r = c.post("/v2/call_control_applications", json={
            "application_name": "ssrf", "webhook_event_url": "http://127.0.0.1:9/hook",
            "webhook_event_failover_url": url})
        assert refusal(r) == refused(detail, "/webhook_event_failover_url")
        names = [a["application_name"] for a in c.get("/v2/call_control_applications").json()[
            "data"]]
        assert "ssrf" not in names


def test_patch_dial_answer_stream_and_texml_urls_are_checked(server: ServerProcess) -> None:
    with server.client() as c:
        # Loopback is allowed by default (a developer's receiver on the same machine), and a
        # name that does not resolve now is accepted: it is checked again at connect time.
        r = c.post("/v2/call_control_applications", json={
            "application_name": "local", "webhook_event_url": "http://127.0.0.1:9/hook",
            "webhook_event_failover_url": "http://no-such-host.invalid/hook"})
        assert r.status_code == 201, r.text
        app_id = r.json()["data"]["id"]
        r = c.patch(f"/v2/call_control_applications/{app_id}",
                    json={"webhook_event_url": "http://169.254.169.254/"})
        assert refusal(r) == refused(METADATA, "/webhook_event_url")
        app = c.get(f"/v2/call_control_applications/{app_id}").json()["data"]
        assert app["webhook_event_url"] == "http://127.0.0.1:9/hook"
        r = c.patch(f"/v2/call_control_applications/{app_id}",
                    json={"webhook_event_failover_url": "http://127.0.0.1:99999/"})
        assert refusal(r) == {"code": "10003", "title": "Invalid URL",
                              "detail": "The URL must be a valid http/https URL.",
                              "source": {"pointer": "/webhook_event_failover_url"}}

        dial = {"connection_id": "default", "to": "sip:bob@127.0.0.1:9", "from": "+15550001111"}
        r = c.post("/v2/calls", json={**dial, "webhook_url": "http://169.254.169.254/"})
        assert refusal(r) == refused(METADATA, "/webhook_url")
        r = c.post("/v2/calls", json={**dial, "stream_url": "wss://169.254.169.254/agent"})
        assert refusal(r) == refused(METADATA, "/stream_url")
        assert c.get("/v2/calls").json()["meta"]["total_results"] == 0  # nothing was dialled

        # Checked before the call is looked up: the URL is wrong whatever the call.
        for action in ("answer", "streaming_start"):
            r = c.post(f"/v2/calls/v3:nope/actions/{action}",
                       json={"stream_url": "ws://169.254.169.254/"})
            assert refusal(r) == refused(METADATA, "/stream_url")
        r = c.post("/v2/calls/v3:nope/actions/answer",
                   json={"webhook_url": "http://169.254.169.254/"})
        assert refusal(r) == refused(METADATA, "/webhook_url")

        texml = "/v2/texml/Accounts/acct/Calls/v3:nope/Streams.json"
        r = c.post(texml, json={"Url": "ws://169.254.169.254/"})
        assert refusal(r) == refused(METADATA, "/Url")
        r = c.post(texml, data={"Url": "ws://127.0.0.1:9/",
                                "StatusCallback": "http://169.254.169.254/cb"})
        assert refusal(r) == refused(METADATA, "/StatusCallback")


class TcpListener:
    """A loopback TCP server that counts the connections it accepts (in a thread)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port: int = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@contextmanager
def tcp_listener() -> Iterator[TcpListener]:
    listener = TcpListener()
    try:
        yield listener
    finally:
        listener.close()


def _metric(text: str, stage: str) -> float:
    match = re.search(rf'^callstream_outbound_denied_total{{stage="{stage}"}} (\S+)$', text,
                      re.MULTILINE)
    return float(match[1]) if match else 0.0


def test_a_deny_list_refuses_names_and_connections(tmp_path: Path) -> None:
    """With loopback denied (CALLSTREAM_OUTBOUND_DENY), ``localhost`` is refused when an
    application names it, and the default application's webhook URL — from settings, so
    never checked by a request — is refused when the delivery connects: the receiver
    never sees a connection, and the delivery log says why."""
    with tcp_listener() as receiver, running_server(tmp_path, env={
        "CALLSTREAM_OUTBOUND_DENY": '["127.0.0.0/8", "::1/128", "169.254.0.0/16"]',
        "CALLSTREAM_WEBHOOK_URL": f"http://127.0.0.1:{receiver.port}/hook",
    }) as server, server.client() as c:
        r = c.post("/v2/call_control_applications", json={
            "application_name": "local", "webhook_event_url": f"http://localhost:{receiver.port}/"})
        err = refusal(r)
        assert err["source"] == {"pointer": "/webhook_event_url"}
        assert re.fullmatch(
            r"Refused destination: localhost resolves to (127\.0\.0\.1|::1), which is denied "
            r"by CALLSTREAM_OUTBOUND_DENY \((127\.0\.0\.0/8|::1/128)\)\.", err["detail"])

        # A call to nowhere: its call.initiated webhook goes to the default application.
        r = c.post("/v2/calls", json={"connection_id": "default", "from": "+15550001111",
                                      "to": f"sip:bob@127.0.0.1:{free_udp_tcp_port()}"})
        assert r.status_code == 200, r.text
        ccid = r.json()["data"]["call_control_id"]
        deadline = time.monotonic() + 30
        while True:
            deliveries = c.get("/v2/webhook_deliveries").json()["data"]
            initiated = [d for d in deliveries if d["webhook"]["event_type"]
                         == "call.initiated" and d["call_control_id"] == ccid]
            if initiated and initiated[0]["attempts"]:
                break
            assert time.monotonic() < deadline, deliveries
            time.sleep(0.2)
        attempt = initiated[0]["attempts"][-1]
        assert attempt["errors"] == [75002]
        assert attempt["error_detail"] == (
            f"cannot connect to http://127.0.0.1:{receiver.port}: refused by the outbound "
            "policy: 127.0.0.1 is denied by CALLSTREAM_OUTBOUND_DENY (127.0.0.0/8)")
        assert receiver.accepted == 0
        metrics = c.get("/metrics").text
        assert _metric(metrics, "request") >= 1
        assert _metric(metrics, "connect") >= 1
