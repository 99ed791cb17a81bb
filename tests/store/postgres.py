"""A private PostgreSQL 15 for the tests: ``initdb`` + ``pg_ctl`` on a free loopback port.

No system service is used: the server lives in a temporary directory for the session and
each test gets a fresh database (``PostgresServer.new_database``). PostgreSQL refuses to
run as root, so as root the cluster belongs to ``nobody`` and its commands run through
``runuser``; as any other user they run as that user. Missing binaries fail the tests
loudly (``.ci/run`` installs Debian's ``postgresql``): a skip would hide the backend.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

#: Debian's postgresql 15; CALLSTREAM_TEST_PG_BIN points elsewhere.
PG_BIN = Path(os.environ.get("CALLSTREAM_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
#: The superuser the tests connect as (trust authentication on loopback only).
PG_USER = "callstream"
#: Who owns the cluster when the tests run as root.
ROOT_RUNS_AS = "nobody"
START_TIMEOUT_SECS = 60


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    directory: Path
    prefix: tuple[str, ...]  # runs a command as the cluster's owner

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://{PG_USER}@{self.host}:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        out = subprocess.run(
            [*self.prefix, str(PG_BIN / "psql"), "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1",
             "-h", self.host, "-p", str(self.port), "-U", PG_USER, "-d", database, "-c", sql],
            check=True, capture_output=True, text=True, timeout=30)
        return out.stdout.strip()

    def new_database(self) -> str:
        """A fresh empty database; returns its SQLAlchemy URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        self.psql(f"CREATE DATABASE {name}")
        return self.url(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_postgres(*, durable: bool = False) -> tuple[PostgresServer, list[str]]:
    """Start a cluster; returns it and the command that stops it.

    Tests run it without fsync (a lost test database costs nothing); ``durable`` keeps
    PostgreSQL's defaults, for benchmarks.
    """
    if not (PG_BIN / "initdb").exists() or not (PG_BIN / "pg_ctl").exists():
        pytest.fail(
            f"PostgreSQL 15 binaries not found in {PG_BIN}: install Debian's postgresql "
            "(apt-get install postgresql), or set CALLSTREAM_TEST_PG_BIN", pytrace=False)
    directory = Path(tempfile.mkdtemp(prefix="callstream-pg-"))
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0:
        owner = pwd.getpwnam(ROOT_RUNS_AS)
        os.chown(directory, owner.pw_uid, owner.pw_gid)
        prefix = ("runuser", "-u", ROOT_RUNS_AS, "--")
    data = directory / "data"
    subprocess.run(
        [*prefix, str(PG_BIN / "initdb"), "-D", str(data), "-U", PG_USER, "--auth=trust",
         "--encoding=UTF8", "--no-sync"],
        check=True, capture_output=True, timeout=START_TIMEOUT_SECS)
    port = _free_port()
    options = f"-h 127.0.0.1 -p {port} -k {directory} -c max_connections=200"
    if not durable:
        options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    subprocess.run(
        [*prefix, str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", options,
         "-l", str(directory / "postgres.log"), "-w", "-t", str(START_TIMEOUT_SECS), "start"],
        check=True, capture_output=True, timeout=START_TIMEOUT_SECS + 10)
    stop = [*prefix, str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]
    return PostgresServer("127.0.0.1", port, directory, prefix), stop


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server, stop = start_postgres()
    try:
        yield server
    finally:
        subprocess.run(stop, capture_output=True, timeout=60)
        shutil.rmtree(server.directory, ignore_errors=True)
