"""The manager's Flag: an asyncio.Event's set / clear / wait, without the Event's deque."""

from __future__ import annotations

import asyncio

import pytest

from qqconn.driver.flag import Flag


async def test_set_wakes_every_waiter_and_later_waits_return_at_once() -> None:
    flag = Flag()
    woken: list[int] = []

    async def waiter(i: int) -> None:
        await flag.wait()
        woken.append(i)

    tasks = [asyncio.create_task(waiter(i)) for i in range(3)]
    await asyncio.sleep(0)
    assert woken == [] and not flag.is_set()
    flag.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert sorted(woken) == [0, 1, 2] and flag.is_set()
    await asyncio.wait_for(flag.wait(), 5)  # set: returns at once


async def test_clear_makes_the_next_wait_wait_for_the_next_set() -> None:
    flag = Flag()
    flag.set()
    flag.clear()
    assert not flag.is_set()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(flag.wait(), 0.05)
    task = asyncio.create_task(flag.wait())
    await asyncio.sleep(0)
    flag.set()
    await asyncio.wait_for(task, 5)


async def test_a_cancelled_waiter_leaves_nothing_behind_and_others_still_wake() -> None:
    flag = Flag()
    gone = asyncio.create_task(flag.wait())
    stays = asyncio.create_task(flag.wait())
    await asyncio.sleep(0)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert flag._waiters is not None and len(flag._waiters) == 1
    flag.set()
    await asyncio.wait_for(stays, 5)
    assert flag._waiters is None
