"""FailureLog: which failed webhook attempts get an info line (a table, no clock)."""

from __future__ import annotations

import pytest

from callstream.webhooks.failure_log import FailureLog

A = "http://127.0.0.1:9000/hooks"
B = "http://127.0.0.1:9001/hooks"


@pytest.mark.parametrize(("steps", "expected"), [
    # (url, time) per failure -> what failed() answers each time
    ([(A, 0.0)], [1]),
    ([(A, 0.0), (A, 1.0), (A, 3.0)], [1, 1, 1]),  # a retry schedule: every one told
    ([(A, 0.0), (A, 0.1), (A, 0.2), (A, 0.5), (A, 1.2)], [1, None, None, None, 4]),
    ([(A, 0.0), (B, 0.1), (A, 0.2), (B, 1.1)], [1, 1, None, 1]),  # URLs apart
])
def test_one_line_per_url_per_interval_counting_the_quiet_ones(
        steps: list[tuple[str, float]], expected: list[int | None]) -> None:
    failures = FailureLog(interval=1.0)
    assert [failures.failed(url, now) for url, now in steps] == expected


def test_delivered_reports_the_failures_since_the_last_success_once() -> None:
    failures = FailureLog(interval=1.0)
    assert failures.delivered(A) == 0  # was not failing: no "delivered again" line
    for now in (0.0, 0.1, 2.0):
        failures.failed(A, now)
    assert failures.delivered(A) == 3
    assert failures.delivered(A) == 0
    assert failures.failed(A, 2.1) == 1  # a new outage is told at once


def test_it_remembers_a_bounded_number_of_urls() -> None:
    failures = FailureLog(interval=1.0, max_urls=2)
    for n in range(5):
        failures.failed(f"http://h{n}/", 0.0)
    assert failures.delivered("http://h0/") == 0  # forgotten, oldest first
    assert failures.delivered("http://h4/") == 1
