"""Killed workers and restarted Redis: an acked event still reaches a final state, once.

These start real processes (`python -m hub worker`) against a real redis-server, so they
are the slowest tests in the suite (seconds each).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from hub.ingress.app import create_app
from hub.storage.connection import connect
from hub.storage.embedded_redis import EmbeddedRedis
from hub.storage.event_store import Store
from tests.conftest import GITHUB_SECRET, final_record, fixture_request, github_deploy_failure, make_settings, wait_for
from tests.fakes.slack import FakeSlack

pytestmark = pytest.mark.slow


class CountingSlack(FakeSlack):
    """Slack that stalls the first request (so a worker can be killed mid-call) and counts
    only the deliveries it completed."""

    def __init__(self, stall_first: float = 0.0) -> None:
        super().__init__()
        self.stall_first = stall_first
        self.delivered = 0

    async def hook(self, request: web.Request) -> web.Response:
        if self.stall_first and len(self.requests) == 1:
            await asyncio.sleep(self.stall_first)
            return web.Response(status=504, text="stalled")
        response = await super().hook(request)
        if response.status == 200:
            self.delivered += 1
        return response


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis", appendonly=True).start()
    yield server
    server.kill()


def worker_process(redis_url: str, slack_url: str, cwd: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "REDIS_URL": redis_url, "SLACK_WEBHOOK_URL": slack_url,
           "GITHUB_WEBHOOK_SECRET": GITHUB_SECRET, "HUB_JOB_TIMEOUT": "2", "HUB_SWEEP_GRACE": "2",
           "HUB_LOG_LEVEL": "WARNING", "SLACK_RATE_LIMIT": "0"}
    return subprocess.Popen([sys.executable, "-m", "hub", "worker"], env=env, cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture
async def slack_stalling() -> AsyncIterator[CountingSlack]:
    fake = await CountingSlack(stall_first=60).start()
    yield fake
    await fake.close()


async def _post_failure_fixture(settings) -> str:
    body, headers = fixture_request("github_deployment_status_failure.json")
    async with TestClient(TestServer(create_app(settings))) as c:
        resp = await c.post("/webhooks/github", data=body, headers=headers)
        assert resp.status == 202
        return (await resp.json())["event_id"]


async def test_worker_sigkilled_mid_call_event_completes_once(own_redis, slack_stalling, tmp_path) -> None:
    settings = make_settings(own_redis.url, slack_webhook_url=slack_stalling.webhook_url)
    redis = connect(own_redis.url)
    store = Store(redis, settings)
    try:
        event_id = await _post_failure_fixture(settings)
        first = worker_process(own_redis.url, slack_stalling.webhook_url, tmp_path)
        try:
            await wait_for(lambda: _async(len(slack_stalling.requests) >= 1), timeout=20)
            assert (await store.get(event_id))["state"] == "processing"
            first.send_signal(signal.SIGKILL)  # mid-call: Slack has the request, no answer yet
            first.wait()
        finally:
            first.kill()
        second = worker_process(own_redis.url, slack_stalling.webhook_url, tmp_path)
        try:
            rec = await final_record(store, event_id, timeout=40, interval=0.2)
        finally:
            second.terminate()
            second.wait(10)
        assert rec["state"] == "done"
        (action,) = (await store.actions(event_id)).values()
        assert action["state"] == "succeeded"
        assert [a["status"] for a in action["attempts"]] == [200]  # the killed attempt left no record
        assert slack_stalling.delivered == 1
        assert int(rec["runs"]) == 0
    finally:
        await redis.aclose()


async def _async(value):
    return value


@pytest.mark.parametrize("how", ["shutdown", "sigkill"])
async def test_redis_restart_between_ack_and_processing_loses_nothing(own_redis, fake_slack, tmp_path, how) -> None:
    settings = make_settings(own_redis.url, slack_webhook_url=fake_slack.webhook_url)
    event_ids = []
    for i in range(20):
        body, headers = github_deploy_failure(f"restart-{i}")
        async with TestClient(TestServer(create_app(settings))) as c:
            resp = await c.post("/webhooks/github", data=body, headers=headers)
            assert resp.status == 202
            event_ids.append((await resp.json())["event_id"])
    if how == "sigkill":
        await asyncio.sleep(1.5)  # appendfsync everysec: writes older than ~1 s are on disk
        own_redis.kill()
    else:
        own_redis.stop()  # SIGTERM: Redis flushes the AOF
    own_redis.start()
    redis = connect(own_redis.url)
    store = Store(redis, settings)
    worker = worker_process(own_redis.url, fake_slack.webhook_url, tmp_path)
    try:
        async def all_done():
            recs = [await store.get(e) for e in event_ids]
            return all(r and r["state"] == "done" for r in recs)
        await wait_for(all_done, timeout=40, interval=0.2)
    finally:
        worker.terminate()
        worker.wait(10)
        await redis.aclose()
    assert len(fake_slack.requests) == 20


async def test_lost_enqueue_is_recovered_by_the_sweeper(redis_url, redis, fake_slack, running_worker) -> None:
    """An event recorded but missing from the queue (e.g. the job key lost) is re-enqueued."""
    settings = make_settings(redis_url, slack_webhook_url=fake_slack.webhook_url, hub_sweep_grace=0.5)
    store = Store(redis, settings)
    event_id = await _post_failure_fixture(settings)
    await redis.delete(f"arq:job:{event_id}")
    await redis.zrem("arq:queue", event_id)
    await asyncio.sleep(0.6)
    from hub.worker.app import shutdown, startup, sweep

    ctx = {"settings": settings, "redis": redis}
    await startup(ctx)
    try:
        assert await sweep(ctx) == 1
        assert await sweep(ctx) == 0  # already queued: not enqueued twice
    finally:
        await shutdown(ctx)
    async with running_worker(settings):
        async def done():
            return (await store.get(event_id))["state"] == "done"
        await wait_for(done, timeout=15)
    assert len(fake_slack.requests) == 1
    assert any(e["type"] == "requeued" for e in await store.timeline(event_id))


async def test_poison_event_goes_dead_after_max_runs(redis_url, redis) -> None:
    """An event whose processing keeps crashing the worker is not retried forever."""
    settings = make_settings(redis_url, hub_max_event_runs=2)
    store = Store(redis, settings)
    event_id = await _post_failure_fixture(settings)
    await redis.hset(f"hub:ev:{event_id}", "runs", 2)  # two runs that never finished
    from hub.worker.app import process_event, shutdown, startup

    ctx = {"settings": settings, "redis": redis}
    await startup(ctx)
    try:
        await process_event(ctx, event_id)
    finally:
        await shutdown(ctx)
    rec = await store.get(event_id)
    assert rec["state"] == "dead" and "crashed or timed out" in rec["error"]


async def test_every_enqueued_job_is_json_never_pickle(redis_url, redis) -> None:
    """Jobs enqueued through the shared client (sweeper, replay, timers) are JSON."""
    import json

    await redis.enqueue_job("process_event", "ev_x", _job_id="ev_x")
    raw = await redis.get("arq:job:ev_x")
    assert json.loads(raw)["f"] == "process_event"


class SlowSlack(CountingSlack):
    """Answers every request after `delay` seconds; `started` is set when one arrives."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.started = asyncio.Event()

    async def hook(self, request: web.Request) -> web.Response:
        self.started.set()
        await asyncio.sleep(self.delay)
        return await super().hook(request)


