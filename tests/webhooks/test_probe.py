"""The start-up probe of the webhook URL, against real loopback sockets."""

from __future__ import annotations

import asyncio

from callstream.webhooks.probe import probe_webhook_url
from tests.helpers import free_port


async def test_a_listening_receiver_passes() -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        assert await probe_webhook_url(f"http://127.0.0.1:{port}/hooks") is None


async def test_nothing_listening_is_connection_refused() -> None:
    assert await probe_webhook_url(f"http://127.0.0.1:{free_port()}/") == "connection refused"


async def test_urls_it_cannot_probe_say_why() -> None:
    assert await probe_webhook_url("ftp://example.test/") == "not an http(s) URL with a host"
    bad_port = await probe_webhook_url("http://127.0.0.1:99999/")
    assert bad_port is not None and bad_port.startswith("not a valid URL")
    unresolvable = await probe_webhook_url("http://no-such-host.invalid/", wait_secs=5)
    assert unresolvable is not None and unresolvable != "connection refused"
