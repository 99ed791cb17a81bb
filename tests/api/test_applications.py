"""Call Control Applications CRUD and the built-in `default` application."""

from __future__ import annotations

import pytest

from tests.helpers import ServerProcess


def test_default_application_exists(server: ServerProcess) -> None:
    with server.client() as c:
        r = c.get("/v2/call_control_applications/default")
    assert r.status_code == 200
    assert r.json()["data"]["id"] == "default"
    assert r.json()["data"]["record_type"] == "call_control_application"


def test_crud(server: ServerProcess) -> None:
    with server.client() as c:
        r = c.post("/v2/call_control_applications", json={
            "application_name": "billing", "webhook_event_url": "https://example.com/hook",
            "webhook_timeout_secs": 5, "tags": ["a"]})
        assert r.status_code == 201, r.text
        app = r.json()["data"]
        assert app["webhook_event_url"] == "https://example.com/hook"
        assert app["tags"] == ["a"]
        app_id = app["id"]

        r = c.patch(f"/v2/call_control_applications/{app_id}",
                    json={"webhook_event_failover_url": "https://backup.example.com/h"})
        assert r.status_code == 200
        assert r.json()["data"]["webhook_event_failover_url"] == "https://backup.example.com/h"
        assert r.json()["data"]["application_name"] == "billing"

        listed = c.get("/v2/call_control_applications").json()
        assert app_id in [a["id"] for a in listed["data"]]
        assert listed["meta"]["total_results"] >= 2

        assert c.delete(f"/v2/call_control_applications/{app_id}").status_code == 200
        r = c.get(f"/v2/call_control_applications/{app_id}")
        assert r.status_code == 404
        assert r.json()["errors"][0]["code"] == "10005"


def test_create_validation(server: ServerProcess) -> None:
    with server.client() as c:
        r = c.post("/v2/call_control_applications", json={"application_name": "x"})
        assert r.status_code == 422
        err = r.json()["errors"][0]
        assert (err["code"], err["source"]["pointer"]) == ("10004", "/webhook_event_url")
        r = c.post("/v2/call_control_applications", json={
            "application_name": "x", "webhook_event_url": "nope"})
        assert r.json()["errors"][0]["code"] == "10003"
        r = c.post("/v2/call_control_applications", json={
            "application_name": "x", "webhook_event_url": "https://a.b",
            "webhook_timeout_secs": 99})
        assert r.json()["errors"][0]["code"] == "10033"


@pytest.mark.parametrize("name", ["page[number]", "page[size]"])
@pytest.mark.parametrize("value", ["16714921830744079203244703744", "0", "-1"])
def test_out_of_range_page_is_422(server: ServerProcess, name: str, value: str) -> None:
    # A page number past 64 bits used to be a 500 (orjson cannot write it back in meta).
    with server.client() as c:
        r = c.get("/v2/call_control_applications", params={name: value})
    assert r.status_code == 422, r.text
    err = r.json()["errors"][0]
    assert (err["code"], err["source"]) == ("10033", {"parameter": name})


NOT_NULL = ["application_name", "webhook_event_url", "active", "webhook_api_version",
            "dtmf_type", "first_command_timeout", "first_command_timeout_secs", "tags"]


@pytest.mark.parametrize("field", NOT_NULL)
def test_patch_null_is_422_and_changes_nothing(server: ServerProcess, field: str) -> None:
    # null for a NOT NULL column was a 500; null for the others was stored and later
    # answers broke the OpenAPI schema.
    with server.client() as c:
        app = c.post("/v2/call_control_applications", json={
            "application_name": "nulls", "webhook_event_url": "https://example.com/h"}).json()
        app_id = app["data"]["id"]
        r = c.patch(f"/v2/call_control_applications/{app_id}", json={field: None})
        assert r.status_code == 422, r.text
        err = r.json()["errors"][0]
        assert err["code"] == "10015"
        assert err["source"] == {"pointer": f"/{field}"}
        assert err["detail"] == f"The '{field}' parameter cannot be null."
        assert c.get(f"/v2/call_control_applications/{app_id}").json() == app


def test_patch_null_clears_nullable_fields(server: ServerProcess) -> None:
    with server.client() as c:
        app_id = c.post("/v2/call_control_applications", json={
            "application_name": "clear", "webhook_event_url": "https://example.com/h",
            "webhook_event_failover_url": "https://example.com/f",
            "webhook_timeout_secs": 5}).json()["data"]["id"]
        r = c.patch(f"/v2/call_control_applications/{app_id}", json={
            "webhook_event_failover_url": None, "webhook_timeout_secs": None})
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        assert (data["webhook_event_failover_url"], data["webhook_timeout_secs"]) == (None, None)
        schema = c.get("/v2/openapi.json").json()["components"]["schemas"]
        out = schema["ApplicationOut"]["properties"]
        for field in ("webhook_event_failover_url", "webhook_timeout_secs"):
            assert {"type": "null"} in out[field]["anyOf"], field
