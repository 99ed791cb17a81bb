"""The PEP 517 backend: setuptools', with the mypyc build dependencies asked for only when a
compiled wheel is (``CALLSTREAM_COMPILE=1``; setup.py compiles, docs/architecture.md
"Compiled build").

Every hook but ``build_wheel`` runs with the variable removed: metadata, sdists and editable
installs are pure Python whatever the environment says. An editable install runs the source
tree itself, where a compiled module beside its ``.py`` would shadow every later edit of it.
"""

from __future__ import annotations

import contextlib
import os
import tomllib
from collections.abc import Iterator
from typing import Any

from setuptools import build_meta as _setuptools

COMPILE_ENV = "CALLSTREAM_COMPILE"
#: The mypy (with its mypyc) the compiled modules are built with: the one the test extras
#: pin (pyproject.toml; tests/test_build.py checks they agree), so its run-time type checks
#: are those tested.
MYPYC_REQUIREMENT = "mypy==2.4.1"

ConfigSettings = dict[str, Any] | None


def compile_requested() -> bool:
    return os.environ.get(COMPILE_ENV) == "1"


def _runtime_dependencies() -> list[str]:
    # mypyc type-checks what it compiles with the real types of what it imports (pydantic's
    # mypy plugin included), as black's build does ("require-runtime-dependencies").
    with open("pyproject.toml", "rb") as f:
        return list(tomllib.load(f)["project"]["dependencies"])


@contextlib.contextmanager
def _pure() -> Iterator[None]:
    value = os.environ.pop(COMPILE_ENV, None)
    try:
        yield
    finally:
        if value is not None:
            os.environ[COMPILE_ENV] = value


def get_requires_for_build_wheel(config_settings: ConfigSettings = None) -> list[str]:
    with _pure():
        requires = list(_setuptools.get_requires_for_build_wheel(config_settings))
    if compile_requested():
        requires += [MYPYC_REQUIREMENT, *_runtime_dependencies()]
    return requires


def prepare_metadata_for_build_wheel(
    metadata_directory: str, config_settings: ConfigSettings = None
) -> str:
    with _pure():
        return _setuptools.prepare_metadata_for_build_wheel(metadata_directory, config_settings)


def build_wheel(
    wheel_directory: str,
    config_settings: ConfigSettings = None,
    metadata_directory: str | None = None,
) -> str:
    return _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)


def get_requires_for_build_sdist(config_settings: ConfigSettings = None) -> list[str]:
    with _pure():
        return list(_setuptools.get_requires_for_build_sdist(config_settings))


def build_sdist(sdist_directory: str, config_settings: ConfigSettings = None) -> str:
    with _pure():
        return _setuptools.build_sdist(sdist_directory, config_settings)


def get_requires_for_build_editable(config_settings: ConfigSettings = None) -> list[str]:
    with _pure():
        return list(_setuptools.get_requires_for_build_editable(config_settings))


def prepare_metadata_for_build_editable(
    metadata_directory: str, config_settings: ConfigSettings = None
) -> str:
    with _pure():
        return _setuptools.prepare_metadata_for_build_editable(
            metadata_directory, config_settings)


def build_editable(
    wheel_directory: str,
    config_settings: ConfigSettings = None,
    metadata_directory: str | None = None,
) -> str:
    with _pure():
        return _setuptools.build_editable(wheel_directory, config_settings, metadata_directory)
