"""Dials against a real ``callstream serve``: one dial waiting on the network holds up
no other dial, a dial's ``command_id`` still places one call (issue #11, item 4), and a
dial hung up while it waits ends without ringing."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.helpers import ServerProcess, stored_events

#: A functional bound, far below the ~10 s a stalled stream upgrade lasts.
INDEPENDENT_DIAL_SECS = 3.0


class SilentListener:
    """Accepts TCP connections (a WebSocket upgrade) and never answers them."""

    def __init__(self) -> None:
        self.accepted = asyncio.Event()
        self.url = ""
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        self.accepted.set()

    def drop_all(self) -> None:
        for writer in self._writers:
            writer.close()

    async def __aenter__(self) -> SilentListener:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/media"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.drop_all()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


@pytest.fixture
async def api(server: ServerProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=server.api_url, headers={"Authorization": f"Bearer {server.api_key}"},
        timeout=30,
    ) as client:
        yield client


def dial_body(n: int, sip_port: int, **extra: Any) -> dict[str, Any]:
    """A dial to a SIP port that never answers: the call rings until hung up."""
    return {"connection_id": "default", "to": f"sip:callee{n}@127.0.0.1:{sip_port}",
            "from": "+15550001111", "timeout_secs": 60, **extra}


def call_id(r: httpx.Response) -> str:
    assert r.status_code == 200, r.text
    return str(r.json()["data"]["call_control_id"])


async def hang_up(api: httpx.AsyncClient, ids: list[str]) -> None:
    for ccid in ids:
        r = await api.post(f"/calls/{ccid}/actions/hangup", json={})
        assert r.status_code == 200, r.text


async def test_a_dial_waiting_for_its_stream_holds_up_no_other_dial(
    api: httpx.AsyncClient, silent_sip_port: int
) -> None:
    loop = asyncio.get_running_loop()

    async def timed(body: dict[str, Any]) -> tuple[httpx.Response, float]:
        start = loop.time()
        r = await api.post("/calls", json=body)
        return r, loop.time() - start

    async with SilentListener() as ws:
        stalled = asyncio.create_task(api.post("/calls", json=dial_body(
            0, silent_sip_port, stream_url=ws.url, stream_establish_before_call_originate=True,
            command_id="stalled")))
        async with asyncio.timeout(20):
            await ws.accepted.wait()  # that dial is now waiting on the upgrade
        others = await asyncio.gather(*(timed(dial_body(n, silent_sip_port)) for n in (1, 2, 3)))
        # A repeat of the waiting dial's command_id gets its answer, not a second call.
        repeat, repeat_took = await timed(dial_body(
            0, silent_sip_port, stream_url=ws.url, stream_establish_before_call_originate=True,
            command_id="stalled"))
        still_waiting = not stalled.done()
        ws.drop_all()  # the upgrade fails now, and that dial goes on without its stream
        first = await stalled

    ids = [call_id(first), *(call_id(r) for r, _ in others)]
    await hang_up(api, ids)
    took = [round(t, 2) for _, t in others]
    assert all(t < INDEPENDENT_DIAL_SECS for t in took), f"other dials took {took} s"
    assert still_waiting, "the stream's dial should still have been waiting"
    assert repeat.content == first.content and repeat_took < INDEPENDENT_DIAL_SECS


async def test_concurrent_dials_with_one_command_id_place_one_call(
    api: httpx.AsyncClient, silent_sip_port: int
) -> None:
    body = dial_body(7, silent_sip_port, command_id="one-call")
    replies = await asyncio.gather(*(api.post("/calls", json=body) for _ in range(8)))
    assert {r.content for r in replies} == {replies[0].content}
    ccid = call_id(replies[0])
    live = (await api.get("/calls")).json()["data"]
    assert [c["call_control_id"] for c in live if c["to"] == body["to"]] == [ccid]
    await hang_up(api, [ccid])


async def test_a_dial_hung_up_while_its_stream_connects_never_rings(
    server: ServerProcess, api: httpx.AsyncClient
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as callee:
        callee.bind(("127.0.0.1", 0))
        callee.setblocking(False)
        async with SilentListener() as ws:
            dialling = asyncio.create_task(api.post("/calls", json=dial_body(
                0, callee.getsockname()[1], stream_url=ws.url,
                stream_establish_before_call_originate=True)))
            async with asyncio.timeout(20):
                await ws.accepted.wait()
            live = (await api.get("/calls")).json()["data"]
            ccid = next(c["call_control_id"] for c in live if c["to"].endswith(
                f":{callee.getsockname()[1]}"))
            r = await api.post(f"/calls/{ccid}/actions/hangup", json={})
            assert r.status_code == 200, r.text
            ws.drop_all()
            assert call_id(await dialling) == ccid
        async with asyncio.timeout(20):
            while (await api.get(f"/calls/{ccid}")).json()["data"]["is_alive"]:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        with pytest.raises(BlockingIOError):
            callee.recv(4096)  # no INVITE was sent
    ended = [e for e in await asyncio.to_thread(stored_events, server.data_dir)
             if e["event_type"] == "call.hangup" and e["payload"]["call_control_id"] == ccid]
    assert [e["payload"]["hangup_cause"] for e in ended] == ["originator_cancel"]
