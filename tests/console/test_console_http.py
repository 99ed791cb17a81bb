"""The console's HTTP side against a real `callstream serve`: what is public, what needs a
session, the cookie's flags, CSRF and Origin checks, the one-time link, revocation."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import ServerProcess, cli, running_server

LINK = re.compile(r"console: (http://127\.0\.0\.1:\d+/console\?token=[\w-]+)")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("console-http")) as server:
        yield server


def login_link(server: ServerProcess) -> str:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = LINK.search(server.log())
        if found:
            return found.group(1)
        time.sleep(0.1)
    raise AssertionError(f"no console link in the log:\n{server.log()}")


def sign_in(server: ServerProcess, key: str | None = None) -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=server.base_url, timeout=10)
    response = client.post("/console/login", json={"api_key": key or server.api_key})
    assert response.status_code == 200, response.text
    return client, response.json()["csrf"]


def read_feed(client: httpx.Client, wanted: int = 2) -> list[str]:
    """The first ``wanted`` event names of the feed."""
    names: list[str] = []
    with client.stream("GET", "/console/feed") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("event: "):
                names.append(line[7:])
                if len(names) == wanted:
                    break
    return names


def test_the_page_and_its_files_are_public_and_locked_down(server: ServerProcess) -> None:
    root = httpx.get(server.base_url + "/", timeout=10)
    assert root.status_code == 303 and root.headers["location"] == "/console"
    page = httpx.get(server.base_url + "/console", timeout=10)
    assert page.status_code == 200 and "<title>callstream console</title>" in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["cache-control"] == "no-store"
    for name, kind in (("console.js", "text/javascript"), ("console.css", "text/css")):
        asset = httpx.get(f"{server.base_url}/console/static/{name}", timeout=10)
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind)
    for name in ("index.html", "..%2Fsessions.py", "nope.js"):
        missing = httpx.get(f"{server.base_url}/console/static/{name}", timeout=10)
        assert missing.status_code == 404, name
    assert "console" not in httpx.get(server.api_url + "/openapi.json", timeout=10).text


def test_the_feed_and_the_api_need_a_session(server: ServerProcess) -> None:
    for path in ("/console/feed", "/console/session", "/v2/calls"):
        response = httpx.get(server.base_url + path, timeout=10)
        assert response.status_code == 401, path
        assert response.json()["errors"][0]["code"] == "10009"
    forged = httpx.get(server.base_url + "/console/feed", timeout=10,
                       cookies={"callstream_console": "forged"})
    assert forged.status_code == 401


def test_sign_in_with_a_key_sets_a_strict_http_only_cookie(server: ServerProcess) -> None:
    response = httpx.post(server.base_url + "/console/login", timeout=10,
                          json={"api_key": server.api_key})
    assert response.status_code == 200
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("callstream_console=")
    flags = {part.strip().lower() for part in cookie.split(";")}
    assert {"httponly", "samesite=strict", "path=/", "max-age=28800"} <= flags
    client, csrf = sign_in(server)
    with contextlib.closing(client):
        assert client.get("/console/session").json()["csrf"] == csrf
        assert client.get("/v2/calls").status_code == 200
        assert set(read_feed(client)) == {"calls", "deliveries"}
        metrics = client.get("/metrics").text
    assert 'callstream_console_logins_total{method="key",outcome="ok"}' in metrics
    assert "callstream_console_feeds" in metrics
    assert "callstream_console_feed_dropped_total" in metrics


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"api_key": "KEYwrong"}, 401, "10009"),
    ({"api_key": ""}, 422, "10015"),
    ({"api_key": 5}, 422, "10015"),
    ({"api_key": "K" * 300}, 422, "10015"),
    ({}, 422, "10015"),
    ([], 422, "10015"),
])
def test_a_bad_sign_in_gets_a_precise_error(server: ServerProcess, body: object, status: int,
                                            code: str) -> None:
    response = httpx.post(server.base_url + "/console/login", json=body, timeout=10)
    assert response.status_code == status
    assert response.json()["errors"][0]["code"] == code
    assert "set-cookie" not in response.headers


def test_a_cross_origin_sign_in_is_refused(server: ServerProcess) -> None:
    response = httpx.post(server.base_url + "/console/login", json={"api_key": server.api_key},
                          headers={"origin": "http://evil.example"}, timeout=10)
    assert response.status_code == 403 and "set-cookie" not in response.headers


def test_state_changes_with_the_cookie_need_the_csrf_header_and_our_origin(
        server: ServerProcess) -> None:
    client, csrf = sign_in(server)
    path = "/v2/webhook_deliveries/no-such-event/redeliver"
    with contextlib.closing(client):
        bare = client.post(path)
        assert bare.status_code == 403 and bare.json()["errors"][0]["code"] == "10010"
        assert client.post(path, headers={"x-callstream-csrf": "wrong"}).status_code == 403
        foreign = client.post(path, headers={"x-callstream-csrf": csrf,
                                             "origin": "http://evil.example"})
        assert foreign.status_code == 403
        # Another port of the same host is the same site (the cookie goes along), but not
        # the same origin: refused, even to read the feed.
        neighbour = f"http://127.0.0.1:{server.http_port + 1}"
        assert client.get("/console/feed", headers={"origin": neighbour}).status_code == 403
        assert client.get("/v2/calls", headers={"origin": neighbour}).status_code == 403
        ours = client.post(path, headers={"x-callstream-csrf": csrf, "origin": server.base_url})
        assert ours.status_code == 404, "through the checks, to the route"
        assert client.post("/console/logout", headers={"x-callstream-csrf": csrf}
                           ).status_code == 204
        assert client.get("/console/feed").status_code == 401, "signed out"


def test_the_one_time_link_works_once(server: ServerProcess) -> None:
    link = login_link(server)
    with httpx.Client(timeout=10) as first:
        response = first.get(link)
        assert response.status_code == 303 and response.headers["location"] == "/console"
        assert "HttpOnly" in response.headers["set-cookie"]
        assert first.get(server.base_url + "/console/session").status_code == 200
    with httpx.Client(timeout=10) as second:
        again = second.get(link)
        assert again.status_code == 303
        assert again.headers["location"] == "/console#link-expired"
        assert "set-cookie" not in again.headers
        assert second.get(server.base_url + "/console/session").status_code == 401


def test_revoking_the_key_ends_its_sessions(server: ServerProcess) -> None:
    key = cli("keys", "create", "--label", "console", data_dir=server.data_dir).strip()
    key_id = next(line.split()[0] for line in
                  cli("keys", "list", data_dir=server.data_dir).splitlines() if "console" in line)
    client, _csrf = sign_in(server, key)
    with contextlib.closing(client):
        assert client.get("/console/session").status_code == 200
        cli("keys", "revoke", key_id, data_dir=server.data_dir)
        assert client.get("/console/session").status_code == 401
        assert client.get("/console/feed").status_code == 401


def test_the_console_can_be_turned_off(tmp_path: Path) -> None:
    with running_server(tmp_path / "off", env={"CALLSTREAM_CONSOLE_ENABLED": "false"}) as off:
        assert httpx.get(off.base_url + "/", timeout=10).status_code == 401
        assert httpx.get(off.base_url + "/console", timeout=10).status_code == 401
        assert httpx.post(off.base_url + "/console/login", timeout=10,
                          json={"api_key": off.api_key}).status_code == 401
        assert "console:" not in off.log()


def test_an_open_feed_does_not_hold_up_shutdown(tmp_path: Path) -> None:
    with running_server(tmp_path / "stop") as server:
        client, _csrf = sign_in(server)
        with contextlib.closing(client), client.stream("GET", "/console/feed") as feed:
            lines = feed.iter_lines()
            assert next(line for line in lines if line.startswith("event: "))
            started = time.monotonic()
            assert server.stop() == 0
            assert time.monotonic() - started < 15
            assert "Waiting for connections to close" not in server.log()
