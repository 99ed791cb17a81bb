"""`callstream drain` against a real `callstream serve` (the call-level behaviour, behind
Kamailio, is tests/e2e/test_front.py's; the deadline's, tests/e2e/test_shutdown.py's)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.e2e.sipp import uac
from tests.helpers import ServerProcess, free_udp_tcp_port, running_server
from tests.kamailio import sip_request


def drain(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "callstream", "drain", "--data-dir", str(data_dir), *args],
        capture_output=True, text=True, timeout=90, env=dict(os.environ))


def test_drain_without_a_running_node_says_so(tmp_path: Path) -> None:
    result = drain(tmp_path)
    assert result.returncode == 1
    assert "callstream: no callstream serve is running on" in result.stderr


def test_drain_of_an_idle_node_exits_at_once(tmp_path: Path) -> None:
    with running_server(tmp_path / "d") as server:
        assert server.proc is not None
        result = drain(server.data_dir)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == [
            f"draining pid {server.proc.pid}: no new calls; live calls have 30 s to end",
            f"pid {server.proc.pid} has exited",
        ]
        assert server.proc.wait(10) == 0
        log = server.log()
        assert "draining: new calls get SIP 503 (INVITE and OPTIONS); 0 live calls" in log
        assert "drain: no live calls left" in log
        assert drain(server.data_dir).returncode == 1  # gone: nothing to drain


def test_a_draining_node_answers_503_until_its_last_call_is_hung_up_at_the_deadline(
        tmp_path: Path) -> None:
    # The checks below take well under a second of the drain's 3.
    with running_server(tmp_path / "d", env={"CALLSTREAM_DRAIN_TIMEOUT_SECS": "3"}) as server:
        assert server.proc is not None
        sip = ("127.0.0.1", server.sip_port)
        assert sip_request(*sip, "OPTIONS", "127.0.0.1", 5.0).startswith("SIP/2.0 200")
        # A call that stays parked (no application answers it) holds the drain open.
        caller = uac(f"127.0.0.1:{server.sip_port}", "uac_answered.xml", cwd=tmp_path,
                     local_port=free_udp_tcp_port(), media_port=free_udp_tcp_port())
        try:
            wait_for_log(server, "received from")
            result = drain(server.data_dir, "--no-wait")
            assert result.returncode == 0, result.stderr
            wait_for_log(server, "draining: new calls get SIP 503")
            assert sip_request(*sip, "OPTIONS", "127.0.0.1", 5.0) == (
                "SIP/2.0 503 Service Unavailable")
            assert sip_request(*sip, "INVITE", "127.0.0.1", 5.0) == (
                "SIP/2.0 503 Service Unavailable")
            with server.client() as client:  # nor does it dial out
                dial = client.post("/v2/calls", json={
                    "connection_id": "default", "to": "sip:bob@127.0.0.1:9",
                    "from": "+15550004444"})
            assert dial.status_code == 503, dial.text
            assert dial.json()["errors"][0]["code"] == "10007"
            assert server.proc.poll() is None  # still draining: its call is live
            assert server.proc.wait(30) == 0
        finally:
            if caller.poll() is None:
                caller.kill()
            caller.wait()
        log = server.log()
        assert "drain: 1 calls still live after 3 s; hanging them up" in log
        assert "never answered" in log


def wait_for_log(server: ServerProcess, text: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in server.log():
        assert time.monotonic() < deadline, f"never logged {text!r}:\n{server.log()}"
        time.sleep(0.1)


def test_a_second_sigterm_ends_the_drain_at_once(tmp_path: Path) -> None:
    with running_server(tmp_path / "d", env={"CALLSTREAM_DRAIN_TIMEOUT_SECS": "300"}) as server:
        assert server.proc is not None
        caller = uac(f"127.0.0.1:{server.sip_port}", "uac_answered.xml", cwd=tmp_path,
                     local_port=free_udp_tcp_port(), media_port=free_udp_tcp_port())
        try:
            wait_for_log(server, "received from")
            server.proc.send_signal(signal.SIGTERM)
            wait_for_log(server, "draining: new calls get SIP 503")
            server.proc.send_signal(signal.SIGTERM)
            assert server.proc.wait(30) == 0
        finally:
            if caller.poll() is None:
                caller.kill()
            caller.wait()
        assert re.search(r"drain: 1 calls still live after \d+ s; hanging them up",
                         server.log())
