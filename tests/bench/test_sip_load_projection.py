"""bench/sip_load.py's projection of the set-up rate to a core per process: the
arithmetic alone, on CPU figures given by hand (the bench itself is run by hand)."""

from __future__ import annotations

import pytest

from bench.sip_load import Result, project


def _result(answered: int) -> Result:
    res = Result("setup-80", 2, 80.0, answered, 2.0)
    res.answered = answered
    return res


def test_the_busiest_worker_bounds_the_projection() -> None:
    """Two workers, 400 calls: the supervisor spent 1.2 s, the workers 1.6 s and 2.0 s
    (from 10, 11.6 and 20). The busiest worker fills its core first: 400 / 2.0 s."""
    res = _result(400)
    project(res, 10, {10: 5.0, 11: 1.0, 12: 3.0}, {10: 6.2, 11: 2.6, 12: 5.0}, workers=2)
    assert res.supervisor_ms_per_call == 3.0
    assert res.worker_ms_per_call == 9.0
    assert res.busiest_worker_share == pytest.approx(2.0 / 3.6, abs=0.01)
    assert res.projected_cps == 200.0


def test_the_supervisor_bounds_it_when_busier() -> None:
    res = _result(100)
    project(res, 1, {1: 0.0, 2: 0.0, 3: 0.0}, {1: 0.5, 2: 0.2, 3: 0.2}, workers=2)
    assert res.projected_cps == 200.0  # 100 calls / 0.5 s of the supervisor


def test_one_process_is_all_of_it() -> None:
    """Without workers the server's own pid is the one process that works."""
    res = _result(300)
    project(res, 7, {7: 1.0}, {7: 4.0}, workers=1)
    assert res.supervisor_ms_per_call == 0.0
    assert res.worker_ms_per_call == 10.0
    assert res.busiest_worker_share == 1.0
    assert res.projected_cps == 100.0


def test_a_worker_restarted_in_the_step_is_left_out_and_no_calls_project_nothing() -> None:
    res = _result(100)
    project(res, 1, {1: 0.0, 2: 0.0}, {1: 0.1, 2: 0.4, 9: 0.3}, workers=2)  # 9: new pid
    assert res.worker_ms_per_call == 4.0 and res.projected_cps == 250.0
    empty = _result(0)
    project(empty, 1, {1: 0.0}, {1: 1.0}, workers=1)
    assert empty.projected_cps == 0.0
