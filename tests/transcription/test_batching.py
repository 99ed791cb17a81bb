"""The batcher's threading, with a stand-in for the model: who leads, who waits, what
goes into one call."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from callstream.transcription.batching import MAX_BATCH, Batcher

WAIT_S = 10.0  # bound on every wait here; nothing should come near it


class Model:
    """Records each call's items and the thread that made it; the first ``held`` calls
    block until :meth:`release`."""

    def __init__(self, held: int = 0) -> None:
        self.calls: list[list[str]] = []
        self.threads: list[int] = []
        self.held = held
        self.inside = threading.Semaphore(0)  # released as a held call starts
        self.gate = threading.Event()
        self.fail = False

    def run(self, items: list[str]) -> list[str]:
        self.calls.append(list(items))
        self.threads.append(threading.get_ident())
        if len(self.calls) <= self.held:
            self.inside.release()
            assert self.gate.wait(WAIT_S)
        if self.fail:
            raise RuntimeError("the model broke")
        return [item.upper() for item in items]

    def release(self) -> None:
        self.gate.set()


def until(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def submit_all(pool: ThreadPoolExecutor, batcher: Batcher[str, str],
               requests: list[tuple[str, Hashable, int]]) -> list[Future[str]]:
    """Submit each (item, key, size) from its own thread, in order, each queued before
    the next is sent."""
    futures = []
    for item, key, size in requests:
        queued = batcher.queued
        futures.append(pool.submit(batcher.submit, item, key=key, size=size))
        until(lambda queued=queued: batcher.queued > queued)
    return futures


def test_a_lone_request_runs_at_once_in_its_own_thread() -> None:
    model = Model()
    batcher: Batcher[str, str] = Batcher(model.run, slots=1, spread=0)
    assert batcher.submit("a", key="en", size=3) == "A"
    assert batcher.submit("b", key="en", size=3) == "B"
    assert model.calls == [["a"], ["b"]]
    assert model.threads == [threading.get_ident()] * 2  # no hand-off: no waiting
    assert batcher.queued == 0


def test_requests_queued_during_a_call_go_together_into_the_next() -> None:
    model = Model(held=1)
    batcher: Batcher[str, str] = Batcher(model.run, slots=1, spread=0)
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(batcher.submit, "a", key="en", size=3)
        assert model.inside.acquire(timeout=WAIT_S)  # "a" is being decoded
        rest = submit_all(pool, batcher, [("b", "en", 3), ("c", "en", 3), ("d", "en", 3)])
        model.release()
        assert first.result(WAIT_S) == "A"
        assert [f.result(WAIT_S) for f in rest] == ["B", "C", "D"]
    assert model.calls == [["a"], ["b", "c", "d"]]
    assert (batcher.batches, batcher.items) == (2, 4)


def test_only_compatible_requests_share_a_call() -> None:
    model = Model(held=1)
    batcher: Batcher[str, str] = Batcher(model.run, slots=1, spread=2)
    with ThreadPoolExecutor(6) as pool:
        first = pool.submit(batcher.submit, "a", key="en", size=10)
        assert model.inside.acquire(timeout=WAIT_S)
        rest = submit_all(pool, batcher, [
            ("b", "en", 10), ("c", "de", 10), ("d", "en", 12), ("e", "en", 13),
            ("f", "de", 11)])
        model.release()
        assert [f.result(WAIT_S) for f in [first, *rest]] == list("ABCDEF")
    # "b" leads with what fits beside it: "d" (12 - 10 <= 2), not "e" (13 - 10 > 2);
    # then the oldest left leads: "c" with the other "de"; then "e" alone.
    assert model.calls == [["a"], ["b", "d"], ["c", "f"], ["e"]]


def test_a_batch_is_bounded() -> None:
    model = Model(held=1)
    batcher: Batcher[str, str] = Batcher(model.run, slots=1, spread=0, max_batch=2)
    with ThreadPoolExecutor(6) as pool:
        first = pool.submit(batcher.submit, "a", key="en", size=1)
        assert model.inside.acquire(timeout=WAIT_S)
        rest = submit_all(pool, batcher, [(x, "en", 1) for x in "bcde"])
        model.release()
        assert [f.result(WAIT_S) for f in [first, *rest]] == list("ABCDE")
    assert model.calls == [["a"], ["b", "c"], ["d", "e"]]


def test_the_default_bound() -> None:
    assert MAX_BATCH == 8


def test_an_error_reaches_every_caller_of_the_batch_and_the_next_batch_runs() -> None:
    model = Model(held=1)
    batcher: Batcher[str, str] = Batcher(model.run, slots=1, spread=0)
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(batcher.submit, "a", key="en", size=1)
        assert model.inside.acquire(timeout=WAIT_S)
        model.fail = True
        rest = submit_all(pool, batcher, [("b", "en", 1), ("c", "en", 1)])
        model.release()
        for future in [first, *rest]:
            with pytest.raises(RuntimeError, match="the model broke"):
                future.result(WAIT_S)
    model.fail = False
    assert batcher.submit("d", key="en", size=1) == "D"  # the slot was given back
    assert model.calls == [["a"], ["b", "c"], ["d"]]


def test_slots_bound_the_calls_running_at_once() -> None:
    model = Model(held=2)
    batcher: Batcher[str, str] = Batcher(model.run, slots=2, spread=0)
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(batcher.submit, "a", key="en", size=1)
        second = pool.submit(batcher.submit, "b", key="en", size=1)
        assert model.inside.acquire(timeout=WAIT_S)  # both run: two slots
        assert model.inside.acquire(timeout=WAIT_S)
        rest = submit_all(pool, batcher, [("c", "en", 1), ("d", "en", 1)])
        assert len(model.calls) == 2  # the third waits for a slot
        model.release()
        assert [f.result(WAIT_S) for f in [first, second, *rest]] == list("ABCD")
    # Either slot's leader may pass it on to "c" or "d" first: one batch or two.
    assert sorted(map(sorted, model.calls[:2])) == [["a"], ["b"]]
    assert sorted(x for call in model.calls[2:] for x in call) == ["c", "d"]


def test_a_wrong_number_of_results_is_an_error() -> None:
    batcher: Batcher[str, str] = Batcher(lambda items: [], slots=1, spread=0)
    with pytest.raises(RuntimeError, match="a batch of 1 gave 0 results"):
        batcher.submit("a", key="en", size=1)


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="slots"):
        Batcher(lambda items: items, slots=0, spread=0)
