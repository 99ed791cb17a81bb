"""The start-up probe of the webhook URL, against real loopback sockets."""

from __future__ import annotations

import asyncio
import functools

from callstream.outbound.policy import OutboundPolicy
from callstream.webhooks.probe import probe_webhook_url
from tests.helpers import free_port

POLICY = OutboundPolicy.from_lists()  # the defaults: loopback allowed


def _accept(accepted: asyncio.Event, reader: asyncio.StreamReader,
            writer: asyncio.StreamWriter) -> None:
    accepted.set()
    writer.close()


async def test_a_listening_receiver_passes() -> None:
    accepted = asyncio.Event()
    server = await asyncio.start_server(functools.partial(_accept, accepted), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        assert await probe_webhook_url(f"http://127.0.0.1:{port}/hooks", POLICY) is None
        async with asyncio.timeout(5):
            await accepted.wait()


async def test_nothing_listening_is_connection_refused() -> None:
    url = f"http://127.0.0.1:{free_port()}/"
    assert await probe_webhook_url(url, POLICY) == "connection refused"


async def test_a_denied_address_is_never_connected_to() -> None:
    accepted = asyncio.Event()
    server = await asyncio.start_server(functools.partial(_accept, accepted), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    deny_loopback = OutboundPolicy.from_lists(deny=["127.0.0.0/8"])
    async with server:
        problem = await probe_webhook_url(f"http://127.0.0.1:{port}/", deny_loopback)
        assert problem is not None
        assert problem.startswith("refused by the outbound policy: 127.0.0.1 is denied")
        await asyncio.sleep(0.2)
        assert not accepted.is_set()


async def test_urls_it_cannot_probe_say_why() -> None:
    assert await probe_webhook_url("ftp://example.test/", POLICY) == (
        "not an http(s) URL with a host")
    bad_port = await probe_webhook_url("http://127.0.0.1:99999/", POLICY)
    assert bad_port is not None and bad_port.startswith("not a valid URL")
    unresolvable = await probe_webhook_url("http://no-such-host.invalid/", POLICY,
                                           wait_secs=5)
    assert unresolvable is not None and unresolvable != "connection refused"
