"""callstream.fd_limit: the soft open-files limit is raised to the hard one (in a child
process, so this test process keeps its limits); the caps warning."""

from __future__ import annotations

import logging
import resource
import subprocess
import sys

import pytest

from callstream.fd_limit import RESERVE_FOR_CALLS, check_open_files_limit

RAISE = (
    "import resource; from callstream.fd_limit import raise_open_files_limit; "
    "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE); "
    "resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard)); "
    "got = raise_open_files_limit(); "
    "print(got, *resource.getrlimit(resource.RLIMIT_NOFILE))"
)


def test_soft_limit_is_raised_to_the_hard_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    out = subprocess.run([sys.executable, "-c", RAISE], capture_output=True, text=True,
                         check=True, timeout=60).stdout.split()
    expected = str(hard) if hard != resource.RLIM_INFINITY else str(1 << 20)
    assert out[:2] == [expected, expected]


def test_warning_when_the_caps_would_use_the_call_descriptors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="callstream.fd_limit"):
        check_open_files_limit(RESERVE_FOR_CALLS + 1280, 1280)
        assert not caplog.records
        check_open_files_limit(1024, 1280)
    assert "open files limit 1024 is below" in caplog.text
