"""The REST control plane against a real server process: auth, envelopes, error codes."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest

from tests.helpers import ServerProcess, cli

ACTIONS = ["answer", "hangup", "reject", "bridge"]


def test_healthz_needs_no_key(server: ServerProcess) -> None:
    r = httpx.get(server.base_url + "/healthz")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"


@pytest.mark.parametrize(
    "path",
    ["/v2/calls", "/v2/call_control_applications", "/metrics", "/v2/openapi.json",
     "/v2/calls/v3:nope"],
)
@pytest.mark.parametrize("auth", [None, "Bearer wrong", "Basic abc", "Bearer"])
def test_every_route_needs_a_key(server: ServerProcess, path: str, auth: str | None) -> None:
    headers = {"Authorization": auth} if auth else {}
    r = httpx.get(server.base_url + path, headers=headers)
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/json"
    assert r.json()["errors"][0]["code"] == "10009"


def test_unknown_route_is_10005(server: ServerProcess) -> None:
    with server.client() as c:
        r = c.get("/v2/nothing-here")
    assert r.status_code == 404
    assert r.json() == {"errors": [{"code": "10005", "title": "Resource not found",
                                    "detail": "Not Found"}]}


@pytest.mark.parametrize("action", ACTIONS)
def test_unknown_call_id_is_90015(server: ServerProcess, action: str) -> None:
    body = {"cause": "USER_BUSY"} if action == "reject" else {}
    if action == "bridge":
        body = {"call_control_id": "v3:other"}
    with server.client() as c:
        r = c.post(f"/v2/calls/v3:unknown/actions/{action}", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["errors"][0]["code"] == "90015"


def test_empty_body_is_an_empty_object(server: ServerProcess) -> None:
    # Node SDK and pipecat send hangup with Content-Type json and no body.
    with server.client() as c:
        r = c.post("/v2/calls/v3:unknown/actions/hangup", content=b"",
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 422
    assert r.json()["errors"][0]["code"] == "90015"


@pytest.mark.parametrize("raw", [b"{not json", b"[1,2]", b'"text"', b"\xff\xfe"])
def test_bad_json_is_400_10015(server: ServerProcess, raw: bytes) -> None:
    with server.client() as c:
        r = c.post("/v2/calls", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["errors"][0]["code"] == "10015"


DIAL = {"connection_id": "default", "to": "sip:bob@127.0.0.1:9", "from": "+15550001111"}


@pytest.mark.parametrize(
    ("change", "code", "pointer"),
    [
        ({"to": None}, "10004", "/to"),
        ({"connection_id": None}, "10004", "/connection_id"),
        ({"from": None}, "10004", "/from"),
        ({"to": "12345"}, "10016", "/to"),
        ({"from": "not a number"}, "10016", "/from"),
        # A final newline used to pass ($ matches before it), as did other scripts' digits.
        ({"from": "+15550001111\n"}, "10016", "/from"),
        ({"from": "+1555\u0663\u0663"}, "10016", "/from"),
        ({"to": "sip:bob@127.0.0.1:9\x1c"}, "10016", "/to"),
        ({"webhook_url": "https://x/\n"}, "10003", "/webhook_url"),
        ({"timeout_secs": "30"}, "10015", "/timeout_secs"),
        ({"timeout_secs": True}, "10015", "/timeout_secs"),
        ({"send_silence_when_idle": 0}, "10015", "/send_silence_when_idle"),
        ({"timeout_secs": 4}, "10033", "/timeout_secs"),
        ({"timeout_secs": 601}, "10033", "/timeout_secs"),
        ({"time_limit_secs": 20}, "10033", "/time_limit_secs"),
        ({"webhook_url": "ftp://x"}, "10003", "/webhook_url"),
        ({"webhook_url": "https://x/" + "a" * 2000}, "10003", "/webhook_url"),
        ({"webhook_url_method": "PUT"}, "10032", "/webhook_url_method"),
        ({"client_state": "not base64!"}, "10015", "/client_state"),
        ({"connection_id": "no-such-app"}, "10015", "/connection_id"),
    ],
)
def test_dial_validation(
    server: ServerProcess, change: dict[str, object], code: str, pointer: str
) -> None:
    body = {k: v for k, v in {**DIAL, **change}.items() if v is not None}
    with server.client() as c:
        r = c.post("/v2/calls", json=body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/json"
    err = r.json()["errors"][0]
    assert (err["code"], err["source"]["pointer"]) == (code, pointer), err
    assert err["title"]


def test_enum_detail_lists_values(server: ServerProcess) -> None:
    with server.client() as c:
        r = c.post("/v2/calls", json={**DIAL, "webhook_url_method": "PUT"})
    assert r.json()["errors"][0]["detail"] == "The value must be one of: POST, GET."


def test_unknown_fields_are_ignored(server: ServerProcess) -> None:
    with server.client() as c:
        r = c.post("/v2/calls/v3:unknown/actions/hangup", json={"whatever": 1, "x": {"y": 2}})
    assert r.json()["errors"][0]["code"] == "90015"


def test_get_unknown_call_is_404(server: ServerProcess) -> None:
    with server.client() as c:
        r = c.get("/v2/calls/v3:unknown")
    assert r.status_code == 404
    assert r.json()["errors"][0]["code"] == "10005"


def test_list_calls_empty(server: ServerProcess) -> None:
    with server.client() as c:
        r = c.get("/v2/calls")
    assert r.status_code == 200
    assert r.json()["data"] == []


def test_openapi_documents_the_routes(server: ServerProcess) -> None:
    with server.client() as c:
        doc = c.get("/v2/openapi.json").json()
    paths = doc["paths"]
    for path in ["/v2/calls", "/v2/calls/{call_control_id}",
                 "/v2/calls/{call_control_id}/actions/hangup",
                 "/v2/call_control_applications", "/v2/call_control_applications/{app_id}"]:
        assert path in paths, path
    dial = paths["/v2/calls"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert dial["$ref"].endswith("/DialRequest")
    assert "timeout_secs" in doc["components"]["schemas"]["DialRequest"]["properties"]


def test_metrics_exposes_http_and_calls(server: ServerProcess) -> None:
    with server.client() as c:
        c.get("/v2/calls")
        text = c.get("/metrics").text
    assert 'callstream_http_requests_total{method="GET",route="/v2/calls",status="200"}' in text
    assert "callstream_active_calls" in text


def test_revoked_key_is_refused_at_once(server: ServerProcess) -> None:
    # The key is in use while `callstream keys revoke` (another process) revokes it: the
    # very next request is 401. A 5 s cache of good keys used to accept ~80 more.
    key = cli("keys", "create", "--label", "temp", data_dir=server.data_dir).strip()
    key_id = next(line.split()[0] for line in
                  cli("keys", "list", data_dir=server.data_dir).splitlines() if "temp" in line)
    with server.client(key) as c:
        assert c.get("/v2/calls").status_code == 200
        revoke = subprocess.Popen(
            [sys.executable, "-m", "callstream", "keys", "revoke", key_id,
             "--data-dir", str(server.data_dir)], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while revoke.poll() is None and time.monotonic() < deadline:
            c.get("/v2/calls")
        assert revoke.wait(10) == 0
        r = c.get("/v2/calls")
        assert r.status_code == 401
        assert r.json()["errors"][0]["code"] == "10009"
    with server.client() as c:  # other keys are unaffected
        assert c.get("/v2/calls").status_code == 200


def test_405_lists_every_method_of_the_path(server: ServerProcess) -> None:
    with server.client() as c:
        r = c.put("/v2/call_control_applications/default")
    assert r.status_code == 405
    assert r.headers["allow"] == "DELETE, GET, PATCH"
    assert r.json()["errors"][0]["code"] == "10015"


def test_openapi_documents_the_error_responses(server: ServerProcess) -> None:
    with server.client() as c:
        doc = c.get("/v2/openapi.json").json()
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            for status in ("400", "401", "404", "413", "422"):
                content = op["responses"][status]["content"]["application/json"]
                assert content["schema"]["$ref"].endswith("ErrorResponse"), (path, method)
