"""A server that talks (issue 16, item 4): what `callstream serve` logs at info, read from
its own log file, for real calls (SIPp and `callstream call`), a real WebSocket consumer,
real UDP fork receivers and real (or missing) webhook receivers."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.e2e.calling import run_caller
from tests.e2e.conftest import Rig, make_rig
from tests.e2e.sipp import uac, uas, wait_bound
from tests.helpers import (
    ServerProcess,
    entered_together,
    free_port,
    free_udp_tcp_port,
    running_server,
)
from tests.receiver import Receiver, webhook_receiver
from tests.ws_consumer import ws_consumer

pytestmark = pytest.mark.slow

LOG_TIMEOUT = 30.0


def wait_log(server: ServerProcess, pattern: str, timeout: float = LOG_TIMEOUT,
             after: int = 0) -> re.Match[str]:
    """The first match of ``pattern`` in the server's log (from offset ``after``), waiting
    for it to appear."""
    deadline = time.monotonic() + timeout
    while True:
        found = re.compile(pattern, re.MULTILINE).search(server.log(), after)
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"no log line like {pattern!r} in:\n{server.log()}")
        time.sleep(0.1)


def info_line(server: ServerProcess, pattern: str) -> str:
    """The whole INFO line matching ``pattern`` (waiting for it)."""
    return wait_log(server, rf"^.* INFO +\S+: .*{pattern}.*$").group(0)


@dataclass
class Servers:
    """The module's servers, one per configuration, all started at once."""

    rig: Rig  # webhooks to a receiver
    unhooked: ServerProcess  # no webhook URL
    late: ServerProcess  # webhooks to late_url, where nothing listens yet
    late_url: str
    late_port: int
    json: ServerProcess  # CALLSTREAM_LOG_FORMAT=json, webhooks to json_hooks
    json_hooks: Receiver


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    late_port = free_port()  # the receiver starts there only later
    late_url = f"http://127.0.0.1:{late_port}/webhooks"
    with webhook_receiver() as json_hooks, entered_together(
        make_rig(tmp_path_factory.mktemp("e2e-log"), (36000, 36499)),
        running_server(tmp_path_factory.mktemp("unhooked")),
        # Retries every half second (not 1, 2, 4 ... s): the backlog goes out soon after
        # the receiver starts.
        running_server(tmp_path_factory.mktemp("late"), env={
            "CALLSTREAM_WEBHOOK_URL": late_url,
            "CALLSTREAM_WEBHOOK_RETRY_DELAYS": str([0.5] * 8)}),
        running_server(tmp_path_factory.mktemp("json"), env={
            "CALLSTREAM_WEBHOOK_URL": json_hooks.url, "CALLSTREAM_LOG_FORMAT": "json"}),
    ) as (rig, unhooked, late, json_server):
        yield Servers(rig, unhooked, late, late_url, late_port, json_server, json_hooks)


@pytest.fixture(scope="module")
def rig(servers: Servers) -> Rig:
    return servers.rig


def test_an_incoming_call_with_a_stream_and_a_fork_is_told_line_by_line(rig: Rig) -> None:
    sipp_port = free_udp_tcp_port()
    fork_rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    fork_rx.bind(("127.0.0.1", 0))
    fork_tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    fork_tx.bind(("127.0.0.1", 0))
    with ws_consumer() as consumer, fork_rx, fork_tx:
        # SIPp holds the answered call 4 s, then hangs up: the stream's and the fork's
        # starts and stops below take about 1 s of it.
        proc = uac(rig.sip_target, "uac_answered.xml", cwd=rig.workdir, local_port=sipp_port,
                   media_port=free_udp_tcp_port(), hold_ms=4000, service="+15550004444")
        try:
            initiated = rig.hooks.wait_for(
                lambda d: d.event_type == "call.initiated"
                and d.payload.get("to") == "+15550004444")
            ccid = initiated.payload["call_control_id"]
            received = info_line(rig.server, f"call {re.escape(ccid)}: received from ")
            assert "sip:+15550001111@127.0.0.1" in received
            assert "to sip:+15550004444@127.0.0.1" in received
            assert f"(SIP UDP from 127.0.0.1:{sipp_port}, codec PCMU/8000)" in received

            rig.sdk.calls.actions.answer(ccid, stream_url=consumer.url,
                                         stream_track="both_tracks")
            rig.hooks.wait_event("call.answered", ccid)
            answered = info_line(rig.server, f"call {re.escape(ccid)}: answered ")
            assert "(incoming, +15550001111 to +15550004444, codec PCMU/8000)" in answered
            started = rig.hooks.wait_event("streaming.started", ccid)
            stream_id = started.payload["stream_id"]
            connected = info_line(rig.server, f"call {re.escape(ccid)}: stream "
                                  f"{re.escape(stream_id)} connected to ")
            assert consumer.url in connected and "(both_tracks track)" in connected

            rx, tx = fork_rx.getsockname()[1], fork_tx.getsockname()[1]
            rig.sdk.calls.actions.start_forking(ccid, rx=f"udp:127.0.0.1:{rx}",
                                                tx=f"udp:127.0.0.1:{tx}")
            rig.hooks.wait_event("call.fork.started", ccid)
            fork = info_line(rig.server, f"call {re.escape(ccid)}: fork started ")
            assert f"rx to 127.0.0.1:{rx}, tx to 127.0.0.1:{tx}" in fork
            rig.sdk.calls.actions.stop_forking(ccid)
            rig.hooks.wait_event("call.fork.stopped", ccid)
            assert re.search(r"fork stopped \(fork_stop\): rx \d+ packets, 0 dropped; "
                             r"tx \d+ packets, 0 dropped",
                             info_line(rig.server, f"call {re.escape(ccid)}: fork stopped"))

            rig.sdk.calls.actions.stop_streaming(ccid)
            rig.hooks.wait_event("streaming.stopped", ccid)
            info_line(rig.server, f"call {re.escape(ccid)}: stream {re.escape(stream_id)} "
                      r"stopped \(streaming_stop\)$")

            rig.hooks.wait_event("call.hangup", ccid, timeout=40)
            info_line(rig.server, f"call {re.escape(ccid)}: ended: normal_clearing, hung up "
                      r"by caller \(SIP 200\)$")
        finally:
            proc.wait(60)


