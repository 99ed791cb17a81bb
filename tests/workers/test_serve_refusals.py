"""`callstream serve --workers N` refuses what it cannot run, in one line, before it
binds anything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize(("env", "message"), [
    ({"CALLSTREAM_RTP_PORT_MIN": "20000", "CALLSTREAM_RTP_PORT_MAX": "20005"},
     "the RTP port range 20000-20005 is too small for 2 workers"),
    ({"CALLSTREAM_DATABASE_URL": "postgresql+asyncpg://u@127.0.0.1/x"},
     "--workers shares one SQLite store"),
])
def test_serve_with_workers_refuses(tmp_path: Path, env: dict[str, str], message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "callstream", "serve", "--workers", "2", "--data-dir",
         str(tmp_path), "--http", "127.0.0.1:0", "--sip", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=60, env={**os.environ, **env}, check=False)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith(f"callstream: {message}")
