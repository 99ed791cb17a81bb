"""The examples as the user runs them: a real subprocess each, its output read line by line."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from tests.e2e.calling import JITTER_BUFFER_MS
from tests.helpers import ServerProcess, free_port, running_server

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


@dataclass
class ExampleProcess:
    """A running example; every line it printed (stdout and stderr together)."""

    argv: list[str]
    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    times: list[float] = field(default_factory=list)  # time.monotonic() each line came
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.lock:
                self.lines.append(line.rstrip("\n"))
                self.times.append(time.monotonic())

    def output(self) -> str:
        with self.lock:
            return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        """The first printed line that matches ``pattern`` (a regex searched in each line)."""
        return self.wait_for_line(pattern, timeout)[0]

    def wait_for_line(self, pattern: str, timeout: float = 30.0) -> tuple[re.Match[str], float]:
        """Like `wait_for`, with the time.monotonic() the line was read."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for line, at in zip(self.lines, self.times, strict=True):
                    if found := regex.search(line):
                        return found, at
            if self.proc.poll() is not None and not self._reader_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"{self.argv[1:]} printed no line matching {pattern!r} within "
                             f"{timeout} s (exit {self.proc.poll()}):\n{self.output()}")

    def _reader_alive(self) -> bool:
        return any(t.name == f"example-{self.proc.pid}" and t.is_alive()
                   for t in threading.enumerate())

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextmanager
def example(*argv: str, env: dict[str, str] | None = None,
            cwd: Path = REPO) -> Iterator[ExampleProcess]:
    """Run ``argv`` (e.g. ``python examples/websockets_bot/bot.py``) until the block ends."""
    proc = subprocess.Popen(
        list(argv), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    running = ExampleProcess(list(argv), proc)
    reader = threading.Thread(target=running._read, name=f"example-{proc.pid}", daemon=True)
    reader.start()
    try:
        yield running
    finally:
        running.stop()
        reader.join(5)
        if proc.stdout is not None:
            proc.stdout.close()


def python_example(path: str, *args: str, python: str = sys.executable) -> list[str]:
    return [python, str(EXAMPLES / path), *args]


def load_example(path: str) -> ModuleType:
    """Import an example's file as a module (its pure parts are unit-tested)."""
    file = EXAMPLES / path
    spec = importlib.util.spec_from_file_location(f"example_{file.stem}", file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class AppRig:
    """The websockets bot and a server whose webhooks go to an app port: what an app test
    runs its application against."""

    server: ServerProcess
    bot: ExampleProcess
    bot_url: str
    app_port: int
    hook_url: str
    app_env: dict[str, str]  # TELNYX_API_KEY, TELNYX_PUBLIC_KEY, TELNYX_BASE_URL


@contextmanager
def app_rig(tmp_path: Path, greeting: Path, rtp_ports: tuple[int, int]) -> Iterator[AppRig]:
    app_port = free_port()
    hook_url = f"http://127.0.0.1:{app_port}/webhooks"
    env = {"CALLSTREAM_WEBHOOK_URL": hook_url, "CALLSTREAM_JITTER_BUFFER_MS": JITTER_BUFFER_MS,
           "CALLSTREAM_RTP_PORT_MIN": str(rtp_ports[0]),
           "CALLSTREAM_RTP_PORT_MAX": str(rtp_ports[1])}
    with example(*python_example("websockets_bot/bot.py", "--port", "0", "--greeting",
                                 str(greeting))) as bot, \
         running_server(tmp_path / "data", env=env) as server:
        bot_url = bot.wait_for(r"listening on (ws://\S+)").group(1)
        public_key = server.webhook_public_key()
        yield AppRig(server, bot, bot_url, app_port, hook_url,
                     {"TELNYX_API_KEY": server.api_key, "TELNYX_PUBLIC_KEY": public_key,
                      "TELNYX_BASE_URL": server.api_url})
