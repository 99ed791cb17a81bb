"""KeyedLocks: one lock per key, serializing its users, gone once no one uses it."""

from __future__ import annotations

import asyncio

from callstream.calls.locks import KeyedLocks


async def test_users_of_one_key_run_one_at_a_time_in_order() -> None:
    locks = KeyedLocks()
    trace: list[str] = []

    async def user(name: str) -> None:
        async with locks.hold("call"):
            trace.append(f"{name}+")
            await asyncio.sleep(0.01)
            trace.append(f"{name}-")

    await asyncio.gather(*(user(n) for n in "abc"))
    assert trace == ["a+", "a-", "b+", "b-", "c+", "c-"]
    assert len(locks) == 0


async def test_keys_do_not_wait_for_each_other() -> None:
    locks = KeyedLocks()
    release = asyncio.Event()

    async def hold_a() -> None:
        async with locks.hold("a"):
            await release.wait()

    holder = asyncio.create_task(hold_a())
    await asyncio.sleep(0)
    async with asyncio.timeout(1), locks.hold("b"):
        assert "a" in locks and "b" in locks
    release.set()
    await holder
    assert len(locks) == 0


async def test_the_entry_stays_while_a_waiter_remains() -> None:
    locks = KeyedLocks()
    release_first, release_second = asyncio.Event(), asyncio.Event()
    trace: list[str] = []

    async def user(name: str, release: asyncio.Event) -> None:
        async with locks.hold("k"):
            trace.append(f"{name}+")
            await release.wait()
            trace.append(f"{name}-")

    a = asyncio.create_task(user("a", release_first))
    await asyncio.sleep(0)
    b = asyncio.create_task(user("b", release_second))
    await asyncio.sleep(0)
    release_first.set()
    await a
    # The first holder left but the second still uses the key: a newcomer must queue
    # behind it on the same lock, not get a fresh lock of its own.
    assert "k" in locks
    c = asyncio.create_task(user("c", asyncio.Event()))
    await asyncio.sleep(0.01)
    assert trace == ["a+", "a-", "b+"]
    c.cancel()
    release_second.set()
    await asyncio.gather(b, c, return_exceptions=True)
    assert trace == ["a+", "a-", "b+", "b-"]
    assert len(locks) == 0


async def test_a_waiter_cancelled_leaves_nothing_behind() -> None:
    locks = KeyedLocks()
    release = asyncio.Event()

    async def holder() -> None:
        async with locks.hold("k"):
            await release.wait()

    async def waiter() -> None:
        async with locks.hold("k"):
            raise AssertionError("never reached")

    h = asyncio.create_task(holder())
    await asyncio.sleep(0)
    w = asyncio.create_task(waiter())
    await asyncio.sleep(0)
    w.cancel()
    await asyncio.gather(w, return_exceptions=True)
    release.set()
    await h
    assert len(locks) == 0


async def test_many_keys_used_once_leave_an_empty_table() -> None:
    locks = KeyedLocks()
    for n in range(1000):
        async with locks.hold(f"v3:unknown-{n}"):
            pass
    assert len(locks) == 0
