from __future__ import annotations

import pytest

from callstream.workers.routing import call_of_path, webrtc_key


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


@pytest.mark.parametrize(("url", "authorization", "key"), [
    (b"/v2/webrtc/sessions/abc-_1", None, "abc-_1"),
    (b"/v2/webrtc/sessions/abc?x=1", b"Bearer wrt_zz", "abc"),
    (b"/v2/webrtc/sessions/", None, None),
    (b"/v2/webrtc/sessions", b"Bearer wrt_tok-_9", "tok-_9"),
    (b"/v2/webrtc/sessions?from=a", b"bearer  wrt_tok ", "tok"),
    (b"/v2/webrtc/sessions", b"Bearer KEY0123", None),  # an API key: any worker
    (b"/v2/webrtc/sessions", b"Bearer wrt_", None),
    (b"/v2/webrtc/sessions", b"Basic wrt_tok", None),
    (b"/v2/webrtc/sessions", None, None),
    (b"/v2/webrtc/tokens", b"Bearer wrt_tok", None),
    (b"/v2/calls/v3:abc", b"Bearer wrt_tok", None),
])
def test_a_browser_calls_requests_name_its_worker(url: bytes, authorization: bytes | None,
                                                 key: str | None) -> None:
    assert webrtc_key(url, authorization) == key
