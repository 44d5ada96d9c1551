"""Turns: a per-process line for a busy incident (the Redis lock stays the guarantee)."""

from __future__ import annotations

import asyncio

from hub.worker.turns import Turns


async def test_a_waiter_is_woken_by_the_release_of_its_incident_not_by_its_poll() -> None:
    turns = Turns(max_waiting=4, poll=60)
    waiter = asyncio.create_task(turns.wait("inc-a", timeout=60))
    await asyncio.sleep(0)
    assert turns.waiting("inc-a") == 1
    turns.release(["inc-b"])  # another incident: nobody here waits for it
    await asyncio.sleep(0.05)
    assert not waiter.done()
    turns.release(["inc-a"])
    assert await asyncio.wait_for(waiter, 5) is True
    assert turns.waiting("inc-a") == 0


async def test_waiters_are_woken_one_per_release_first_come_first_served() -> None:
    turns = Turns(max_waiting=4, poll=60)
    first = asyncio.create_task(turns.wait("inc", timeout=60))
    await asyncio.sleep(0)
    second = asyncio.create_task(turns.wait("inc", timeout=60))
    await asyncio.sleep(0)
    turns.release(["inc"])
    await asyncio.wait_for(first, 5)
    await asyncio.sleep(0.05)
    assert not second.done()
    turns.release(["inc"])
    assert await asyncio.wait_for(second, 5) is True


async def test_a_full_line_turns_the_next_job_away_at_once() -> None:
    turns = Turns(max_waiting=2, poll=60)
    waiters = [asyncio.create_task(turns.wait("hot", timeout=60)) for _ in range(2)]
    await asyncio.sleep(0)
    assert await asyncio.wait_for(turns.wait("hot", timeout=60), 1) is False  # deferred like before
    assert await asyncio.wait_for(turns.wait("cold", timeout=0.01), 1) is True  # other incidents have room
    turns.release(["hot", "hot"])
    assert await asyncio.wait_for(asyncio.gather(*waiters), 5) == [True, True]


async def test_an_unwoken_waiter_looks_again_after_its_poll() -> None:
    """The holder may be another process, whose release is not heard here."""
    turns = Turns(poll=0.05)
    assert await asyncio.wait_for(turns.wait("inc", timeout=60), 5) is True
    assert turns.waiting("inc") == 0


def test_the_line_is_for_one_incident_only() -> None:
    assert Turns.key(["a"]) == "a"
    assert Turns.key(["a", "b"]) is None and Turns.key([]) is None
