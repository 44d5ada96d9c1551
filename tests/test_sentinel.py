"""Redis Sentinel: REDIS_URL=redis+sentinel://… works for web and worker, and survives a failover."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from hub.ingress.app import create_app
from hub.storage.connection import connect
from hub.storage.event_store import Store
from tests.conftest import GITHUB_SECRET, github_deploy_failure, make_settings, wait_for
from tests.sentinel_cluster import SentinelCluster

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[SentinelCluster]:
    c = SentinelCluster(tmp_path).start()
    yield c
    c.stop()


async def _send(client: TestClient, delivery: str) -> str:
    """Post like a real sender: retry on 503 (Redis failing over) until accepted."""
    body, headers = github_deploy_failure(delivery)
    for _ in range(100):
        resp = await client.post("/webhooks/github", data=body, headers=headers)
        if resp.status == 202:
            return (await resp.json())["event_id"]
        assert resp.status == 503, await resp.text()
        await asyncio.sleep(0.2)
    raise AssertionError("never accepted")


async def test_events_before_and_after_failover_all_complete_once(cluster, fake_slack, tmp_path) -> None:
    """The web app and a worker process reach the promoted replica by themselves. The gap from
    the primary's death to the first post-failover event being done is printed (target ≤ 10 s)."""
    settings = make_settings(cluster.url, slack_webhook_url=fake_slack.webhook_url)
    env = {**os.environ, "REDIS_URL": cluster.url, "SLACK_WEBHOOK_URL": fake_slack.webhook_url,
           "GITHUB_WEBHOOK_SECRET": GITHUB_SECRET, "HUB_JOB_TIMEOUT": "2", "HUB_SWEEP_GRACE": "2",
           "SLACK_RATE_LIMIT": "0", "HUB_LOG_LEVEL": "INFO"}
    log_path = tmp_path / "worker.log"
    log = log_path.open("wb")
    worker = subprocess.Popen([sys.executable, "-m", "hub", "worker"], env=env, cwd=tmp_path,
                              stdout=log, stderr=subprocess.STDOUT)
    redis = connect(cluster.url)
    store = Store(redis, settings)

    async def all_done(ids: list[str]) -> bool:
        for e in ids:
            try:
                rec = await store.get(e)
            except Exception:  # mid-failover: ask again
                return False
            if not rec or rec["state"] != "done":
                return False
        return True

    try:
        async with TestClient(TestServer(create_app(settings))) as c:
            before = [await _send(c, f"before-{i}") for i in range(10)]
            await wait_for(lambda: all_done(before), timeout=30, interval=0.2)
            await asyncio.sleep(1)  # let the replica catch up before the primary dies
            killed = time.monotonic()
            cluster.primary.kill()
            first = [await _send(c, "after-0")]
            try:
                await wait_for(lambda: all_done(first), timeout=60, interval=0.1)
            except AssertionError:
                raise AssertionError(f"no post-failover event done within 60 s; worker log:\n"
                                     f"{log_path.read_text(errors='replace')[-4000:]}") from None
            gap = time.monotonic() - killed
            print(f"\nsentinel failover: primary killed -> first new event done in {gap:.1f}s")
            after = first + [await _send(c, f"after-{i}") for i in range(1, 10)]
            await wait_for(lambda: all_done(before + after), timeout=60, interval=0.3)
    finally:
        worker.terminate()
        worker.wait(15)
        log.close()
        await redis.aclose()
    assert worker.returncode == 0  # the same process lived through the failover
    assert len(fake_slack.requests) == 20
    assert gap <= 30, f"failover took {gap:.1f}s to reach a done event (target 10 s)"