def test_an_outgoing_call_is_told_dialled_ringing_answered_ended(rig: Rig) -> None:
    """...and what the hangup stopped: its stream and its fork."""
    port = free_udp_tcp_port()
    proc = uas("uas_basic.xml", cwd=rig.workdir, port=port, media_port=free_udp_tcp_port())
    fork_rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    fork_rx.bind(("127.0.0.1", 0))
    with contextlib.ExitStack() as stack:
        consumer = stack.enter_context(ws_consumer())
        stack.enter_context(fork_rx)
        stack.callback(proc.wait, 60)
        wait_bound(port)  # SIPp binds its port
        call = rig.sdk.calls.dial(connection_id="default", to=f"sip:bob@127.0.0.1:{port}",
                                  from_="+15550005555")
        assert call.data is not None and call.data.call_control_id
        ccid = call.data.call_control_id
        rig.hooks.wait_event("call.answered", ccid)
        dialling = info_line(rig.server, f"call {re.escape(ccid)}: dialling ")
        assert (f"dialling sip:bob@127.0.0.1:{port} from sip:+15550005555@callstream.invalid"
                in dialling)
        info_line(rig.server, rf"call {re.escape(ccid)}: ringing \(180 Ringing\)$")
        info_line(rig.server, rf"call {re.escape(ccid)}: answered \(outgoing, ")
        rig.sdk.calls.actions.start_streaming(ccid, stream_url=consumer.url)
        stream_id = rig.hooks.wait_event("streaming.started", ccid).payload["stream_id"]
        rx = fork_rx.getsockname()[1]
        rig.sdk.calls.actions.start_forking(ccid, rx=f"udp:127.0.0.1:{rx}",
                                            tx=f"udp:127.0.0.1:{rx}")
        rig.hooks.wait_event("call.fork.started", ccid)
        rig.sdk.calls.actions.hangup(ccid)
        rig.hooks.wait_event("call.hangup", ccid)
        info_line(rig.server, f"call {re.escape(ccid)}: stream {re.escape(stream_id)} "
                  r"stopped \(hangup\)$")
        info_line(rig.server, rf"call {re.escape(ccid)}: fork stopped \(hangup\): ")
        info_line(rig.server, f"call {re.escape(ccid)}: ended: normal_clearing, hung up by "
                  r"caller \(SIP 200\)$")


