from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.redis_server import redis_url  # noqa: F401 - a private Redis per test
from tests.helpers import ServerProcess, running_server
from tests.store.postgres import postgres  # noqa: F401 - the session's private PostgreSQL

# The Python processes the suite starts (servers, the CLI, the examples: hundreds) cache
# their bytecode even where the environment turns caching off (PYTHONDONTWRITEBYTECODE,
# set on the project's machines): each would compile callstream and its dependencies
# again, 0.3 s of CPU a process.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A real `callstream serve` process for the module, with a fresh data dir and API key."""
    data_dir: Path = tmp_path_factory.mktemp("data")
    with running_server(data_dir) as srv:
        yield srv