async def test_sigterm_lets_the_in_flight_job_finish(own_redis, tmp_path) -> None:
    """Graceful shutdown: a worker told to stop mid-call completes the call before exiting."""
    slack = await SlowSlack(delay=1).start()  # under the 2 s job timeout
    settings = make_settings(own_redis.url, slack_webhook_url=slack.webhook_url)
    redis = connect(own_redis.url)
    store = Store(redis, settings)
    try:
        event_id = await _post_failure_fixture(settings)
        worker = worker_process(own_redis.url, slack.webhook_url, tmp_path)
        await asyncio.wait_for(slack.started.wait(), 20)
        worker.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(worker.wait, 30) == 0
        rec = await store.get(event_id)
        assert rec["state"] == "done"
        assert slack.delivered == 1
    finally:
        await redis.aclose()
        await slack.close()


async def test_worker_survives_redis_outage_without_restart(own_redis, fake_slack, tmp_path) -> None:
    """Redis down for a while: the worker process reconnects by itself and drains the queue."""
    settings = make_settings(own_redis.url, slack_webhook_url=fake_slack.webhook_url)
    worker = worker_process(own_redis.url, fake_slack.webhook_url, tmp_path)
    redis = connect(own_redis.url)
    store = Store(redis, settings)
    try:
        await wait_for(lambda: store.live_workers(), timeout=20)
        own_redis.stop()
        await asyncio.sleep(3)
        assert worker.poll() is None  # still running while Redis is away
        own_redis.start()
        event_id = await _post_failure_fixture(settings)

        async def done():
            return (await store.get(event_id))["state"] == "done"
        await wait_for(done, timeout=60, interval=0.2)
        assert worker.poll() is None
    finally:
        worker.terminate()
        worker.wait(15)
        await redis.aclose()
    assert len(fake_slack.requests) == 1
