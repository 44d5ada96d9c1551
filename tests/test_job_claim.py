"""Taking queued jobs with one script (`hub.worker.job_claim.ClaimingWorker`), against the real
Redis of the root conftest: each job runs once, what is running elsewhere or not yet due is
left alone, and the in-progress mark is arq's own. A job that ends itself in its own last
write (`RunningJob.into`) is not finished again by arq; an event job's take also starts its run."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Any

import pytest
from arq import Retry, Worker, func
from arq.constants import default_queue_name, in_progress_key_prefix, job_key_prefix, retry_key_prefix

from hub.storage.batch import Batch
from hub.storage.connection import connect, json_dumps, json_loads
from hub.worker.job_claim import ClaimingWorker, current_job


async def _count(ctx: dict[str, Any], name: str, sleep: float = 0.0) -> None:
    await ctx["redis"].incr(f"claim:test:{name}")
    if sleep:
        await asyncio.sleep(sleep)


async def _end_itself(ctx: dict[str, Any], name: str, then: str = "") -> None:
    """Counts its run and ends its job in that same batch, then returns, retries or fails."""
    end = current_job.get()
    assert end is not None and end.job_id == ctx["job_id"]
    p = Batch()
    p.hset(f"claim:test:end:{name}", "ended", "1")
    if then == "broken":
        p.hset(f"claim:test:not-a-hash:{name}", "x", "1")  # a string key: this write fails
    end.into(p)
    await ctx["redis"].incr(f"claim:test:{name}")
    await p.execute(ctx["redis"])
    end.written()
    if then == "retry":
        raise Retry(defer=0.05)
    if then == "fail":
        raise RuntimeError("failed after its end was written")


async def _note_try(ctx: dict[str, Any], name: str, retries: int = 0) -> None:
    """Notes each try's number; asks for `retries` more tries."""
    await ctx["redis"].rpush(f"claim:test:tries:{name}", ctx["job_try"])
    if ctx["job_try"] <= retries:
        raise Retry(defer=0.01)


def _worker(redis: Any, **options: Any) -> ClaimingWorker:
    base: dict[str, Any] = {"burst": True, "handle_signals": False, "keep_result": 0, "poll_delay": 0.05,
                            "job_serializer": json_dumps, "job_deserializer": json_loads, "max_jobs": 5}
    worker = ClaimingWorker(functions=[func(_count, name="count"), func(_end_itself, name="end"),
                                       func(_note_try, name="tries")],
                            redis_pool=redis, **{**base, **options})
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


@pytest.fixture
def arq_finishes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The job ids arq's own finishing transaction ran for."""
    seen: list[str] = []
    original = Worker.finish_job

    async def finish_job(self: Worker, job_id: str, *args: Any, **kwargs: Any) -> None:
        seen.append(job_id)
        await original(self, job_id, *args, **kwargs)

    monkeypatch.setattr(Worker, "finish_job", finish_job)
    return seen


async def _job_keys(pool: Any, job_id: str) -> list[str]:
    keys = [in_progress_key_prefix + job_id, retry_key_prefix + job_id, job_key_prefix + job_id]
    left = [k for k in keys if await pool.exists(k)]
    if await pool.zscore(default_queue_name, job_id) is not None:
        left.append(default_queue_name)
    return left


@pytest.mark.parametrize("then", ["", "retry", "fail"])
async def test_a_job_that_ended_itself_is_not_finished_again_by_arq(redis: Any, arq_finishes: list[str],
                                                                    then: str) -> None:
    """Its own write took it off the queue and deleted arq's keys for it; arq's transaction is
    skipped, and a Retry or failure raised after that write does not run it again."""
    pool = redis
    await pool.enqueue_job("end", "self", then, _job_id="self")
    await pool.enqueue_job("count", "plain", _job_id="plain")
    worker = _worker(pool)
    await worker.async_run()
    await asyncio.sleep(0.2)  # a retry, had it been queued, would be due by now
    await worker.async_run()
    assert await pool.get("claim:test:self") == b"1"  # ran once
    assert await pool.hget("claim:test:end:self", "ended") == b"1"
    assert await _job_keys(pool, "self") == []
    assert arq_finishes == ["plain"]  # the job that did not end itself is arq's to finish
    assert await _job_keys(pool, "plain") == []
    assert worker._ended == set()
    await worker.close()


