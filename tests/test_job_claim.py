"""Taking queued jobs with one script (`hub.worker.job_claim.ClaimingWorker`), against the real
Redis of the root conftest: each job runs once, what is running elsewhere or not yet due is
left alone, and the in-progress mark is arq's own."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Any

from arq import Worker, func
from arq.constants import default_queue_name, in_progress_key_prefix

from hub.storage.connection import connect, json_dumps, json_loads
from hub.worker.job_claim import ClaimingWorker


async def _count(ctx: dict[str, Any], name: str, sleep: float = 0.0) -> None:
    await ctx["redis"].incr(f"claim:test:{name}")
    if sleep:
        await asyncio.sleep(sleep)


def _worker(redis: Any, **options: Any) -> ClaimingWorker:
    base: dict[str, Any] = {"burst": True, "handle_signals": False, "keep_result": 0, "poll_delay": 0.05,
                            "job_serializer": json_dumps, "job_deserializer": json_loads, "max_jobs": 5}
    worker = ClaimingWorker(functions=[func(_count, name="count")], redis_pool=redis, **{**base, **options})
    worker.ctx["redis"] = redis  # arq sets it when it runs; these tests also call start_jobs alone
    return worker


async def test_two_workers_racing_for_the_same_jobs_run_each_once(redis_url: str) -> None:
    pools = [connect(redis_url, lane=4), connect(redis_url, lane=4)]
    try:
        for i in range(60):
            await pools[0].enqueue_job("count", f"j{i}", _job_id=f"j{i}")
        workers = [_worker(pool) for pool in pools]
        await asyncio.gather(*(w.async_run() for w in workers))
        counts = [await pools[0].get(f"claim:test:j{i}") for i in range(60)]
        assert counts == [b"1"] * 60
        assert sum(w.jobs_complete for w in workers) == 60
        for w in workers:
            await w.close()
    finally:
        for pool in pools:
            await pool.aclose()


async def test_a_job_in_progress_elsewhere_or_not_yet_due_is_not_started(redis: Any) -> None:
    pool = redis
    await pool.enqueue_job("count", "busy", _job_id="busy")
    await pool.set(in_progress_key_prefix + "busy", "1", px=60_000)  # another worker has it
    await pool.enqueue_job("count", "later", _job_id="later", _defer_by=60)
    worker = _worker(pool)
    await worker.start_jobs([b"busy", b"later", b"gone"])  # "gone": no longer queued
    assert worker.tasks == {} and worker.job_counter == 0
    assert await pool.get("claim:test:busy") is None and await pool.get("claim:test:later") is None
    assert not await pool.exists(in_progress_key_prefix + "later")
    await worker.close()


async def test_a_started_job_is_marked_in_progress_for_arqs_timeout(redis: Any) -> None:
    pool = redis
    await pool.enqueue_job("count", "now", 0.3, _job_id="now")
    worker = _worker(pool, job_timeout=20)
    await worker.start_jobs([b"now"])
    assert set(worker.tasks) == {"now"}
    ttl_ms = await pool.pttl(in_progress_key_prefix + "now")
    assert (worker.in_progress_timeout_s - 2) * 1000 < ttl_ms <= worker.in_progress_timeout_s * 1000
    await asyncio.gather(*worker.tasks.values())
    assert await pool.get("claim:test:now") == b"1"
    assert not await pool.exists(in_progress_key_prefix + "now")  # arq's own finish removed it
    assert await pool.zcard(default_queue_name) == 0
    await worker.close()


async def test_a_slot_that_frees_is_used_before_the_next_poll(redis: Any) -> None:
    """Two slots, six jobs of 0.2 s, a 3 s poll delay: arq's own start leaves the freed slots
    idle until the next poll (two each poll: 9 s to an empty queue); here the jobs run back to
    back, and the burst ends at the next poll after them (3 s)."""
    pool = redis
    for i in range(6):
        await pool.enqueue_job("count", f"s{i}", 0.2, _job_id=f"s{i}")
    loop = asyncio.get_running_loop()
    started = loop.time()
    worker = _worker(pool, max_jobs=2, poll_delay=3.0)
    await worker.async_run()
    assert worker.jobs_complete == 6
    assert loop.time() - started < 4.5
    await worker.close()


async def test_without_the_parts_it_relies_on_arqs_own_start_runs(redis: Any) -> None:
    pool = redis
    await pool.enqueue_job("count", "plain", _job_id="plain")
    worker = _worker(pool)
    worker._own_start = False  # as when an arq release renames what the script path uses
    await worker.start_jobs([b"plain"])
    await asyncio.gather(*worker.tasks.values())
    assert await pool.get("claim:test:plain") == b"1"
    assert isinstance(worker, Worker)
    await worker.close()


async def test_no_job_is_started_once_a_graceful_shutdown_began(redis: Any) -> None:
    """SIGTERM while every slot is busy and more jobs were read: the running one finishes,
    the waiting ones are left queued for another worker (not started when the slot frees)."""
    pool = redis
    for i in range(3):
        await pool.enqueue_job("count", f"g{i}", 0.3, _job_id=f"g{i}")
    worker = _worker(pool, max_jobs=1, poll_delay=2.0, burst=False, job_completion_wait=5)
    run = asyncio.create_task(worker.async_run())
    await asyncio.sleep(0.1)  # g0 runs, start_jobs waits for its slot with g1 and g2 read
    worker.handle_sig_wait_for_completion(signal.SIGTERM)
    await asyncio.sleep(0.6)
    assert [await pool.get(f"claim:test:g{i}") for i in range(3)] == [b"1", None, None]
    assert worker.jobs_complete == 1
    assert sorted(await pool.zrange(default_queue_name, 0, -1)) == [b"g1", b"g2"]
    run.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await run
    await worker.close()
