"""What a doc's snippets run against: a real `callstream serve`, its ports and environment.

A *shared* world is a doc file's: the server every doc shares (most blocks talk to a server
that is already running; started once, it spares the suite a start per doc), with the
doc's own working directory and example-app ports. A block that starts its own
`callstream serve` gets a *fresh* world instead:
free ports and an empty data directory, and no server until the block starts one.
Either way a block runs in a temporary directory that holds links to the checkout's
`examples/`, `bench/`, `callstream/` and `docs/`, so relative paths in the docs resolve
and nothing the block writes (`--record reply.wav`, `./callstream-data`) lands in the
checkout.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.docs.shell import Ports
from tests.docs.snippets import REPO
from tests.helpers import ServerProcess, free_port, free_udp_tcp_port, running_server

LINKED = ("examples", "bench", "callstream", "docs", "pyproject.toml")
CALL_TIMEOUT_SECS = 60  # for the helper call to reach the server and be answered
CALL_DURATION_SECS = 120  # the helper call hangs up by itself after this
ANSWER_POLL_SECS = 0.2


@dataclass
class World:
    ports: Ports
    cwd: Path
    env: dict[str, str]
    server: ServerProcess | None = None

    @contextlib.contextmanager
    def live_call(self) -> Iterator[str]:
        """An answered incoming call on this world's server (its call_control_id).

        Placed with `callstream call` (playing the bundled caller recording), answered by
        the world's answering machine, hung up afterwards.
        """
        server = self.server
        assert server is not None, "a live call needs the doc's server"
        with server.client() as http:
            before = {c["call_control_id"] for c in http.get("/v2/calls").json()["data"]}
            caller = subprocess.Popen(
                [sys.executable, "-m", "callstream", "call",
                 f"sip:docs@127.0.0.1:{server.sip_port}",
                 "--play", str(REPO / "callstream" / "demo" / "audio" / "caller.wav"),
                 "--duration", str(CALL_DURATION_SECS)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                call_id = None
                deadline = time.monotonic() + CALL_TIMEOUT_SECS
                while call_id is None and time.monotonic() < deadline:
                    calls = http.get("/v2/calls").json()["data"]
                    up = [c["call_control_id"] for c in calls
                          if c["state"] == "answered" and c["call_control_id"] not in before]
                    call_id = up[0] if up else None
                    if call_id is None:
                        time.sleep(0.2)
                assert call_id is not None, f"the helper call was not answered:\n{server.log()}"
                yield call_id
                with contextlib.suppress(httpx.HTTPError):
                    http.post(f"/v2/calls/{call_id}/actions/hangup", json={})
            finally:
                caller.terminate()
                caller.wait(20)


class AnsweringMachine:
    """Answers every parked incoming call over the REST API, as the reader's app would.

    The docs' own blocks place calls (`callstream call sip:...@127.0.0.1:5060`) and
    expect them answered; the server alone parks them (no webhook URL).
    """

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="answering-machine",
                                       daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with self.server.client() as http:
            while not self.stopping.wait(ANSWER_POLL_SECS):
                with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
                    for call in http.get("/v2/calls").json()["data"]:
                        if call["state"] == "parked" and call["direction"] == "incoming":
                            http.post(f"/v2/calls/{call['call_control_id']}/actions/answer",
                                      json={})

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=10)


def _workdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name in LINKED:
        (path / name).symlink_to(REPO / name)
    return path


def _environment(data_dir: Path | str, ports: Ports, api_key: str | None,
                 public_key: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CALLSTREAM_", "TELNYX_"))}
    env.update({
        "CALLSTREAM_DATA_DIR": str(data_dir),
        "CALLSTREAM_HTTP": f"127.0.0.1:{ports.http}",
        "CALLSTREAM_SIP": f"127.0.0.1:{ports.sip}",
        "TELNYX_BASE_URL": f"http://127.0.0.1:{ports.http}/v2",
        "PYTHONPATH": str(REPO),
        "PYTHONUNBUFFERED": "1",
    })
    if api_key is not None:
        env["TELNYX_API_KEY"] = env["KEY"] = api_key
    if public_key is not None:
        env["TELNYX_PUBLIC_KEY"] = public_key
    return env


class Worlds:
    """The docs' shared server and each doc's world on it, and fresh worlds."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.count = 0
        self.current: tuple[str, World] | None = None
        self._server: ServerProcess | None = None
        self._stack = ExitStack()

    def _dir(self, name: str) -> Path:
        self.count += 1
        return self.root / f"{self.count:03d}-{name.replace('/', '_')}"

    def _shared_server(self) -> ServerProcess:
        if self._server is None:
            self._server = self._stack.enter_context(
                running_server(self.root / "shared-server"))
            self._stack.callback(AnsweringMachine(self._server).stop)
        return self._server

    def shared(self, doc: str) -> World:
        if self.current and self.current[0] == doc:
            return self.current[1]
        server = self._shared_server()
        ports = Ports(server.http_port, server.sip_port, free_port(), free_port())
        public_key = server.webhook_public_key()
        world = World(ports, _workdir(self._dir(doc) / "cwd"),
                      _environment(server.data_dir, ports, server.api_key, public_key),
                      server)
        self.current = (doc, world)
        return world

    def fresh(self, name: str) -> World:
        """Free ports, a relative ./callstream-data (the documented default), no server."""
        ports = Ports(free_port(), free_udp_tcp_port(), free_port(), free_port())
        return World(ports, _workdir(self._dir(name) / "cwd"),
                     _environment("callstream-data", ports, None, None))

    def close(self) -> None:
        self.current = None
        self._server = None
        self._stack.close()
