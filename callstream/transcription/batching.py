"""Gathering several tracks' decodes into one model call.

A decoder step of Whisper costs about the same for one sequence as for eight, so
tracks that want an interim at the same moment are cheaper decoded together: tiny.en's
decoder costs 61 ms a track alone and 29 ms a track four at a time (docs/benchmarks.md,
*Batching tracks*). The tracks' threads meet here:

* a thread that wants a decode enqueues its request. If fewer than ``slots`` batches
  are running, it becomes a **leader**: it takes its own request and every queued
  compatible one (up to :data:`MAX_BATCH`), runs them in one call, and hands each its
  result;
* otherwise it waits on its own event. When a batch ends, its leader hands its slot to
  the oldest request still queued, whose thread then leads the next batch, with all
  that queued meanwhile.

So nothing waits while the model is idle: a lone request runs at once, and batches
form only from requests that queued while a batch ran. Compatible means the same key
(for Whisper: language and prompt) and sizes (window lengths) within ``spread`` of
each other, since a batch's inputs are padded to its largest.

Pure threading, no model: ``run`` is whatever decodes a list of items.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

MAX_BATCH = 8  # requests one call takes: the decoder's saving is flat past 4-8

T = TypeVar("T")
R = TypeVar("R")


@dataclass(eq=False, slots=True)
class _Request(Generic[T, R]):
    key: Hashable
    size: int
    item: T
    ready: threading.Event = field(default_factory=threading.Event)
    lead: bool = False  # woken to lead a batch, not with a result
    result: R | None = None
    error: BaseException | None = None


class Batcher(Generic[T, R]):
    """Runs ``run`` on batches of compatible items, at most ``slots`` batches at once.

    Args:
        run: decodes a batch; returns one result per item, in order.
        slots: batches that may run at once (the model's workers).
        spread: the most two sizes in one batch may differ by.
        max_batch: the most items one call takes.
    """

    def __init__(self, run: Callable[[list[T]], list[R]], *, slots: int, spread: int,
                 max_batch: int = MAX_BATCH) -> None:
        if slots < 1 or max_batch < 1 or spread < 0:
            raise ValueError(f"slots ({slots}) and max_batch ({max_batch}) must be >= 1, "
                             f"spread ({spread}) >= 0")
        self._run = run
        self._slots = slots
        self._spread = spread
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: list[_Request[T, R]] = []
        self._running = 0  # batches whose leaders hold a slot
        self.batches = 0  # calls made, and items in them (for benches and tests)
        self.items = 0

    @property
    def queued(self) -> int:
        """Requests waiting for a batch."""
        with self._lock:
            return len(self._queue)

    def submit(self, item: T, *, key: Hashable, size: int) -> R:
        """Decode ``item``, in a batch with others if some are waiting. Blocks until
        its result is ready; an exception of the batch's call is raised in every
        caller of that batch."""
        request: _Request[T, R] = _Request(key, size, item)
        with self._lock:
            self._queue.append(request)
            lead = self._running < self._slots
            if lead:
                self._running += 1
        if not lead:
            request.ready.wait()
            if not request.lead:
                return self._outcome(request)
        self._lead(request)
        return self._outcome(request)

    def _lead(self, request: _Request[T, R]) -> None:
        """Run the batch of ``request`` (which holds a slot), then pass the slot on."""
        with self._lock:
            batch = self._take(request)
        try:
            results = self._run([r.item for r in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"a batch of {len(batch)} gave {len(results)} results")
        except BaseException as exc:  # every waiter hears of it, not only the leader
            for r in batch:
                r.error = exc
        else:
            for r, result in zip(batch, results, strict=True):
                r.result = result
        with self._lock:
            self.batches += 1
            self.items += len(batch)
            if self._queue:
                # The slot goes on to the oldest waiter; out of the queue, so that no
                # other leader takes it into a batch meanwhile.
                following = self._queue.pop(0)
                following.lead = True
                following.ready.set()
            else:
                self._running -= 1
        for r in batch:
            if r is not request:
                r.ready.set()

    def _take(self, request: _Request[T, R]) -> list[_Request[T, R]]:
        """Dequeue ``request`` (if still queued) and the queued requests compatible
        with it (oldest first, up to the bound). Under the lock."""
        batch = [request]
        low = high = request.size
        for r in self._queue:
            if len(batch) >= self._max_batch:
                break
            if r is request or r.key != request.key:
                continue
            if max(high, r.size) - min(low, r.size) <= self._spread:
                batch.append(r)
                low, high = min(low, r.size), max(high, r.size)
        taken = {id(r) for r in batch}
        self._queue = [r for r in self._queue if id(r) not in taken]
        return batch

    @staticmethod
    def _outcome(request: _Request[T, R]) -> R:
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result
