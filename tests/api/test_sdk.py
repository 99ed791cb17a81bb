"""The official `telnyx` SDK pointed at callstream gets typed answers and typed errors."""

from __future__ import annotations

import pytest
from telnyx import NotFoundError, Telnyx, UnprocessableEntityError

from tests.helpers import ServerProcess


@pytest.fixture
def client(server: ServerProcess) -> Telnyx:
    return Telnyx(api_key=server.api_key, base_url=server.api_url, max_retries=0)


def test_unknown_call_status_is_not_found(client: Telnyx) -> None:
    with pytest.raises(NotFoundError) as info:
        client.calls.retrieve_status("v3:missing")
    assert info.value.status_code == 404
    assert info.value.body["errors"][0]["code"] == "10005"  # type: ignore[index]


def test_action_on_unknown_call_is_unprocessable(client: Telnyx) -> None:
    with pytest.raises(UnprocessableEntityError) as info:
        client.calls.actions.hangup("v3:missing")
    assert info.value.body["errors"][0]["code"] == "90015"  # type: ignore[index]


def test_dial_validation_error_has_telnyx_body(client: Telnyx) -> None:
    with pytest.raises(UnprocessableEntityError) as info:
        client.calls.dial(connection_id="nope", to="sip:a@127.0.0.1:9", from_="+15550001111")
    err = info.value.body["errors"][0]  # type: ignore[index]
    assert err["code"] == "10015"
    assert err["source"]["pointer"] == "/connection_id"


def test_applications_through_sdk(client: Telnyx) -> None:
    app = client.call_control_applications.create(
        application_name="sdk", webhook_event_url="https://example.com/h"
    )
    assert app.data is not None
    assert app.data.application_name == "sdk"
    got = client.call_control_applications.retrieve(str(app.data.id))
    assert got.data is not None and got.data.webhook_event_url == "https://example.com/h"
