"""Which build of the media hot path runs: pure Python, or compiled by mypyc (setup.py's
``COMPILED_MODULES``, installed with ``CALLSTREAM_COMPILE=1``; docs/architecture.md,
"Compiled build"). Shown in ``callstream serve``'s start-up line and on /metrics."""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.util

#: One of the compiled modules: a build compiles all of them or none.
PROBE_MODULE = "callstream.media.session"


@functools.cache
def compiled() -> bool:
    """Whether the media hot path runs compiled (its modules are extension modules)."""
    spec = importlib.util.find_spec(PROBE_MODULE)
    return spec is not None and isinstance(spec.loader, importlib.machinery.ExtensionFileLoader)


def media_build() -> str:
    return "compiled" if compiled() else "pure"
