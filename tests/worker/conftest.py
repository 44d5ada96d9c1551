"""Fixtures for the worker's unit tests: a tiny rules file, a real Redis, a fake Slack.

The pieces are driven directly (no arq worker): an event is ingested into the `Store`,
then `Processor.process` / the planner / the timers are called by hand.
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hub.core.settings import Settings
from hub.rules import Rules, load_rules
from hub.storage.event_store import Store
from hub.storage.ratelimit import RateLimiter
from hub.worker.actions import ActionRunner
from hub.worker.app import build_connectors
from hub.worker.processor import Processor
from tests.conftest import FIXTURES, make_settings

#: One immediate notice and one reminder an hour later, per firing alert; a resolution cancels it.
RULES = """\
version: 1
workflows:
  - name: announce
    on: [alert.firing]
    if: {resolved: false}
    do:
      - id: notify
        action: slack.notify
        with: {text: "firing: {{ incident.title }}"}
      - id: remind
        after: 1h
        unless: resolved
        action: slack.notify
        with: {text: "still firing: {{ incident.title }}"}
  - name: calm
    on: [alert.resolved]
    do:
      - id: stop
        action: hub.cancel_timers
"""


def grafana_group(fingerprint: str = "fp-worker-1", status: str = "firing") -> bytes:
    """A Grafana notification of one alert with this fingerprint."""
    group = json.loads((FIXTURES / "grafana_firing.json").read_text())
    one = copy.deepcopy(group["alerts"][0])
    one["fingerprint"] = fingerprint
    one["status"] = status
    group["alerts"] = [one]
    group["status"] = status
    return json.dumps(group).encode()


async def ingest(store: Store, body: bytes, delivery: str) -> str:
    got = await store.ingest("grafana", delivery, body, {"Content-Type": "application/json"},
                             "application/json", "test")
    return got.event_id


async def snapshot(redis: Any) -> dict[bytes, Any]:
    """Every key with its type and content: what a read-only call must leave as it was."""
    out: dict[bytes, Any] = {}
    for key in sorted(await redis.keys("*")):
        kind = (await redis.type(key)).decode()
        if kind == "hash":
            out[key] = await redis.hgetall(key)
        elif kind == "list":
            out[key] = await redis.lrange(key, 0, -1)
        elif kind == "zset":
            out[key] = await redis.zrange(key, 0, -1, withscores=True)
        elif kind == "set":
            out[key] = sorted(await redis.smembers(key))
        else:
            out[key] = await redis.get(key)
    return out


@pytest.fixture
def rules_path(tmp_path: Path) -> Path:
    path = tmp_path / "hub.yaml"
    path.write_text(RULES)
    return path


@pytest.fixture
def worker_settings(redis_url: str, rules_path: Path, fake_slack: Any, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("SLACK_RATE_LIMIT", "0")
    return make_settings(redis_url, hub_config=rules_path, slack_webhook_url=fake_slack.webhook_url)


@pytest.fixture
def rules(rules_path: Path) -> Rules:
    return load_rules(rules_path)


@pytest.fixture
async def processor(redis: Any, worker_settings: Settings, rules: Rules) -> AsyncIterator[Processor]:
    store = Store(redis, worker_settings)
    async with aiohttp.ClientSession() as http:
        connectors = build_connectors(worker_settings, http, redis)
        runner = ActionRunner(store, connectors, RateLimiter(redis))
        yield Processor(store, rules, runner, worker_settings.hub_max_event_runs)
