"""Two `callstream serve` nodes behind the shipped Kamailio front (deploy/kamailio).

SIPp calls go through the front; the nodes are on their own loopback addresses
(127.0.0.2, 127.0.0.3), so the media address in each answer and the node that owns each
call can be told apart from the front's (127.0.0.1)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.audio import tone
from tests.e2e.calling import speech_pcap
from tests.e2e.sipp import DATA, sipp
from tests.helpers import ServerProcess, free_udp_tcp_port, running_server
from tests.kamailio import Front, kamailio_front, sip_request
from tests.receiver import Receiver, webhook_receiver

pytestmark = pytest.mark.slow

NODE_HOSTS = ("127.0.0.2", "127.0.0.3")
#: A caller outside the front's allow-list.
OUTSIDER = "127.0.0.9"


@dataclass
class Node:
    server: ServerProcess
    hooks: Receiver

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def sip_uri(self) -> str:
        return f"sip:{self.host}:{self.server.sip_port}"

    def call_ids(self, event_type: str = "call.initiated") -> set[str]:
        return {d.payload["call_control_id"] for d in self.hooks.events(event_type)}


@dataclass
class Cluster:
    front: Front
    nodes: list[Node]
    workdir: Path
    stop: threading.Event = field(default_factory=threading.Event)

    def node_at(self, host: str) -> Node:
        (node,) = [n for n in self.nodes if n.host == host]
        return node

    def wait_up(self, node: Node, after: int) -> int:
        return self.front.wait_log(f"callstream node {node.sip_uri} is up", after=after)

    def wait_down(self, node: Node, after: int) -> int:
        return self.front.wait_log(f"callstream node {node.sip_uri} is down", after=after)


def _answer_everything(cluster: Cluster) -> None:
    """The application: answers every call any node parks (via that node's API)."""
    answered: set[str] = set()
    while not cluster.stop.is_set():
        for node in cluster.nodes:
            for ccid in node.call_ids() - answered:
                answered.add(ccid)
                # A node killed or drained meanwhile: the test says so.
                with node.server.client() as client, contextlib.suppress(httpx.HTTPError):
                    client.post(f"/v2/calls/{ccid}/actions/answer", json={})
        time.sleep(0.05)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("front")
    speech_pcap(root / "speech.pcap", tone(440, 1.0), "PCMU")
    with (webhook_receiver() as hooks_a, webhook_receiver() as hooks_b,
          running_server(root / "a", _node_env(hooks_a, 34000), NODE_HOSTS[0]) as a,
          running_server(root / "b", _node_env(hooks_b, 35000), NODE_HOSTS[1]) as b,
          kamailio_front(root / "kamailio", [f"{s.host}:{s.sip_port}" for s in (a, b)],
                         ["127.0.0.1"]) as front):
        cluster = Cluster(front, [Node(a, hooks_a), Node(b, hooks_b)], root)
        answerer = threading.Thread(target=_answer_everything, args=(cluster,), daemon=True)
        answerer.start()
        try:
            yield cluster
        finally:
            cluster.stop.set()
            answerer.join(5)


def _node_env(hooks: Receiver, rtp: int) -> dict[str, str]:
    return {"CALLSTREAM_WEBHOOK_URL": hooks.url,
            "CALLSTREAM_RTP_PORT_MIN": str(rtp), "CALLSTREAM_RTP_PORT_MAX": str(rtp + 999),
            "CALLSTREAM_DRAIN_TIMEOUT_SECS": "60"}


def call_through(cluster: Cluster, calls: int, hold_ms: int, name: str,
                 scenario: str = "uac_front.xml") -> subprocess.Popen[bytes]:
    """SIPp places ``calls`` calls through the front, ``hold_ms`` each, 5 a second."""
    workdir = cluster.workdir / name
    workdir.mkdir()
    (workdir / "speech.pcap").symlink_to(cluster.workdir / "speech.pcap")
    return sipp("-sf", str(DATA / scenario), "-i", "127.0.0.1",
                "-p", str(free_udp_tcp_port()), "-mp", str(free_udp_tcp_port()),
                "-m", str(calls), "-l", str(calls), "-r", "5", "-d", str(hold_ms),
                "-s", "+15550002222", "-trace_logs", cluster.front.target,
                cwd=workdir, timeout=60)


def finished(proc: subprocess.Popen[bytes], timeout: float = 70.0) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


def media_addresses(cluster: Cluster, name: str) -> list[str]:
    """The SDP c= address of every answer SIPp got (its -trace_logs)."""
    logs = "".join(p.read_text() for p in (cluster.workdir / name).glob("*_logs.log"))
    return re.findall(r"^media c=IN IP4 ([0-9.]+) call ", logs, re.MULTILINE)


def hangups(node: Node, ccids: set[str], timeout: float = 20.0) -> dict[str, dict[str, object]]:
    """The call.hangup payload of each of ``ccids`` (waiting for them)."""
    deadline = time.monotonic() + timeout
    while True:
        found = {d.payload["call_control_id"]: d.payload
                 for d in node.hooks.events("call.hangup")}
        if ccids <= found.keys() or time.monotonic() > deadline:
            return {c: found[c] for c in ccids if c in found}
        time.sleep(0.1)


def test_calls_spread_by_call_id_bye_reaches_owner_and_media_goes_direct(
        cluster: Cluster) -> None:
    before = {node.host: node.call_ids() for node in cluster.nodes}
    proc = call_through(cluster, 12, 1500, "spread")
    assert finished(proc) == 0, cluster.front.log()[-4000:]
    new = {node.host: node.call_ids() - before[node.host] for node in cluster.nodes}
    assert sum(len(c) for c in new.values()) == 12
    assert all(new.values()), f"every call went to one node: {new}"
    # The answer's media address is the owning node's, never the front's.
    addresses = media_addresses(cluster, "spread")
    assert len(addresses) == 12
    assert sorted(addresses) == sorted(h for h, c in new.items() for _ in c)
    for node in cluster.nodes:
        ended = hangups(node, new[node.host])
        assert ended.keys() == new[node.host]
        for payload in ended.values():
            # The caller's BYE, routed by the front, reached the owner; the caller's
            # RTP reached it straight (the front carries no media).
            assert payload["hangup_source"] == "caller", payload
            quality = payload["call_quality_stats"]
            assert int(quality["inbound"]["packet_count"]) > 0, payload  # type: ignore[index]


def test_the_nodes_bye_goes_back_through_the_front(cluster: Cluster) -> None:
    """The application hangs up: the owning node sends its BYE along the route set the
    front recorded, so the caller gets it from the front (whose Via is on top)."""
    before = {node.host: node.call_ids() for node in cluster.nodes}
    proc = call_through(cluster, 1, 0, "hung-up", "uac_front_hung_up.xml")
    deadline = time.monotonic() + 20
    while not any(n.call_ids() - before[n.host] for n in cluster.nodes):
        assert time.monotonic() < deadline, "the call never arrived"
        time.sleep(0.1)
    (owner,) = [n for n in cluster.nodes if n.call_ids() - before[n.host]]
    (ccid,) = owner.call_ids() - before[owner.host]
    owner.hooks.wait_event("call.answered", ccid)
    with owner.server.client() as client:
        assert client.post(f"/v2/calls/{ccid}/actions/hangup", json={}).status_code == 200
    assert finished(proc) == 0
    (payload,) = hangups(owner, {ccid}).values()
    assert payload["hangup_source"] == "callee", payload
    logs = "".join(p.read_text() for p in (cluster.workdir / "hung-up").glob("*_logs.log"))
    first_via = logs.split("bye ", 1)[1].splitlines()[0]
    assert first_via == f"Via: SIP/2.0/UDP {cluster.front.target}", logs


def test_source_outside_the_allow_list_gets_403_from_the_front(cluster: Cluster) -> None:
    before = [node.call_ids() for node in cluster.nodes]
    for method in ("INVITE", "OPTIONS"):
        assert sip_request(cluster.front.host, cluster.front.port, method, OUTSIDER,
                           5.0) == "SIP/2.0 403 Forbidden"
    assert f"INVITE from {OUTSIDER}" in cluster.front.log()
    assert [node.call_ids() for node in cluster.nodes] == before


def test_the_front_limits_hops_and_methods(cluster: Cluster) -> None:
    front = cluster.front
    assert sip_request(front.host, front.port, "INVITE", "127.0.0.1", 5.0,
                       max_forwards=0) == "SIP/2.0 483 Too Many Hops"
    assert sip_request(front.host, front.port, "MESSAGE", "127.0.0.1",
                       5.0) == "SIP/2.0 405 Method Not Allowed"


def test_drain_fails_new_calls_over_lets_the_live_one_finish_then_exits(
        cluster: Cluster) -> None:
    mark = len(cluster.front.log())
    before = {node.host: node.call_ids() for node in cluster.nodes}
    live = call_through(cluster, 1, 12_000, "live")
    deadline = time.monotonic() + 20
    while not any(n.call_ids() - before[n.host] for n in cluster.nodes):
        assert time.monotonic() < deadline, "the live call never arrived"
        time.sleep(0.1)
    (owner,) = [n for n in cluster.nodes if n.call_ids() - before[n.host]]
    (other,) = [n for n in cluster.nodes if n is not owner]
    (live_id,) = owner.call_ids() - before[owner.host]
    owner.hooks.wait_event("call.answered", live_id)
    drain = subprocess.Popen(
        [sys.executable, "-m", "callstream", "drain", "--data-dir", str(owner.server.data_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, **owner.server.env})
    try:
        # The front's probe gets 503 from the draining node (still up, its call live)
        # and takes it out.
        mark = cluster.wait_down(owner, mark)
        assert owner.server.proc is not None and owner.server.proc.poll() is None, (
            "the front took the node out only once it had exited")
        on_owner = owner.call_ids()
        on_other = other.call_ids()
        proc = call_through(cluster, 6, 500, "after-drain")
        assert finished(proc) == 0, cluster.front.log()[-4000:]
        assert owner.call_ids() == on_owner, "a new call reached the draining node"
        assert len(other.call_ids() - on_other) == 6
        assert owner.server.proc.poll() is None, (
            "the draining node left before its live call ended")
        # The live call ends on its own (the caller's BYE); then the node exits 0.
        assert finished(live) == 0
        out, _ = drain.communicate(timeout=60)
    finally:
        for child in (drain, live):
            if child.poll() is None:
                child.kill()
                child.communicate()
    assert drain.returncode == 0, out
    assert f"pid {owner.server.proc.pid} has exited" in out
    assert owner.server.proc.wait(10) == 0, owner.server.log()
    (payload,) = hangups(owner, {live_id}).values()
    assert payload["hangup_source"] == "caller"
    assert len([d for d in owner.hooks.events("call.hangup")
                if d.payload["call_control_id"] == live_id]) == 1
    assert "draining: new calls get SIP 503" in owner.server.log()
    owner.server.start()  # back in service: the front's probe sees 200 again
    cluster.wait_up(owner, mark)


def test_killed_node_is_taken_out_and_new_calls_go_to_the_survivor(cluster: Cluster) -> None:
    mark = len(cluster.front.log())
    victim, survivor = cluster.nodes
    assert victim.server.proc is not None
    victim.server.proc.send_signal(signal.SIGKILL)
    victim.server.proc.wait(10)
    mark = cluster.wait_down(victim, mark)
    on_survivor = survivor.call_ids()
    proc = call_through(cluster, 6, 500, "after-kill")
    assert finished(proc) == 0, cluster.front.log()[-4000:]
    assert len(survivor.call_ids() - on_survivor) == 6
    victim.server.start()
    cluster.wait_up(victim, mark)
