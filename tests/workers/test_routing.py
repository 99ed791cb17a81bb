from __future__ import annotations

import pytest

from callstream.workers.routing import call_of_path


@pytest.mark.parametrize(("url", "call_id"), [
    (b"/v2/calls/v3:abc", "v3:abc"),
    (b"/v2/calls/v3:abc/actions/hangup", "v3:abc"),
    (b"/v2/calls/v3%3Aabc/actions/answer?x=1", "v3:abc"),
    (b"/v2/calls", None),
    (b"/v2/calls/", None),
    (b"/v2/calls?page=2", None),
    (b"/v2/call_control_applications/1", None),
    (b"/healthz", None),
    (b"/v2/texml/Accounts/acct-1/Calls/v3:abc/Streams.json", "v3:abc"),
    (b"/v2/texml/Accounts/acct-1/Calls/v3:abc/Streams/s1.json?x", "v3:abc"),
    (b"/v2/texml/Accounts/acct-1/Calls", None),
    (b"/v2/texml/Accounts/acct-1/Queues/q/Calls/x", None),
    (b"/internal/calls/v3%3Aabc/bridge", "v3:abc"),
    (b"/internal/calls/", None),
    (b"/internal/other/v3:abc", None),
])
def test_a_calls_own_resources_name_it(url: bytes, call_id: str | None) -> None:
    assert call_of_path(url) == call_id
