"""HttpDeliverer against real receivers: each way an attempt can fail maps to DeliveryFailed."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trustme

from callstream.webhooks.delivery import DeliveryResponse, HttpDeliverer
from callstream.webhooks.exceptions import DeliveryFailed, FailureKind
from tests.webhooks.receivers import Received, Receiver, Reply, closed_port_url

Start = Callable[..., Awaitable[Receiver]]
HEADERS = {"content-type": "application/json", "telnyx-timestamp": "1"}


async def send(
    d: HttpDeliverer, url: str, secs: float = 2.0, body: bytes = b"{}"
) -> DeliveryResponse:
    return await d.send(url, method="POST", body=body, headers=HEADERS, timeout_secs=secs)


@pytest.fixture
async def deliverer() -> AsyncIterator[HttpDeliverer]:
    d = HttpDeliverer(4)
    yield d
    await d.aclose()


async def test_2xx_is_delivered_with_the_exact_body_and_headers(
    receivers: Start, deliverer: HttpDeliverer
) -> None:
    r = await receivers(Reply(status=204, body=b""))
    response = await send(deliverer, r.url, body=b'{"a":1}')
    assert response.status_code == 204
    (req,) = r.requests
    assert (req.method, req.path, req.body) == ("POST", "/hooks", b'{"a":1}')
    assert req.headers["content-type"] == "application/json"
    assert req.headers["telnyx-timestamp"] == "1"
    assert req.headers["user-agent"].startswith("callstream-webhooks/")


async def test_connections_are_kept_alive(receivers: Start, deliverer: HttpDeliverer) -> None:
    r = await receivers()
    for _ in range(5):
        await send(deliverer, r.url)
    assert r.connections == 1


async def test_connection_refused(deliverer: HttpDeliverer) -> None:
    with pytest.raises(DeliveryFailed) as info:
        await send(deliverer, closed_port_url())
    assert info.value.kind is FailureKind.CONNECT
    assert info.value.retryable


async def test_http_500_keeps_status_and_body(receivers: Start, deliverer: HttpDeliverer) -> None:
    r = await receivers(Reply(status=500, body=b"database down"))
    with pytest.raises(DeliveryFailed) as info:
        await send(deliverer, r.url)
    err = info.value
    assert (err.kind, err.status_code, err.body, err.retryable) == (
        FailureKind.HTTP_STATUS, 500, None, True)  # no body kept by default (#11)
    assert str(err) == "HTTP 500: Internal Server Error"


async def test_retry_after_is_read(receivers: Start, deliverer: HttpDeliverer) -> None:
    r = await receivers(Reply(status=429, headers={"retry-after": "12"}))
    with pytest.raises(DeliveryFailed) as info:
        await send(deliverer, r.url)
    assert info.value.retry_after == 12.0


async def test_no_answer_within_the_timeout(receivers: Start, deliverer: HttpDeliverer) -> None:
    r = await receivers(Reply(hang=True))
    start = time.monotonic()
    with pytest.raises(DeliveryFailed) as info:
        await send(deliverer, r.url, secs=0.3)
    assert info.value.kind is FailureKind.TIMEOUT
    assert info.value.retryable
    assert 0.25 <= time.monotonic() - start < 1.5


async def test_slow_status_line_is_a_timeout(receivers: Start, deliverer: HttpDeliverer) -> None:
    r = await receivers(Reply(delay=1.0))
    with pytest.raises(DeliveryFailed) as info:
        await send(deliverer, r.url, secs=0.3)
    assert info.value.kind is FailureKind.TIMEOUT


async def test_2xx_with_a_slow_body_is_delivered_and_not_reused(
    receivers: Start, deliverer: HttpDeliverer
) -> None:
    r = await receivers(Reply(body=b"0123456789", trickle=0.1))
    start = time.monotonic()
    response = await send(deliverer, r.url, secs=0.35)
    assert time.monotonic() - start < 1.0
    assert response.status_code == 200
    assert not response.complete
    assert response.body is None
    r.behaviour = Reply()
    await send(deliverer, r.url)
    assert r.connections == 2  # the half-read connection was dropped


async def test_500_with_a_slow_body_fails_with_its_status(
    receivers: Start, deliverer: HttpDeliverer
) -> None:
    r = await receivers(Reply(status=500, body=b"xxxxxxxx", trickle=0.2))
    with pytest.raises(DeliveryFailed) as info:
        await send(deliverer, r.url, secs=0.3)
    assert info.value.status_code == 500


async def test_dropped_connection_is_a_protocol_failure(
    receivers: Start, deliverer: HttpDeliverer
) -> None:
    r = await receivers(Reply(drop=True))
    with pytest.raises(DeliveryFailed) as info:
        await send(deliverer, r.url)
    assert info.value.kind in (FailureKind.PROTOCOL, FailureKind.NETWORK)
    assert info.value.retryable


@pytest.mark.parametrize(
    ("content_type", "body", "kept"),
    [
        ("application/json", b"x" * 5000, "x" * 256),  # only the start of a long answer
        ("text/plain; charset=utf-8", b"internal: ok", "internal: ok"),
        ("text/html", b"<h1>admin panel</h1>", None),  # never another kind of document
        (None, b"secret", None),
    ],
)
async def test_only_a_short_textual_excerpt_is_kept_when_asked(
    receivers: Start, content_type: str | None, body: bytes, kept: str | None
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    r = await receivers(Reply(status=500, body=body, headers=headers))
    d = HttpDeliverer(2, keep_body_bytes=256)
    try:
        with pytest.raises(DeliveryFailed) as info:
            await send(d, r.url)
        assert info.value.body == kept
        r.behaviour = Reply(body=body, headers=headers)
        assert (await send(d, r.url)).body == kept
    finally:
        await d.aclose()


async def test_by_default_no_answer_body_is_kept(
    receivers: Start, deliverer: HttpDeliverer
) -> None:
    r = await receivers(Reply(body=b'{"secret": "from an internal service"}',
                              headers={"content-type": "application/json"}))
    assert (await send(deliverer, r.url)).body is None


async def test_a_destination_holds_at_most_its_share_of_the_pool(receivers: Start) -> None:
    hung = await receivers(Reply(hang=True))
    fast = await receivers()
    d = HttpDeliverer(4, max_per_destination=2)
    try:
        stuck = [asyncio.create_task(send(d, hung.url, secs=5.0)) for _ in range(6)]
        await hung.wait_for(2)
        start = time.monotonic()
        await asyncio.gather(*(send(d, fast.url) for _ in range(6)))
        assert time.monotonic() - start < 2.0  # not behind the hung receiver's requests
        assert len(hung.requests) == 2 and fast.max_in_flight <= 2
        for task in stuck:
            task.cancel()
        await asyncio.gather(*stuck, return_exceptions=True)
    finally:
        await d.aclose()


@pytest.mark.parametrize("url", ["ftp://example.com/x", "not a url", "http://"])
async def test_unusable_urls_are_not_retryable(deliverer: HttpDeliverer, url: str) -> None:
    with pytest.raises(DeliveryFailed) as info:
        await send(deliverer, url)
    assert info.value.kind is FailureKind.INVALID_URL
    assert not info.value.retryable


async def test_concurrency_is_bounded(receivers: Start) -> None:
    r = await receivers(Reply(delay=0.05))
    d = HttpDeliverer(3)
    try:
        await asyncio.gather(*(send(d, r.url) for _ in range(12)))
    finally:
        await d.aclose()
    assert r.max_in_flight == 3
    assert r.connections == 3


async def test_connections_move_between_receivers(receivers: Start) -> None:
    a, b = await receivers(), await receivers()
    d = HttpDeliverer(1)
    try:
        for url in (a.url, b.url, a.url):
            await send(d, url)
    finally:
        await d.aclose()
    assert len(a.requests) == 2 and len(b.requests) == 1


async def test_https_receivers_are_verified(receivers: Start) -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    r = await receivers(tls=server_ctx)
    assert r.url.startswith("https://")
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    d = HttpDeliverer(2, ssl_context=trusting)
    try:
        for _ in range(3):
            assert (await send(d, r.url)).status_code == 200
    finally:
        await d.aclose()
    assert len(r.requests) == 3 and r.connections == 1
    # The system's CA bundle does not know this receiver's certificate.
    untrusting = HttpDeliverer(1)
    try:
        with pytest.raises(DeliveryFailed) as info:
            await send(untrusting, r.url)
    finally:
        await untrusting.aclose()
    assert info.value.kind is FailureKind.CONNECT and "certificate" in info.value.reason.lower()


async def test_a_kept_alive_connection_closed_by_the_receiver_is_retried_once(
    receivers: Start, deliverer: HttpDeliverer
) -> None:
    seen: list[int] = []

    def close_the_second(req: Received) -> Reply:
        seen.append(req.connection)
        return Reply(drop=True) if len(seen) == 2 else Reply()

    r = await receivers(close_the_second)
    await send(deliverer, r.url)
    await send(deliverer, r.url)  # lands on the dropped connection, then on a fresh one
    assert len(r.requests) == 3 and r.connections == 2
    # A fresh connection that drops is a failure, not retried.
    r2 = await receivers(Reply(drop=True))
    with pytest.raises(DeliveryFailed):
        await send(deliverer, r2.url)
    assert len(r2.requests) == 1
