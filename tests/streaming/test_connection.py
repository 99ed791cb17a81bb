"""StreamConnection against a real websockets server: the consumer's messages handed
over inline and in order, and the probe ping that rides with a write."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from callstream.streaming.connection import PROBE_SECS, StreamConnection
from callstream.streaming.writer import write_now

Handler = Callable[[ServerConnection], Awaitable[None]]


@pytest.fixture
async def open_pair() -> AsyncIterator[Callable[[Handler], Awaitable[StreamConnection]]]:
    """Start a server running ``handler`` and connect a StreamConnection to it."""
    servers = []
    clients: list[StreamConnection] = []

    async def make(handler: Handler) -> StreamConnection:
        server = await serve(handler, "127.0.0.1", 0, compression=None)
        servers.append(server)
        port = next(iter(server.sockets)).getsockname()[1]
        ws = await connect(f"ws://127.0.0.1:{port}", compression=None,
                           create_connection=StreamConnection, ping_interval=None)
        assert isinstance(ws, StreamConnection)
        clients.append(ws)
        return ws

    yield make
    for ws in clients:
        await ws.close()
    for server in servers:
        server.close()
        await server.wait_closed()


async def test_messages_go_to_on_text_in_order_and_never_to_the_assembler(
        open_pair: Callable[[Handler], Awaitable[StreamConnection]]) -> None:
    """Whole, fragmented and binary messages in one burst: the text ones, joined, in order;
    the binary one dropped; the reader's ``async for`` sees only the end."""
    go = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        await go.wait()
        await ws.send('{"event":"media","n":1}')
        await ws.send(['{"event":"mark",', '"mark":{"name":"é"}}'])  # two fragments
        await ws.send(b"\x00binary")
        await ws.send([b"\x01frag", b"mented binary"])
        await ws.send('{"event":"clear"}')
        await ws.close(1000)

    ws = await open_pair(handler)
    got: list[str] = []
    ws.on_text = got.append
    go.set()
    async with asyncio.timeout(10):
        assert [message async for message in ws] == []  # ends with the socket
    assert got == ['{"event":"media","n":1}', '{"event":"mark","mark":{"name":"é"}}',
                   '{"event":"clear"}']


async def test_a_text_message_that_is_not_utf8_fails_the_connection_with_1007(
        open_pair: Callable[[Handler], Awaitable[StreamConnection]]) -> None:
    go = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        await go.wait()
        await ws.send(b'{"event":"media"}')  # bytes sent as text below
        await ws.send(b"\xff\xfe", text=True)
        await ws.send('{"event":"late"}')
        await ws.wait_closed()

    ws = await open_pair(handler)
    got: list[str] = []
    ws.on_text = got.append
    go.set()
    async with asyncio.timeout(10):
        await ws.wait_closed()
    assert ws.protocol.close_sent is not None and ws.protocol.close_sent.code == 1007
    assert got == []  # the first was binary; nothing after the bad one is played


async def test_a_handler_that_raises_is_logged_and_the_next_message_still_comes(
        open_pair: Callable[[Handler], Awaitable[StreamConnection]],
        caplog: pytest.LogCaptureFixture) -> None:
    go = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        await go.wait()
        await ws.send('{"event":"boom"}')
        await ws.send('{"event":"clear"}')
        await ws.close()

    ws = await open_pair(handler)
    got: list[str] = []

    def on_text(text: str) -> None:
        if "boom" in text:
            raise RuntimeError("a bug in the handler")
        got.append(text)

    ws.on_text = on_text
    go.set()
    async with asyncio.timeout(10):
        await ws.wait_closed()
    assert got == ['{"event":"clear"}']
    assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 1000
    assert "a stream's consumer message handler failed" in caplog.text


async def test_without_on_text_the_assembler_gets_them(
        open_pair: Callable[[Handler], Awaitable[StreamConnection]]) -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send('"one"')
        await ws.close(1000)

    ws = await open_pair(handler)
    async with asyncio.timeout(10):
        assert [message async for message in ws] == ['"one"']


async def test_one_probe_at_a_time_answered_by_the_consumers_library(
        open_pair: Callable[[Handler], Awaitable[StreamConnection]]) -> None:
    async def handler(ws: ServerConnection) -> None:
        with pytest.raises(ConnectionClosed):
            while True:
                await ws.recv()

    ws = await open_pair(handler)
    ws.on_text = lambda text: None
    loop = asyncio.get_running_loop()
    now = loop.time()
    probe = ws.probe(now)
    assert probe is not None and ws.probe_asked == now
    assert ws.probe(now + 10) is None  # one unanswered at a time
    write_now(ws, [b'{"event":"media"}'], probe)
    for _ in range(1000):  # the pong clears it (10 s at most)
        if ws.probe_asked is None:
            break
        await asyncio.sleep(0.01)
    assert ws.probe_asked is None
    assert ws.probe(now + PROBE_SECS / 2) is None  # too soon after the last
    assert ws.probe(now + PROBE_SECS * 1.01) is not None


async def test_a_consumer_that_does_not_read_leaves_the_probe_unanswered(
        open_pair: Callable[[Handler], Awaitable[StreamConnection]]) -> None:
    stop = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        ws.transport.pause_reading()  # reads nothing: answers nothing
        await stop.wait()
        ws.transport.abort()  # reading nothing, it would wait 10 s for a closing handshake

    ws = await open_pair(handler)
    now = asyncio.get_running_loop().time()
    write_now(ws, [b'{"event":"media"}'], ws.probe(now))
    await asyncio.sleep(0.3)
    assert ws.probe_asked == now
    stop.set()


