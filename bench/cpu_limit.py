"""A CPU budget for a process tree: a cgroup with a CFS quota (cgroup v1 ``cpu`` or v2).

``bench/streaming.py --cpu-per-worker F`` puts the server, and so its workers, in one such
group worth ``workers * F`` cores. That gives each worker the same CPU however many run,
the condition "a core per worker" stands for, on a machine with fewer cores than the
workers and their load need: two workers at a quarter core each get half a core, not
the two cores' worth of a bigger machine. The period is short (10 ms), so a group over
its quota waits at most a few ms for the next one, not the default 100 ms.

Needs root (or a delegated cgroup). Not used by the tests.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

#: CFS period, µs: a throttled group waits at most one period.
PERIOD_US = 10_000
_V1 = Path("/sys/fs/cgroup/cpu")
_V2 = Path("/sys/fs/cgroup")


class CpuLimitError(Exception):
    """No cgroup with a CPU quota could be made here."""


class CpuLimit:
    """A new cgroup of ``cores`` cores; :meth:`join` in a ``preexec_fn`` moves the child
    in before it runs, so every process it starts is counted too."""

    def __init__(self, cores: float, name: str) -> None:
        if cores <= 0:
            raise CpuLimitError(f"a CPU budget of {cores} cores")
        quota = max(1000, round(cores * PERIOD_US))
        if (_V1 / "cpu.cfs_quota_us").exists():
            self.path = _V1 / name
            self._make()
            (self.path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (self.path / "cpu.cfs_quota_us").write_text(str(quota))
        elif "cpu" in _read(_V2 / "cgroup.controllers").split():
            self.path = _V2 / name
            self._make()
            (self.path / "cpu.max").write_text(f"{quota} {PERIOD_US}")
        else:
            raise CpuLimitError("no cgroup cpu controller (v1 /sys/fs/cgroup/cpu, or v2 "
                                "with cpu in /sys/fs/cgroup/cgroup.controllers)")
        self.cores = quota / PERIOD_US
        self._procs = str(self.path / "cgroup.procs")

    def _make(self) -> None:
        try:
            self.path.mkdir()
        except OSError as exc:
            raise CpuLimitError(f"cannot make the cgroup {self.path}: {exc} (root needed)"
                                ) from exc

    def join(self) -> None:
        """Move the calling process into the group (async-signal-safe enough for a
        ``preexec_fn``: one open and one write)."""
        fd = os.open(self._procs, os.O_WRONLY)
        try:
            os.write(fd, str(os.getpid()).encode())
        finally:
            os.close(fd)

    def throttled_s(self) -> float:
        """Seconds the group has waited for its next period so far."""
        stat = dict(line.split() for line in _read(self.path / "cpu.stat").splitlines()
                    if line.count(" ") == 1)
        if "throttled_time" in stat:  # v1: ns
            return int(stat["throttled_time"]) / 1e9
        return int(stat.get("throttled_usec", 0)) / 1e6  # v2

    def close(self) -> None:
        """Remove the group once its processes are gone (waits up to 5 s for them)."""
        deadline = time.monotonic() + 5
        while True:
            try:
                self.path.rmdir()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
