"""Two ``callstream serve`` nodes on one private PostgreSQL: real calls, real webhooks.

Each node takes a call (``callstream call``), records itself as its owner, and its
webhooks reach the receiver in order. Node A is killed with SIGKILL mid-call and
restarted under the same node id: it ends its own orphaned call (one ``call.hangup``) and
leaves node B's live call alone; a second process under node A's id is refused; every
event is delivered exactly once.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from sqlalchemy import select

from callstream.store import schema as t
from callstream.store.sql import SqlStore
from tests.e2e.calling import CallerProcess, start_caller
from tests.helpers import ServerProcess, free_port, free_udp_tcp_port, running_server
from tests.receiver import Receiver, webhook_receiver
from tests.store.postgres import PostgresServer

pytestmark = pytest.mark.slow

CALL_ORDER = ["call.initiated", "call.answered", "call.hangup"]


def _owners(url: str) -> dict[str, tuple[str, bool]]:
    async def read() -> dict[str, tuple[str, bool]]:
        store = SqlStore(url)
        await store.open()
        try:
            async with store.reading() as conn:
                rows = (await conn.execute(select(
                    t.calls.c.call_control_id, t.calls.c.owner, t.calls.c.is_alive))).all()
        finally:
            await store.close()
        return {r.call_control_id: (r.owner, bool(r.is_alive)) for r in rows}

    return asyncio.run(read())


def _call_events(hooks: Receiver, ccid: str) -> list[str]:
    return [d.event_type for d in hooks.events() if d.payload.get("call_control_id") == ccid]


@pytest.fixture
def hooks() -> Iterator[Receiver]:
    with webhook_receiver() as receiver:
        yield receiver


def _node(data: Path, url: str, hooks: Receiver, rtp: int, node_id: str | None
          ) -> AbstractContextManager[ServerProcess]:
    env = {"CALLSTREAM_DATABASE_URL": url, "CALLSTREAM_WEBHOOK_URL": hooks.url,
           "CALLSTREAM_RTP_PORT_MIN": str(rtp), "CALLSTREAM_RTP_PORT_MAX": str(rtp + 99)}
    if node_id is not None:
        env["CALLSTREAM_NODE_ID"] = node_id
    return running_server(data, env=env)


def _call(node: ServerProcess, user: str, hooks: Receiver, rtp: str) -> tuple[CallerProcess, str]:
    caller = start_caller(f"sip:{user}@127.0.0.1:{node.sip_port}", "--duration", "120",
                          "--rtp-ports", rtp, "-q")
    found = hooks.wait_for(lambda d: d.event_type == "call.initiated"
                           and d.payload.get("to") == user, timeout=30)
    ccid = str(found.payload["call_control_id"])
    with node.client() as api:
        r = api.post(f"/v2/calls/{ccid}/actions/answer", json={})
        assert r.status_code == 200, r.text
    hooks.wait_event("call.answered", ccid, timeout=30)
    return caller, ccid


def test_two_nodes_share_one_postgresql(
    postgres: PostgresServer, hooks: Receiver, tmp_path: Path
) -> None:
    # The plain postgresql:// a user writes (callstream runs it on asyncpg).
    url = postgres.new_database().replace("postgresql+asyncpg://", "postgresql://")
    callers: list[CallerProcess] = []
    try:
        with _node(tmp_path / "a", url, hooks, 36000, "node-a") as a, \
                _node(tmp_path / "b", url, hooks, 36100, None) as b:
            b_id = (tmp_path / "b" / "node-id").read_text().strip()
            caller_a, call_a = _call(a, "alice", hooks, "36200-36299")
            caller_b, call_b = _call(b, "bob", hooks, "36300-36399")
            callers += [caller_a, caller_b]
            owners = _owners(url)
            assert owners[call_a] == ("node-a", True)
            assert owners[call_b] == (b_id, True)
            # One store: either node reads the other's call.
            with a.client() as api:
                assert api.get(f"/v2/calls/{call_b}").json()["data"]["is_alive"] is True

            # A second process as node-a is refused: it would end node-a's live call.
            twin = ServerProcess(tmp_path / "twin", free_port(), free_udp_tcp_port(), "",
                                 env={"CALLSTREAM_DATABASE_URL": url,
                                      "CALLSTREAM_NODE_ID": "node-a"})
            (tmp_path / "twin").mkdir()
            with pytest.raises(RuntimeError, match="server exited 1"):
                twin.start()
            assert "node id 'node-a' is in use" in twin.log()
            assert _owners(url)[call_a] == ("node-a", True)

            # Node A dies mid-call; restarted under its id, it ends its own orphan only.
            assert a.stop(signal.SIGKILL) == -signal.SIGKILL
            a.start()
            hooks.wait_event("call.hangup", call_a, timeout=30)
            owners = _owners(url)
            assert owners[call_a] == ("node-a", False)
            assert owners[call_b] == (b_id, True)
            assert "1 calls of node node-a were alive" in a.log()

            with b.client() as api:
                r = api.post(f"/v2/calls/{call_b}/actions/hangup", json={})
                assert r.status_code == 200, r.text
            hooks.wait_event("call.hangup", call_b, timeout=30)
        # B kept its generated id across its run; a restart reads it back.
        assert (tmp_path / "b" / "node-id").read_text().strip() == b_id
    finally:
        for caller in callers:
            caller.kill()
            caller.proc.communicate()  # closes its pipes when it had already ended

    assert _call_events(hooks, call_a) == CALL_ORDER
    assert _call_events(hooks, call_b) == CALL_ORDER
    ids = [d.json["data"]["id"] for d in hooks.events()]
    assert len(ids) == len(set(ids)), "an event was delivered twice"
