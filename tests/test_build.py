"""Which build runs (callstream/build.py): every module setup.py compiles is compiled, or
none is, and ``callstream serve`` says which, in its start-up line and on /metrics.

.ci/compiled runs this module against the compiled build too."""

from __future__ import annotations

import ast
import importlib
import importlib.machinery
import importlib.metadata
import re
import tomllib
from pathlib import Path

from callstream import __version__, compiled
from callstream.build import media_build
from tests.helpers import running_server

ROOT = Path(__file__).resolve().parents[1]
SETUP = ROOT / "setup.py"
BACKEND = ROOT / "build_backend" / "callstream_build.py"


def listed_modules() -> list[str]:
    """setup.py's COMPILED_MODULES as module names (read, not run: running it builds)."""
    for node in ast.parse(SETUP.read_text()).body:
        if (isinstance(node, ast.Assign)
                and [getattr(t, "id", None) for t in node.targets] == ["COMPILED_MODULES"]):
            paths = ast.literal_eval(node.value)
            return [p.removesuffix(".py").replace("/", ".") for p in paths]
    raise AssertionError("no COMPILED_MODULES in setup.py")


def is_extension(name: str) -> bool:
    spec = importlib.import_module(name).__spec__
    assert spec is not None
    return isinstance(spec.loader, importlib.machinery.ExtensionFileLoader)


def test_every_listed_module_is_compiled_or_none_is() -> None:
    names = listed_modules()
    assert "callstream.streaming.connection" not in names  # crashes compiled (setup.py)
    assert {name: is_extension(name) for name in names} == dict.fromkeys(names, compiled())


def test_the_compiled_build_uses_the_mypy_the_tests_pin() -> None:
    (pin,) = [node.value.value for node in ast.parse(BACKEND.read_text()).body
              if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
              and [getattr(t, "id", None) for t in node.targets] == ["MYPYC_REQUIREMENT"]]
    with (ROOT / "pyproject.toml").open("rb") as f:
        test_extras = tomllib.load(f)["project"]["optional-dependencies"]["test"]
    assert pin in test_extras
    assert pin == f"mypy=={importlib.metadata.version('mypy')}"


def test_serve_says_which_build_runs(tmp_path: Path) -> None:
    with running_server(tmp_path / "data") as server, server.client() as http:
        metrics = http.get("/metrics").text
        started = [line for line in server.log().splitlines() if "callstream listening:" in line]
    # One line, or with CALLSTREAM_TEST_WORKERS the supervisor's and each worker's.
    assert started and all(f"media={media_build()}" in line.split() for line in started)
    info = re.search(r"^callstream_build_info\{(.*)\} 1\.0$", metrics, re.MULTILINE)
    assert info, "callstream_build_info is missing from /metrics"
    assert f'media="{media_build()}"' in info[1] and f'version="{__version__}"' in info[1]
