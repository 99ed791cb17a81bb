"""The reconnect back-off (pure) and its driver, with openers that fail as sockets do."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from callstream.streaming.reconnect import FIRST_DELAY, MAX_DELAY, backoff, reconnect


def test_backoff_doubles_from_a_tenth_and_stops_growing_at_two_seconds() -> None:
    assert list(itertools.islice(backoff(), 8)) == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0]
    assert (FIRST_DELAY, MAX_DELAY) == (0.1, 2.0)


async def test_failed_attempts_are_retried_until_one_succeeds() -> None:
    loop = asyncio.get_running_loop()
    attempts: list[float] = []
    began = loop.time()

    async def opener() -> str:
        if len(attempts) < 4:  # the first three are refused
            raise ConnectionRefusedError("nothing listens")
        return "socket"

    got = await reconnect(opener, 5.0, clock=loop.time,
                          on_attempt=lambda: attempts.append(loop.time() - began))
    assert got == "socket"
    assert len(attempts) == 4
    # Waits of 0.1, 0.2, 0.4, 0.8 s before the attempts (the loop may be late, never early).
    gaps = [b - a for a, b in zip([0.0, *attempts], attempts, strict=False)]
    assert all(gap >= wait - 0.005 for gap, wait in zip(gaps, [0.1, 0.2, 0.4, 0.8],
                                                         strict=True)), gaps


async def test_nothing_after_the_window_and_the_window_is_waited_out() -> None:
    loop = asyncio.get_running_loop()
    attempts = 0

    async def refused() -> str:
        raise OSError("upgrade refused")

    def attempted() -> None:
        nonlocal attempts
        attempts += 1

    began = loop.time()
    assert await reconnect(refused, 1.0, clock=loop.time, on_attempt=attempted) is None
    assert loop.time() - began >= 1.0
    assert attempts == 3  # after 0.1, 0.3, 0.7 s; the next (1.5 s) is past the window


async def test_an_attempt_still_connecting_when_the_window_ends_is_cancelled() -> None:
    loop = asyncio.get_running_loop()
    cancelled = asyncio.Event()

    async def hangs() -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    began = loop.time()
    assert await reconnect(hangs, 0.5, clock=loop.time, on_attempt=lambda: None) is None
    assert cancelled.is_set()
    assert loop.time() - began == pytest.approx(0.5, abs=0.3)
