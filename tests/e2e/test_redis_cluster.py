"""Two ``callstream serve`` nodes on one private PostgreSQL and one private Redis.

Each node leases its call in Redis as it creates it. A call's REST command sent to the
node that does not own it is forwarded to the owner: the answer is the owner's, byte for
byte (the same ``command_id`` replayed straight to the owner gets the same bytes), and
many such commands reach the owner on one or two kept connections. ``GET /v2/calls`` on
either node lists both nodes' calls.
Node A is killed with SIGKILL mid-call: its Redis liveness expires, node B ends A's call
with exactly one ``call.hangup`` (``unspecified``/``unknown``) and delivers it; A
restarted does not end it again; every webhook is delivered once. The figures of the
failover (lease expiry, orphan ended) are printed (docs/cluster.md, "Redis").
"""

from __future__ import annotations

import base64
import re
import signal
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from redis import Redis

from callstream.cluster.leases import call_key, node_key
from tests.e2e.calling import CallerProcess, start_caller
from tests.e2e.test_postgres import _owners
from tests.helpers import ServerProcess, free_port, free_udp_tcp_port, running_server
from tests.receiver import Receiver, webhook_receiver
from tests.store.postgres import PostgresServer

pytestmark = pytest.mark.slow

CALL_ORDER = ["call.initiated", "call.answered", "call.bridged", "call.hangup"]
#: One signing key for the cluster: its webhooks verify with one public key, and its
#: nodes' internal requests (a bridge across nodes) carry one peer token.
SEED = base64.b64encode(bytes(range(32))).decode()
#: The defaults (config.py): what the figures below are measured with.
LEASE_SECS = 6.0
SCAN_SECS = 2.0
#: Commands for A's call sent through B, one after the other.
COMMANDS = 40


@pytest.fixture
def hooks() -> Iterator[Receiver]:
    with webhook_receiver() as receiver:
        yield receiver


def _node(data: Path, db: str, redis_url: str, hooks: Receiver, rtp: int, node_id: str
          ) -> AbstractContextManager[ServerProcess]:
    return running_server(data, env={
        "CALLSTREAM_DATABASE_URL": db, "CALLSTREAM_REDIS_URL": redis_url,
        "CALLSTREAM_NODE_ID": node_id, "CALLSTREAM_WEBHOOK_URL": hooks.url,
        "CALLSTREAM_WEBHOOK_SIGNING_SEED": SEED,
        "CALLSTREAM_RTP_PORT_MIN": str(rtp), "CALLSTREAM_RTP_PORT_MAX": str(rtp + 99)})


def _ring(node: ServerProcess, user: str, hooks: Receiver, rtp: str
          ) -> tuple[CallerProcess, str]:
    caller = start_caller(f"sip:{user}@127.0.0.1:{node.sip_port}", "--duration", "120",
                          "--rtp-ports", rtp, "-q")
    found = hooks.wait_for(lambda d: d.event_type == "call.initiated"
                           and d.payload.get("to") == user, timeout=30)
    return caller, str(found.payload["call_control_id"])


def _counter(node: ServerProcess, sample: str) -> float:
    """A sample of the node's /metrics (read on a connection of its own)."""
    with node.client() as api:
        text = api.get("/metrics").text
    found = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def _forwarded(node: ServerProcess) -> float:
    return _counter(node, 'callstream_http_forwarded_total{result="ok"}')


