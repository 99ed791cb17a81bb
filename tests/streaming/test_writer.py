"""send_frames: a tick's frames as separate text messages, in one socket write."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from callstream.streaming.writer import can_write_now, send_frames, write_now


class Received:
    def __init__(self) -> None:
        self.messages: asyncio.Queue[str | bytes] = asyncio.Queue()
        self.reading = asyncio.Event()
        self.reading.set()

    async def handler(self, ws: ServerConnection) -> None:
        while True:
            await self.reading.wait()
            try:
                message = await ws.recv()
            except ConnectionClosed:
                return
            await self.messages.put(message)

    async def take(self, count: int) -> list[str | bytes]:
        async with asyncio.timeout(10):
            return [await self.messages.get() for _ in range(count)]


class CountingTransport:
    """The connection's transport, counting the calls that write (a spy; it delegates)."""

    def __init__(self, inner: asyncio.Transport) -> None:
        self._inner = inner
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        self._inner.write(data)

    def writelines(self, data: list[bytes]) -> None:
        self.writes += 1
        self._inner.writelines(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@pytest.fixture
async def pair() -> AsyncIterator[tuple[ClientConnection, Received]]:
    received = Received()
    async with serve(received.handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}", compression=None) as ws:
            yield ws, received


async def test_each_frame_is_its_own_text_message_in_order(
        pair: tuple[ClientConnection, Received]) -> None:
    ws, received = pair
    frames = [b'{"event":"media","n":1}', b'{"event":"media","n":2}',
              '{"event":"mark","name":"é"}'.encode()]
    await send_frames(ws, frames)
    assert await received.take(3) == [frame.decode() for frame in frames]


async def test_a_batch_is_one_write_where_send_makes_one_per_message(
        pair: tuple[ClientConnection, Received]) -> None:
    ws, received = pair
    spy = CountingTransport(ws.transport)
    ws.transport = spy  # type: ignore[assignment]
    await send_frames(ws, [b'"a"', b'"b"'])
    assert spy.writes == 1
    await ws.send('"c"')
    await ws.send('"d"')
    assert spy.writes == 3
    assert await received.take(4) == ['"a"', '"b"', '"c"', '"d"']


async def test_nothing_to_send_writes_nothing(pair: tuple[ClientConnection, Received]) -> None:
    ws, _ = pair
    spy = CountingTransport(ws.transport)
    ws.transport = spy  # type: ignore[assignment]
    await send_frames(ws, [])
    assert spy.writes == 0


async def test_a_closed_socket_raises_connection_closed(
        pair: tuple[ClientConnection, Received]) -> None:
    ws, _ = pair
    await ws.close()
    with pytest.raises(ConnectionClosed):
        await send_frames(ws, [b'"late"'])


async def test_large_batches_arrive_whole(pair: tuple[ClientConnection, Received]) -> None:
    """More than the transport's high-water mark in one batch: flow control, no loss."""
    ws, received = pair
    frames = [b'"' + b"x" * 70_000 + b'%d"' % i for i in range(8)]
    await send_frames(ws, frames)
    assert await received.take(8) == [frame.decode() for frame in frames]


async def test_write_now_writes_the_frames_in_one_write(
        pair: tuple[ClientConnection, Received]) -> None:
    ws, received = pair
    spy = CountingTransport(ws.transport)
    ws.transport = spy  # type: ignore[assignment]
    assert can_write_now(ws)
    write_now(ws, [b'"out"', b'"in"'])
    assert spy.writes == 1
    assert await received.take(2) == ['"out"', '"in"']


async def test_no_write_now_on_a_closed_socket(pair: tuple[ClientConnection, Received]) -> None:
    ws, _ = pair
    await ws.close()
    assert not can_write_now(ws)


async def test_no_write_now_while_the_consumer_is_behind(
        pair: tuple[ClientConnection, Received]) -> None:
    """A consumer that stops reading fills the buffers: the media path then leaves the
    frames to the task (which waits), and may write again once it has caught up."""
    ws, received = pair
    received.reading.clear()
    ws.transport.get_extra_info("socket").setsockopt(
        socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
    ws.transport.set_write_buffer_limits(high=64 * 1024)
    frame = b'"' + b"x" * 16_000 + b'"'
    written = 0
    while can_write_now(ws) and written < 2_000:  # bounded: 32 MB at most
        write_now(ws, [frame])
        written += 1
        await asyncio.sleep(0)
    assert not can_write_now(ws) and ws.paused
    received.reading.set()
    assert len(await received.take(written)) == written
    assert can_write_now(ws)  # everything arrived: the buffer drained, writing resumed