async def test_a_job_whose_own_end_failed_is_finished_by_arq(redis: Any, arq_finishes: list[str]) -> None:
    pool = redis
    await pool.set("claim:test:not-a-hash:broken", "text")
    await pool.enqueue_job("end", "broken", "broken", _job_id="broken")
    worker = _worker(pool)
    await worker.async_run()
    assert worker.jobs_failed == 1
    assert arq_finishes == ["broken"]
    assert await _job_keys(pool, "broken") == []
    await worker.close()


async def test_an_events_job_starts_its_run_in_the_take_and_ends_in_its_final_write(
        redis_url: str, redis: Any, running_worker: Any, arq_finishes: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The script that takes an event's job also counts the event's run and reads its record
    (the job does not start it again), and the event's final write also ends the job: no arq
    transaction after it."""
    from aiohttp.test_utils import TestClient, TestServer

    from hub.ingress.app import create_app
    from hub.storage.event_store import Store
    from tests.conftest import final_record, fixture_request, make_settings

    starts: list[str] = []
    original_start = Store.start

    async def start(self: Store, event_id: str, key: str | None = None) -> Any:
        starts.append(event_id)
        return await original_start(self, event_id, key)

    monkeypatch.setattr(Store, "start", start)
    settings = make_settings(redis_url)
    store = Store(redis, settings)
    body, headers = fixture_request("github_deployment_status_failure.json")
    counted = int((await redis.info("commandstats")).get("cmdstat_hincrby", {}).get("calls", 0))
    async with TestClient(TestServer(create_app(settings))) as c, running_worker(settings):
        event_id = (await (await c.post("/webhooks/github", data=body, headers=headers)).json())["event_id"]

        async def job_gone() -> bool:
            return not await _job_keys(redis, event_id)

        rec = await final_record(store, event_id, until=job_gone)
        await asyncio.sleep(0.1)
    assert rec["state"] == "done"
    assert event_id not in arq_finishes
    assert starts == []  # the take started the run
    assert int((await redis.info("commandstats"))["cmdstat_hincrby"]["calls"]) - counted == 1  # counted once


async def test_a_job_that_does_not_run_the_event_of_its_id_starts_no_run(redis: Any, redis_url: str) -> None:
    """A job whose id looks like an event's but runs another function leaves the record alone."""
    from hub.storage.event_store import ev_key

    event_id = "ev_0123456789abcdef0123"
    await redis.hset(ev_key(event_id), mapping={"state": "accepted", "received_at": 1})
    await redis.enqueue_job("count", event_id, _job_id=event_id)
    pool = connect(redis_url, lane=2)
    try:
        worker = _worker(pool)
        await worker.async_run()
        assert await pool.get(f"claim:test:{event_id}") == b"1"
        assert await pool.hget(ev_key(event_id), "runs") is None
        await worker.close()
    finally:
        await pool.aclose()


async def _multis(redis: Any) -> int:
    return int((await redis.info("commandstats")).get("cmdstat_multi", {}).get("calls", 0))


@pytest.mark.parametrize("lane", [4, 0])
async def test_a_jobs_try_is_counted_once_per_run(redis_url: str, lane: int) -> None:
    """Each try's number as arq counts it (1, 2, 3), whether the take began the try (the lane
    client: arq's own transaction for it is answered, not sent) or arq's transaction did."""
    pool = connect(redis_url, lane=lane)
    try:
        await pool.enqueue_job("tries", "t", 2, _job_id="t")
        worker = _worker(pool)
        multis = await _multis(pool)
        await worker.async_run()
        sent = await _multis(pool) - multis
        assert await pool.lrange("claim:test:tries:t", 0, -1) == [b"1", b"2", b"3"]
        assert await _job_keys(pool, "t") == []
        # arq's finish (3 runs), plus its begin when the take did not do it
        assert sent == (3 if lane else 6)
        await worker.close()
    finally:
        await pool.aclose()


async def test_a_transaction_other_than_the_one_run_ahead_is_sent(redis_url: str) -> None:
    from hub.storage.lane import Answered, answered_ahead

    pool = connect(redis_url, lane=2)
    try:
        answered_ahead.set(Answered([("GET", "claim:test:a")], [b"from the script"]))
        async with pool.pipeline(transaction=True) as pipe:
            pipe.set("claim:test:b", "1")
            assert await pipe.execute() == [True]  # sent: not what was run ahead
        assert answered_ahead.get() is None  # used up either way
        answered_ahead.set(Answered([("GET", "claim:test:a")], [b"from the script"]))
        async with pool.pipeline(transaction=True) as pipe:
            pipe.get("claim:test:a")
            assert await pipe.execute() == [b"from the script"]
        assert await pool.get("claim:test:b") == b"1"
    finally:
        await pool.aclose()