async def test_a_pong_that_is_not_the_probes_leaves_it_unanswered(
        open_pair: Callable[[Handler], Awaitable[StreamConnection]]) -> None:
    """websockets' own pings (the stall watchdog's) are answered as before; their pongs
    say nothing about the probe."""

    async def handler(ws: ServerConnection) -> None:
        with pytest.raises(ConnectionClosed):
            while True:
                await ws.recv()

    ws = await open_pair(handler)
    now = asyncio.get_running_loop().time()
    assert ws.probe(now) is not None  # made, never written: never answered
    async with asyncio.timeout(10):
        await (await ws.ping())  # the watchdog's kind of ping gets its pong
    assert ws.probe_asked == now


@pytest.mark.parametrize("piece", [1, 2, 5, 1 << 20])
async def test_the_probes_pong_is_read_inline_among_text_frames_cut_anywhere(
        piece: int, open_pair: Callable[[Handler], Awaitable[StreamConnection]]) -> None:
    """The probe's pong is matched by the connection's own reading when it is at the front
    of the data, by websockets' events when a cut put it elsewhere; a pong of other data
    (the watchdog's) is websockets' either way, and leaves the probe unanswered."""

    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()

    ws = await open_pair(handler)
    got: list[str] = []
    ws.on_text = got.append
    fed = fed_to_parser(ws)
    now = asyncio.get_running_loop().time()
    assert ws.probe(now) is not None
    probe_data = ws._probe_data
    media = Frame(Opcode.TEXT, b'{"event":"media"}').serialize(mask=False)
    other = Frame(Opcode.PONG, b"abcd").serialize(mask=False)  # not the probe's
    wire = media + other + media
    for at in range(0, len(wire), piece):
        ws.data_received(wire[at : at + piece])
    assert ws.probe_asked == now and got == ['{"event":"media"}'] * 2
    wire = media + Frame(Opcode.PONG, probe_data).serialize(mask=False) + media
    fed.clear()
    for at in range(0, len(wire), piece):
        ws.data_received(wire[at : at + piece])
    assert ws.probe_asked is None and got == ['{"event":"media"}'] * 4
    assert ws.protocol.state is State.OPEN
    if piece > len(wire):  # at once: none of it went through websockets' parser
        assert fed == []


def fed_to_parser(ws: StreamConnection) -> list[bytes]:
    """The data handed to websockets' parser from now on (a list that fills up)."""
    fed: list[bytes] = []
    receive_data = ws.protocol.receive_data

    def spy(data: bytes) -> None:
        fed.append(data)
        receive_data(data)

    ws.protocol.receive_data = spy  # type: ignore[method-assign]
    return fed


def server_frames() -> tuple[bytes, list[str]]:
    """A burst as a server might send it: lengths of every encoding, a ping and a
    fragmented message in between (unmasked, as servers send)."""
    texts = ['{"event":"media","n":1}', "é" * 60, "x" * 300, "y" * 70_000, '{"event":"clear"}']
    wire = b"".join(Frame(Opcode.TEXT, t.encode()).serialize(mask=False) for t in texts[:2])
    wire += Frame(Opcode.PING, b"hi").serialize(mask=False)
    wire += Frame(Opcode.TEXT, texts[2].encode()).serialize(mask=False)
    wire += Frame(Opcode.TEXT, texts[3][:100].encode(), fin=False).serialize(mask=False)
    wire += Frame(Opcode.CONT, texts[3][100:].encode()).serialize(mask=False)
    wire += Frame(Opcode.TEXT, texts[4].encode()).serialize(mask=False)
    return wire, texts


@pytest.mark.parametrize("piece", [1, 3, 7, 250, 1 << 20])
async def test_frames_cut_anywhere_are_read_whole_and_in_order(
        piece: int, open_pair: Callable[[Handler], Awaitable[StreamConnection]]) -> None:
    """The connection's own reading of whole text frames and websockets' reading of the
    rest take turns at every cut of the data."""

    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()

    ws = await open_pair(handler)
    ws.protocol.max_message_size = 100_000
    got: list[str] = []
    ws.on_text = got.append
    fed = fed_to_parser(ws)
    wire, texts = server_frames()
    for at in range(0, len(wire), piece):
        ws.data_received(wire[at : at + piece])
    assert got == texts
    assert ws.protocol.state is State.OPEN
    if piece > len(wire):  # at once: the first two frames never reach websockets' parser
        assert fed == [wire[wire.index(b"\x89\x02hi") :]]


@pytest.mark.parametrize(("frame", "code"), [
    (Frame(Opcode.TEXT, b"x" * 2000).serialize(mask=False), 1009),  # over max_size
    (Frame(Opcode.TEXT, b'{"a":1}').serialize(mask=True), 1002),  # a server must not mask
    (b"\xc1\x02{}", 1002),  # RSV1 without an extension
])
async def test_a_bad_frame_after_good_ones_fails_the_connection_as_websockets_does(
        frame: bytes, code: int,
        open_pair: Callable[[Handler], Awaitable[StreamConnection]]) -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()

    ws = await open_pair(handler)
    ws.protocol.max_message_size = 1000
    got: list[str] = []
    ws.on_text = got.append
    ws.data_received(Frame(Opcode.TEXT, b'"first"').serialize(mask=False) + frame
                     + Frame(Opcode.TEXT, b'"after"').serialize(mask=False))
    assert got == ['"first"']
    assert ws.protocol.close_sent is not None and ws.protocol.close_sent.code == code
