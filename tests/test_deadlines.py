"""`hub.core.deadlines`: many bounds of one length, one timer, `asyncio.timeout`'s semantics."""

from __future__ import annotations

import asyncio

import pytest

from hub.core.deadlines import Deadlines


async def test_a_bound_that_passes_cancels_the_wait_and_raises_timeout_error() -> None:
    deadlines = Deadlines(0.1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        with deadlines.bound():
            await asyncio.sleep(5)
    assert 0.09 < loop.time() - started < 1.0
    await asyncio.sleep(0.05)  # the task carries no cancellation left over
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_a_block_that_ends_in_time_is_not_touched_later() -> None:
    deadlines = Deadlines(0.1)
    with deadlines.bound():
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)  # past the deadline: nothing cancels us now
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_each_of_many_concurrent_bounds_ends_at_its_own_deadline() -> None:
    deadlines = Deadlines(0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def one(delay: float, work: float) -> tuple[str, float]:
        await asyncio.sleep(delay)
        try:
            with deadlines.bound():
                await asyncio.sleep(work)
        except TimeoutError:
            return "timeout", loop.time() - started
        return "done", loop.time() - started

    results = await asyncio.gather(one(0.0, 5), one(0.1, 0.05), one(0.2, 5), one(0.25, 0.1))
    assert [r[0] for r in results] == ["timeout", "done", "timeout", "done"]
    assert 0.28 < results[0][1] < 0.45  # 0.3 after it began
    assert 0.48 < results[2][1] < 0.65  # 0.5: its own deadline, not the first one's


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    deadlines = Deadlines(5)

    async def bounded() -> None:
        with deadlines.bound():
            await asyncio.sleep(5)

    task = asyncio.create_task(bounded())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_an_enclosing_timeout_that_passes_first_is_the_one_raised() -> None:
    deadlines = Deadlines(5)
    outer = asyncio.timeout(0.1)
    with pytest.raises(TimeoutError):
        async with outer:
            with deadlines.bound():
                await asyncio.sleep(5)
    assert outer.expired()


async def test_both_firing_together_leave_a_cancellation_for_whoever_asked_too() -> None:
    """Our deadline and someone else's cancel at once: theirs wins (CancelledError), and the
    task's cancellation count is back to theirs alone."""
    deadlines = Deadlines(0.1)
    seen: list[int] = []

    async def bounded() -> None:
        try:
            with deadlines.bound():
                await asyncio.sleep(5)
        finally:
            seen.append(asyncio.current_task().cancelling())  # type: ignore[union-attr]

    task = asyncio.create_task(bounded())
    await asyncio.sleep(0.1)
    task.cancel()  # around the time the deadline passes
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == [1]


def test_the_same_deadlines_work_on_a_second_event_loop() -> None:
    deadlines = Deadlines(0.05)

    async def bounded() -> bool:
        try:
            with deadlines.bound():
                await asyncio.sleep(5)
        except TimeoutError:
            return True
        return False

    assert asyncio.run(bounded())
    assert asyncio.run(bounded())
