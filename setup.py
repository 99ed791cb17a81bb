"""The build. pyproject.toml holds everything; this adds the mypyc-compiled media hot path
when ``CALLSTREAM_COMPILE=1`` asks for it (build_backend/callstream_build.py passes the
variable to wheel builds only, and installs mypy for them). Without it, without mypy or
without a working C compiler, the wheel is the pure-Python one (docs/architecture.md,
"Compiled build").
"""

from __future__ import annotations

import logging
import os

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, CompileError, ExecError, PlatformError

log = logging.getLogger("callstream.build")

#: Compiled by mypyc; each one passes tests/media and tests/streaming compiled (.ci/run runs
#: them against a compiled copy). The per-tick path of a streamed call, inbound and outbound.
#: Left out: streaming/connection.py (a subclass of websockets' ClientConnection: compiled,
#: it crashes the interpreter in a garbage-collector pass), and everything not run per tick.
COMPILED_MODULES = (
    "callstream/media/stats.py",
    "callstream/media/jitter.py",
    "callstream/media/rtp.py",
    "callstream/media/session.py",
    "callstream/media/hub.py",
    "callstream/media/latch.py",
    "callstream/media/standing.py",
    "callstream/media/transport.py",
    "callstream/streaming/encoder.py",
    "callstream/streaming/framing.py",
    "callstream/streaming/writer.py",
    "callstream/streaming/protocol/server.py",
    "callstream/streaming/protocol/client.py",
    "callstream/streaming/playback.py",
    "callstream/streaming/session.py",
)


class OptionalBuildExt(build_ext):
    """Builds the compiled modules, or none of them where no C compiler works: the ``.py``
    files are in the wheel either way, so it is then the pure-Python one."""

    def run(self) -> None:
        try:
            super().run()
        except (CCompilerError, CompileError, ExecError, PlatformError) as e:
            log.warning("callstream: no compiled build (%s); installing pure Python", e)
            # No half build: a module whose shared library is missing would not import.
            for ext in self.extensions:
                built = self.get_ext_fullpath(ext.name)
                if os.path.exists(built):
                    os.remove(built)
            self.extensions = []


def compiled_extensions() -> list[Extension]:
    if os.environ.get("CALLSTREAM_COMPILE") != "1":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        log.warning("callstream: CALLSTREAM_COMPILE=1 but no mypyc; installing pure Python")
        return []
    return list(mypycify(list(COMPILED_MODULES), opt_level="3"))


setup(ext_modules=compiled_extensions(), cmdclass={"build_ext": OptionalBuildExt})
