"""A private Redis for each test: ``redis-server`` on a free loopback port, no disk.

No system service is used. A missing ``redis-server`` fails the tests loudly (``.ci/run``
installs Debian's ``redis-server``): a skip would hide the cluster code.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

START_TIMEOUT_SECS = 20.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def private_redis() -> Iterator[str]:
    """A fresh, empty ``redis://127.0.0.1:PORT/0`` while the block runs."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server not found: install Debian's redis-server "
                    "(apt-get install redis-server)", pytrace=False)
    directory = Path(tempfile.mkdtemp(prefix="callstream-redis-"))
    port = _free_port()
    with (directory / "redis.log").open("wb") as log:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(directory), "--daemonize", "no"],
            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECS
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start:\n"
                                       + (directory / "redis.log").read_text()) from None
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A private Redis for this test (:func:`private_redis`)."""
    with private_redis() as url:
        yield url
