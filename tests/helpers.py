"""Test helpers: a real `callstream serve` process on loopback, free ports, HTTP client."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import orjson
from sqlalchemy import select

from callstream.api.auth import create_key
from callstream.config import Settings, load_settings
from callstream.store import schema
from callstream.store.sql import SqlStore
from callstream.webhooks.signing import load_signer

STARTUP_TIMEOUT = 20.0

#: Held while os.environ is patched (server_settings) or read whole (a server's process
#: environment, an HTTP client's proxy settings): servers may start in threads at once
#: (entered_together), and one's patch must not reach another's environment, outlive
#: itself, or change os.environ under an iteration.
ENVIRON_LOCK = threading.Lock()


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_udp_tcp_port() -> int:
    """A port free for both UDP and TCP (SIP listens on both)."""
    for _ in range(50):
        port = free_port()
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port")


def cli(*args: str, data_dir: Path, env: dict[str, str] | None = None) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "callstream", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=True,
    )
    return out.stdout


def workers_args() -> list[str]:
    """``--workers N`` when ``CALLSTREAM_TEST_WORKERS=N`` is set: the whole suite's servers
    run as N worker processes (README, "Tests")."""
    count = os.environ.get("CALLSTREAM_TEST_WORKERS")
    return ["--workers", count] if count else []


@dataclass
class ServerProcess:
    data_dir: Path
    http_port: int
    sip_port: int
    api_key: str
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    #: The loopback address it serves HTTP and SIP on (cluster tests use several).
    host: str = "127.0.0.1"
    #: Run in the child before it runs the server (a bench puts it in a cgroup).
    preexec: Callable[[], None] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def api_url(self) -> str:
        return self.base_url + "/v2"

    def client(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {key or self.api_key}"},
            timeout=10,
        )

    def start(self) -> None:
        self.log_path = self.data_dir / "server.log"
        with ENVIRON_LOCK:
            env = {**os.environ, **self.env}
            workers = workers_args()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable, "-m", "callstream", "serve",
                    "--data-dir", str(self.data_dir),
                    "--http", f"{self.host}:{self.http_port}",
                    "--sip", f"{self.host}:{self.sip_port}",
                    *workers,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=self.preexec,
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        # One client for every try: a new one costs ~30 ms of CPU (its TLS context), which
        # the starting server would wait for on a 2-core machine.
        with ENVIRON_LOCK:
            http = httpx.Client(base_url=self.base_url, timeout=1)
        with http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited {self.proc.returncode}:\n{self.log()}")
                with contextlib.suppress(httpx.HTTPError):
                    if http.get("/healthz").status_code == 200:
                        return
                time.sleep(0.1)
        self.proc.kill()  # else it outlives the failed test, holding its ports
        self.proc.wait()
        raise RuntimeError(f"server did not start:\n{self.log()}")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 20.0) -> int:
        """Stop it (SIGINT: live calls are hung up at once; SIGTERM drains first)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def webhook_public_key(self) -> str:
        """TELNYX_PUBLIC_KEY for its webhooks, as `callstream keys webhook` prints it."""
        return load_signer(server_settings(self.data_dir, self.env)).public_key_b64


def server_settings(data_dir: Path, env: dict[str, str] | None = None) -> Settings:
    """The settings `callstream serve --data-dir DATA_DIR` reads with ``env`` set.

    With them, the helpers below do what `callstream keys create` and `keys webhook` do
    (tests/api/test_api.py and the docs run those commands) in the test's process,
    without the 0.5 s of CPU a `callstream` process takes to start."""
    with ENVIRON_LOCK, mock.patch.dict(os.environ, env or {}):
        return load_settings(None, data_dir=data_dir)


def create_api_key(data_dir: Path, env: dict[str, str] | None = None) -> str:
    """A new API key in the store that the server opens (`callstream keys create`)."""
    settings = server_settings(data_dir, env)

    async def create() -> str:
        store = SqlStore(settings.effective_database_url, inline_sqlite=settings.sqlite_inline)
        await store.open()
        try:
            key, _ = await create_key(store)
        finally:
            await store.close()
        return key

    return asyncio.run(create())


@contextmanager
def running_server(data_dir: Path, env: dict[str, str] | None = None,
                   host: str = "127.0.0.1") -> Iterator[ServerProcess]:
    data_dir.mkdir(parents=True, exist_ok=True)
    key = create_api_key(data_dir, env)
    server = ServerProcess(data_dir, free_port(), free_udp_tcp_port(), key, env=env or {},
                           host=host)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def entered_together(*managers: AbstractContextManager[Any]) -> Iterator[list[Any]]:
    """Enter ``managers`` at once, each in a thread, and exit them all at the end.

    For a module's several servers: a start is mostly Python importing, on one core, and
    the next need not wait for it. Should one fail, those that started are stopped."""
    with ExitStack() as stack:
        with ThreadPoolExecutor(len(managers)) as pool:
            futures = [pool.submit(manager.__enter__) for manager in managers]
        values, failure = [], None
        for manager, future in zip(managers, futures, strict=True):
            try:
                values.append(future.result())
            except BaseException as exc:  # raised below, once all are seen
                failure = failure or exc
            else:
                stack.push(manager)
        if failure is not None:
            raise failure
        yield values


def stored_events(data_dir: Path) -> list[dict[str, Any]]:
    """Every webhook event in the server's outbox (read from its SQLite file)."""

    async def read() -> list[dict[str, Any]]:
        store = SqlStore(f"sqlite+aiosqlite:///{data_dir / 'callstream.db'}")
        await store.open()
        try:
            async with store.reading() as conn:
                rows = (await conn.execute(select(schema.webhook_outbox.c.data))).all()
        finally:
            await store.close()
        return [orjson.loads(r.data) for r in rows]

    return asyncio.run(read())


def raw_invite(sock: socket.socket, target: tuple[str, int], user: str,
               media_port: int = 9) -> bytes:
    """A minimal INVITE (PCMU offer) from ``sock``'s address, with fresh ids each time."""
    host, port = sock.getsockname()
    sdp = (f"v=0\r\no=raw 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
           f"m=audio {media_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n").encode()
    head = (
        f"INVITE sip:{user}@{target[0]}:{target[1]} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK{secrets.token_hex(8)}\r\n"
        f"From: <sip:+15550009999@{host}:{port}>;tag={secrets.token_hex(4)}\r\n"
        f"To: <sip:{user}@{target[0]}:{target[1]}>\r\n"
        f"Call-ID: {secrets.token_hex(10)}@{host}\r\n"
        "CSeq: 1 INVITE\r\n"
        f"Contact: <sip:raw@{host}:{port}>\r\n"
        "Max-Forwards: 70\r\n"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {len(sdp)}\r\n\r\n"
    )
    return head.encode() + sdp


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything a stream socket receives until the peer closes (or resets) it."""
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return data