def test_a_stream_that_cannot_connect_is_told_with_its_reason(rig: Rig) -> None:
    closed = free_port()  # nothing listens there
    port = free_udp_tcp_port()
    proc = uas("uas_basic.xml", cwd=rig.workdir, port=port, media_port=free_udp_tcp_port())
    try:
        wait_bound(port)
        call = rig.sdk.calls.dial(connection_id="default", to=f"sip:carol@127.0.0.1:{port}",
                                  from_="+15550006666")
        assert call.data is not None and call.data.call_control_id
        ccid = call.data.call_control_id
        rig.hooks.wait_event("call.answered", ccid)
        url = f"ws://127.0.0.1:{closed}/media"
        rig.sdk.calls.actions.start_streaming(ccid, stream_url=url)
        failed = rig.hooks.wait_event("streaming.failed", ccid)
        stream_id = failed.payload["stream_id"]
        line = info_line(rig.server, f"call {re.escape(ccid)}: stream {re.escape(stream_id)} "
                         "failed: connection_failed ")
        assert f"(cannot connect to {url}: connection refused (nothing listens there))" in line
        with ws_consumer() as dying:
            dying.die_after = 2  # connected, start: then the socket drops without a close
            rig.sdk.calls.actions.start_streaming(ccid, stream_url=dying.url)
            lost = rig.hooks.wait_for(
                lambda d: d.event_type == "streaming.failed"
                and d.payload.get("failure_reason") == "connection_lost")
            info_line(rig.server, f"call {re.escape(ccid)}: stream "
                      f"{re.escape(lost.payload['stream_id'])} failed: connection_lost "
                      r"\(consumer's socket closed with 1006\)$")
        rig.sdk.calls.actions.hangup(ccid)
        rig.hooks.wait_event("call.hangup", ccid)
    finally:
        proc.wait(60)


def test_no_webhook_url_is_warned_at_start_and_each_event_given_up_names_it(
        servers: Servers) -> None:
    server = servers.unhooked
    wait_log(server, r"WARNING .*the default application has no webhook URL: calls will "
             r"park unanswered \(480 after 60 s\): set CALLSTREAM_WEBHOOK_URL")
    code, summary, err = run_caller(f"127.0.0.1:{server.sip_port}", "--timeout", "1",
                                    "--quiet", timeout=60)
    assert code == 1, (summary, err)
    found = wait_log(server, r"WARNING .*webhook \S+ \(call\.initiated of call (\S+)\) to "
                     r"\(no URL\) given up after 1 attempts: no webhook URL configured")
    info_line(server, f"call {re.escape(found.group(1))}: received from ")


def test_a_late_receiver_is_warned_about_and_gets_the_backlog_in_order(
        servers: Servers) -> None:
    server, url, hooks_port = servers.late, servers.late_url, servers.late_port
    wait_log(server, rf"WARNING .*webhook URL {re.escape(url)} of the default application: "
             r"connection refused: calls will park unanswered \(480 after 60 s\) until "
             r"something answers there")
    code, summary, _ = run_caller(f"127.0.0.1:{server.sip_port}", "--timeout", "1",
                                  "--quiet", timeout=60)
    assert code == 1, summary  # nobody answered it
    failed = info_line(server, r"\(call\.initiated of call \S+\) attempt 1 to "
                       f"{re.escape(url)} failed: ")
    assert re.search(r"connection refused.*; next try in \d+\.\d+ s", failed, re.I), failed
    # A restart finds the backlog and says so.
    server.stop()
    restarted = len(server.log())
    server.start()
    backlog = wait_log(server, rf"WARNING .*(\d+) webhooks pending for {re.escape(url)} "
                       r"\(oldest (\d+) s old\): they are delivered in order once it "
                       r"answers, those of calls that have since ended included",
                       after=restarted)
    assert int(backlog.group(1)) == 2  # call.initiated and call.hangup
    # "Delivered again" is said by the process that saw the failures: let this one
    # fail once before the receiver starts (its first retry may come before or after).
    wait_log(server, rf"^.* INFO +\S+: .*attempt \d+ to {re.escape(url)} failed: ",
             after=restarted)
    with webhook_receiver(hooks_port) as hooks:
        first = hooks.wait_event("call.initiated", timeout=60)
        hangup = hooks.wait_event("call.hangup", timeout=60)
        assert first.payload["call_control_id"] == hangup.payload["call_control_id"]
        assert [d.event_type for d in hooks.events()][:2] == ["call.initiated",
                                                             "call.hangup"]
        recovered = info_line(server, f"webhooks to {re.escape(url)} delivered again "
                              r"after \d+ failed attempts; this call\.initiated is \d+ s old")
        assert recovered


def test_json_log_lines_carry_the_call_control_id(servers: Servers) -> None:
    server, hooks = servers.json, servers.json_hooks
    code, _, _ = run_caller(f"127.0.0.1:{server.sip_port}", "--timeout", "1", "--quiet",
                            timeout=60)
    assert code == 1
    ccid = hooks.wait_event("call.initiated").payload["call_control_id"]
    hooks.wait_event("call.hangup", ccid)
    wait_log(server, f'"msg":"call {re.escape(ccid)}: ended: ')
    lines = [json.loads(line) for line in server.log().splitlines()
             if line.startswith("{")]
    ours = [line for line in lines if line.get("call_control_id") == ccid]
    messages = [line["msg"].split(": ", 1)[1] for line in ours]
    assert messages[0].startswith("received from "), messages
    assert messages[-1] == "ended: originator_cancel, hung up by caller (SIP 487), never "\
        "answered", messages
    assert all(line["level"] == "info" for line in ours)
