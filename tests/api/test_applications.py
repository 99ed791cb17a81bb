"""Call Control Applications CRUD and the built-in `default` application."""

from __future__ import annotations

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
