"""Redis Sentinel: REDIS_URL=redis+sentinel://… works for web and worker, and survives a failover."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from hub.redis_conn import connect
from hub.store import Store
from hub.web import create_app
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
    settings = make_settings(cluster.url, slack_webhook_url=fake_slack.webhook_url)
    env = {**os.environ, "REDIS_URL": cluster.url, "SLACK_WEBHOOK_URL": fake_slack.webhook_url,
           "GITHUB_WEBHOOK_SECRET": GITHUB_SECRET, "HUB_JOB_TIMEOUT": "2", "HUB_SWEEP_GRACE": "2",
           "SLACK_RATE_LIMIT": "0", "HUB_LOG_LEVEL": "WARNING"}
    worker = subprocess.Popen([sys.executable, "-m", "hub", "worker"], env=env, cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
            cluster.primary.kill()
            after = [await _send(c, f"after-{i}") for i in range(10)]
            await wait_for(lambda: all_done(before + after), timeout=60, interval=0.3)
    finally:
        worker.terminate()
        worker.wait(15)
        await redis.aclose()
    assert worker.returncode == 0  # the same process lived through the failover
    assert len(fake_slack.requests) == 20