def test_two_nodes_share_calls_through_redis_and_survive_a_kill(
    postgres: PostgresServer, redis_url: str, hooks: Receiver, tmp_path: Path
) -> None:
    db = postgres.new_database()
    redis = Redis.from_url(redis_url)
    callers: list[CallerProcess] = []
    try:
        with _node(tmp_path / "a", db, redis_url, hooks, 37000, "node-a") as a, \
                _node(tmp_path / "b", db, redis_url, hooks, 37100, "node-b") as b:
            caller_a, call_a = _ring(a, "alice", hooks, "37200-37299")
            caller_b, call_b = _ring(b, "bob", hooks, "37300-37399")
            callers += [caller_a, caller_b]
            # Leased by their owners as they were created (before call.initiated was
            # stored), not at the next renewal.
            assert redis.get(call_key(call_a)) == b"node-a"
            assert redis.get(call_key(call_b)) == b"node-b"

            # A's call answered through B: forwarded to A, A's answer.
            body = {"command_id": f"answer-{call_a}"}
            with b.client() as api:
                via_b = api.post(f"/v2/calls/{call_a}/actions/answer", json=body)
            assert via_b.status_code == 200, via_b.text
            hooks.wait_event("call.answered", call_a, timeout=30)
            assert _forwarded(b) == 1
            with a.client() as api:
                direct = api.post(f"/v2/calls/{call_a}/actions/answer", json=body)
            assert (direct.status_code, direct.content) == (via_b.status_code, via_b.content)
            # Headers too, but date (and server), which each node writes itself.
            assert [h for h in direct.headers.multi_items() if h[0] != "date"] == \
                [h for h in via_b.headers.multi_items() if h[0] != "date"]
            # And B's call through A, then the call read from both sides.
            with a.client() as api:
                r = api.post(f"/v2/calls/{call_b}/actions/answer", json={})
                assert r.status_code == 200, r.text
            hooks.wait_event("call.answered", call_b, timeout=30)
            with a.client() as on_a, b.client() as on_b:
                assert on_a.get(f"/v2/calls/{call_b}").content == \
                    on_b.get(f"/v2/calls/{call_b}").content
                # A call neither node has: both answer 404 themselves.
                assert on_b.post("/v2/calls/v3:nope/actions/hangup", json={}).status_code \
                    == on_a.post("/v2/calls/v3:nope/actions/hangup", json={}).status_code
                for api in (on_a, on_b):
                    listed = {c["call_control_id"] for c in api.get("/v2/calls").json()["data"]}
                    assert {call_a, call_b} <= listed

            # The two calls of two nodes bridged, the command sent to B: A (the owner)
            # asks B to join through its own owner forwarding.
            with b.client() as api:
                r = api.post(f"/v2/calls/{call_a}/actions/bridge",
                             json={"call_control_id": call_b})
                assert r.status_code == 200, r.text
            for call in (call_a, call_b):
                hooks.wait_event("call.bridged", call, timeout=30)
            assert f"bridged with call {call_b} of another process" in a.log()
            assert f"bridged with call {call_a} of another process" in b.log()

            # Many commands through B reach A on B's kept connections: A accepts one or
            # two (the pool's), besides the one each /metrics read opens.
            accepted = _counter(a, "callstream_http_connections_total")
            with b.client() as api:
                for _ in range(COMMANDS):
                    r = api.get(f"/v2/calls/{call_a}")
                    assert r.status_code == 200 and r.json()["data"]["is_alive"] is True
            assert _forwarded(b) == 2 + COMMANDS
            assert _counter(a, "callstream_http_connections_total") - accepted <= 1 + 2

            # Both calls are still leased in Redis to their owners; both nodes are alive.
            assert redis.get(call_key(call_a)) == b"node-a"
            assert redis.get(call_key(call_b)) == b"node-b"

            # Node A dies mid-call.
            assert a.stop(signal.SIGKILL) == -signal.SIGKILL
            killed = time.monotonic()
            expired_at = None
            deadline = killed + 60
            while time.monotonic() < deadline:
                if expired_at is None and redis.exists(node_key("node-a")) == 0:
                    expired_at = time.monotonic()
                if any(d.event_type == "call.hangup"
                       and d.payload.get("call_control_id") == call_a for d in hooks.events()):
                    break
                time.sleep(0.05)
            ended_at = time.monotonic()
            hangup = hooks.wait_event("call.hangup", call_a, timeout=1)
            assert expired_at is not None
            print(f"\nfailover: node-a's liveness expired {expired_at - killed:.2f} s after "
                  f"SIGKILL (lease {LEASE_SECS:g} s); its call's call.hangup delivered by "
                  f"node-b {ended_at - killed:.2f} s after it (scan every {SCAN_SECS:g} s)")
            assert hangup.payload["hangup_cause"] == "unspecified"
            assert hangup.payload["hangup_source"] == "unknown"
            assert _owners(db)[call_a] == ("node-a", False)
            assert "node node-a is gone" in b.log()

            # A comes back under its id: B ended its call already, so A does not again.
            a.start()
            assert "were alive when its last process died" not in a.log()

            # B's call goes on; a command for A's ended call is answered by B itself.
            with b.client() as api:
                assert api.get(f"/v2/calls/{call_b}").json()["data"]["is_alive"] is True
                assert api.get(f"/v2/calls/{call_a}").json()["data"]["is_alive"] is False
                r = api.post(f"/v2/calls/{call_b}/actions/hangup", json={})
                assert r.status_code == 200, r.text
            hooks.wait_event("call.hangup", call_b, timeout=30)
            time.sleep(SCAN_SECS * 2)  # a second hangup for A's call would come by now
    finally:
        redis.close()
        for caller in callers:
            caller.kill()
            caller.proc.communicate()

    assert [d.event_type for d in hooks.events()
            if d.payload.get("call_control_id") == call_a] == CALL_ORDER
    assert [d.event_type for d in hooks.events()
            if d.payload.get("call_control_id") == call_b] == CALL_ORDER
    ids = [d.json["data"]["id"] for d in hooks.events()]
    assert len(ids) == len(set(ids)), "an event was delivered twice"




def test_an_unreachable_redis_fails_the_start_precisely(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    port = free_port()  # nothing listens there
    node = ServerProcess(tmp_path, free_port(), free_udp_tcp_port(), "", env={
        "CALLSTREAM_DATABASE_URL": postgres.new_database(),
        "CALLSTREAM_REDIS_URL": f"redis://:secret@127.0.0.1:{port}/0"})
    with pytest.raises(RuntimeError, match="server exited 1"):
        node.start()
    assert f"callstream: cannot reach Redis at 127.0.0.1:{port}" in node.log()
    assert "secret" not in node.log()
