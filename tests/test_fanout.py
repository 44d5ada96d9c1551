"""Bounded fan-out (issue 18): a large alert group is worked in chunk jobs, progress survives
short job timeouts, and alerts past HUB_MAX_ALERTS_PER_EVENT are dropped visibly.

Real Redis, the real app and worker, the fake PagerDuty over loopback.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from hub.core import metrics
from hub.core.settings import Settings
from hub.ingress.app import create_app
from hub.operators.replay import replay_event
from hub.storage import alert_groups
from hub.storage.event_store import ARQ_JOB_PREFIX, ARQ_QUEUE, FINAL_STATES, PROCESS_JOB, Store
from hub.worker.chunks import CHUNK_JOB, chunk_key, job_id, results_key
from tests.conftest import FIXTURES, make_settings, wait_for
from tests.fakes.base import Fault
from tests.fakes.pagerduty import FakePagerDuty
from tests.grouping_rules import PER_ALERT_RULES

TOKEN = "am-fanout-token"
ROUTING_KEY = "FANOUTROUTINGKEY0123456789ABCDEF"


def group(n: int, first: int = 0) -> bytes:
    """An Alertmanager group of `n` firing critical alerts, each its own fingerprint."""
    data = json.loads((FIXTURES / "alertmanager_firing.json").read_bytes())
    template = data["alerts"][0]
    alerts = []
    for i in range(first, first + n):
        alert = json.loads(json.dumps(template))
        alert["fingerprint"] = f"{0xF0000000 + i:016x}"
        alert["labels"] = {**alert["labels"], "pod": f"api-{i}", "severity": "critical"}
        alerts.append(alert)
    data["alerts"] = alerts
    return json.dumps(data).encode()


def fingerprints(n: int, first: int = 0) -> set[str]:
    return {f"{0xF0000000 + i:016x}" for i in range(first, first + n)}


@pytest.fixture(autouse=True)
def no_rate_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PAGERDUTY", "INCIDENTIO", "SLACK", "OPSGENIE", "STATUSPAGE", "JIRA"):
        monkeypatch.setenv(f"{name}_RATE_LIMIT", "0")


@pytest.fixture
async def pd() -> AsyncIterator[FakePagerDuty]:
    fake = await FakePagerDuty().start()
    yield fake
    await fake.close()


def fan_settings(redis_url: str, pd: FakePagerDuty, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"hub_max_alerts_per_job": 50, "hub_config": PER_ALERT_RULES, **overrides}
    return make_settings(redis_url, alertmanager_webhook_token=TOKEN, pagerduty_routing_key=ROUTING_KEY,
                         pagerduty_events_url=pd.events_url, **values)


async def post(settings: Settings, body: bytes) -> str:
    async with TestClient(TestServer(create_app(settings))) as c:
        resp = await c.post("/webhooks/alertmanager", data=body,
                            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        assert resp.status == 202, await resp.text()
        return (await resp.json())["event_id"]


async def final(store: Store, event_id: str, timeout: float = 60) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        rec = await store.get(event_id)
        return rec if rec and rec["state"] in FINAL_STATES else None
    return await wait_for(check, timeout=timeout)


def paged(pd: FakePagerDuty) -> Counter[str]:
    """Trigger requests per dedup key, as PagerDuty received them."""
    return Counter(r.json()["dedup_key"] for r in pd.requests if r.json().get("event_action") == "trigger")


async def test_large_group_runs_in_chunk_jobs_and_pages_each_alert_once(
        redis_url: str, redis: Any, pd: FakePagerDuty, running_worker: Any) -> None:
    settings = fan_settings(redis_url, pd)
    store = Store(redis, settings)
    seen_jobs: set[str] = set()

    async def note_running_chunk_jobs() -> None:  # which arq jobs are in progress as PagerDuty is called
        seen_jobs.update(k.decode().removeprefix("arq:in-progress:") for k in await redis.keys("arq:in-progress:*"))

    pd.on_request = note_running_chunk_jobs
    event_id = await post(settings, group(250))
    async with running_worker(settings):
        rec = await final(store, event_id)
    assert rec["state"] == "done"
    assert paged(pd) == Counter({f: 1 for f in fingerprints(250)})  # each alert once, none missing
    assert {a.dedup_key for a in pd.created} == fingerprints(250)
    assert rec["chunks"] == "5" and rec["chunk_size"] == "50"
    assert {job_id(event_id, k) for k in range(5)} <= seen_jobs  # the calls went out from chunk jobs
    for k in range(5):
        chunk = await redis.hgetall(chunk_key(event_id, k))
        assert chunk[b"state"] == b"done" and (int(chunk[b"lo"]), int(chunk[b"hi"])) == (50 * k, 50 * k + 50)
        assert 0 < await redis.ttl(chunk_key(event_id, k)) <= settings.hub_retention  # expire with the event
    timeline = await store.timeline(event_id)
    assert sorted(e["chunk"] for e in timeline if e["type"] == "chunk") == [0, 1, 2, 3, 4]
    assert next(e for e in timeline if e["type"] == "fanned_out")["chunks"] == 5
    assert timeline[-1] == {**timeline[-1], "type": "state", "state": "done", "chunks": 5}
    actions = await store.actions(event_id)
    assert Counter(a["state"] for a in actions.values() if a["connector"] == "pagerduty") == {"succeeded": 250}
    assert await redis.zscore("hub:pending", event_id) is None
    assert await redis.zscore("hub:idx:state:done", event_id) is not None
    assert await redis.zscore("hub:idx:state:processing", event_id) is None


async def test_a_large_group_is_one_incident_paged_once_across_its_chunks(
        redis_url: str, redis: Any, pd: FakePagerDuty, running_worker: Any) -> None:
    settings = fan_settings(redis_url, pd, hub_config=None)  # the built-in rules: the group is one unit
    store = Store(redis, settings)
    event_id = await post(settings, group(250, first=2000))
    async with running_worker(settings):
        rec = await final(store, event_id)
    assert rec["state"] == "done" and rec["chunks"] == "5"
    keys = list(paged(pd))
    assert len(keys) == 1 and keys[0].startswith("alertmanager:group:")
    assert paged(pd)[keys[0]] == 1
    members = await alert_groups.members(redis, keys[0])
    assert set(members) == fingerprints(250, first=2000)  # every alert kept on the incident


async def test_a_small_group_is_not_chunked(redis_url: str, redis: Any, pd: FakePagerDuty,
                                            running_worker: Any) -> None:
    settings = fan_settings(redis_url, pd)
    store = Store(redis, settings)
    event_id = await post(settings, group(50, first=1000))
    async with running_worker(settings):
        rec = await final(store, event_id)
    assert rec["state"] == "done" and "chunks" not in rec
    assert {a.dedup_key for a in pd.created} == fingerprints(50, first=1000)


async def test_short_job_timeout_loses_no_progress(redis_url: str, redis: Any, pd: FakePagerDuty,
                                                   running_worker: Any) -> None:
    """Each chunk's calls take longer than the job timeout: runs stop between calls at their
    budget and go on in a fresh job, so no call is cut off (and sent again) and all are paged."""

    async def slow() -> None:
        await asyncio.sleep(0.06)  # 50 pages a chunk: 3 s of calls against a 2 s job timeout

    pd.on_request = slow
    settings = fan_settings(redis_url, pd, hub_job_timeout=2)
    store = Store(redis, settings)
    yielded = metrics.RUNS_YIELDED._value.get()
    event_id = await post(settings, group(150, first=2000))
    async with running_worker(settings):
        rec = await final(store, event_id, timeout=90)
    assert rec["state"] == "done"
    assert paged(pd) == Counter({f: 1 for f in fingerprints(150, first=2000)})  # none re-sent, none missing
    assert metrics.RUNS_YIELDED._value.get() > yielded
    assert "requeued" not in [e["type"] for e in await store.timeline(event_id)]  # no run was lost


async def startup_ctx(settings: Settings, redis: Any) -> dict[str, Any]:
    from hub.worker.app import startup

    ctx: dict[str, Any] = {"settings": settings, "redis": redis}
    await startup(ctx)
    return ctx


async def test_a_run_resumes_where_its_budget_stopped_it(redis_url: str, redis: Any, pd: FakePagerDuty) -> None:
    """Deterministic: with no time budget at all each run makes one call and asks to come back."""
    from hub.worker.app import process_event, shutdown

    settings = fan_settings(redis_url, pd, hub_max_alerts_per_job=4)
    event_id = await post(settings, group(8, first=3000))
    ctx = await startup_ctx(settings, redis)
    try:
        await process_event(ctx, event_id)  # the event's job: splits it, queues 2 chunk jobs
        assert await redis.exists(ARQ_JOB_PREFIX + job_id(event_id, 0), ARQ_JOB_PREFIX + job_id(event_id, 1)) == 2
        processor = ctx["processor"]
        processor.budget = 0.0
        runs, calls = 0, 0
        while (delay := await processor.process(event_id, chunk=0)) is not None:
            runs += 1
            assert len(pd.requests) - calls <= 1  # at most one call a run
            calls = len(pd.requests)
            assert delay < 1 and runs < 50
        assert runs >= 4 and len(pd.requests) == len(pd.created) == 4  # no call repeated
        assert (await redis.hget(chunk_key(event_id, 0), "state")) == b"done"
        assert (await Store(redis, settings).get(event_id))["state"] == "processing"  # chunk 1 to go
    finally:
        await shutdown(ctx)


async def test_a_lost_chunk_job_is_queued_again_through_the_sweeper(redis_url: str, redis: Any,
                                                                    pd: FakePagerDuty) -> None:
    from hub.worker.app import process_event, shutdown, sweep

    settings = fan_settings(redis_url, pd, hub_max_alerts_per_job=3, hub_sweep_grace=0)
    store = Store(redis, settings)
    event_id = await post(settings, group(7, first=4000))
    ctx = await startup_ctx(settings, redis)
    try:
        await process_event(ctx, event_id)
        await redis.delete(ARQ_JOB_PREFIX + job_id(event_id, 1))  # chunk 1's job is lost
        await redis.zrem(ARQ_QUEUE, job_id(event_id, 1))
        for k in (0, 2):
            assert await ctx["processor"].process(event_id, chunk=k) is None
        assert (await store.get(event_id))["state"] == "processing"
        await redis.delete(ARQ_JOB_PREFIX + event_id)
        assert await sweep(ctx) == 1  # the event is stuck: its own job comes back
        job = json.loads(await redis.get(ARQ_JOB_PREFIX + event_id))
        assert job["f"] == PROCESS_JOB
        await process_event(ctx, event_id)  # ... and queues the chunk that is not final
        job = json.loads(await redis.get(ARQ_JOB_PREFIX + job_id(event_id, 1)))
        assert job["f"] == CHUNK_JOB and job["a"] == [event_id, 1]
        assert await ctx["processor"].process(event_id, chunk=1) is None
        assert (await store.get(event_id))["state"] == "done"
        assert {a.dedup_key for a in pd.created} == fingerprints(7, first=4000) and len(pd.requests) == 7
        # a chunk job run again after the end changes nothing
        assert await ctx["processor"].process(event_id, chunk=1) is None
        await process_event(ctx, event_id)
        assert len(pd.requests) == 7
        states = [e.get("state") for e in await store.timeline(event_id) if e["type"] == "state"]
        assert states.count("done") == 1
    finally:
        await shutdown(ctx)


async def test_alerts_past_the_event_limit_are_dropped_noted_and_counted(
        redis_url: str, redis: Any, pd: FakePagerDuty, running_worker: Any) -> None:
    settings = fan_settings(redis_url, pd, hub_max_alerts_per_event=120)
    store = Store(redis, settings)
    before = metrics.ALERTS_TRUNCATED.labels("alertmanager")._value.get()
    event_id = await post(settings, group(150, first=5000))
    async with running_worker(settings):
        rec = await final(store, event_id)
    assert rec["state"] == "done"
    assert {a.dedup_key for a in pd.created} == fingerprints(120, first=5000)  # the first 120, in order
    assert len(rec["events"]) == 120 and rec["truncated_alerts"] == "30"
    (note,) = [e for e in await store.timeline(event_id) if e["type"] == "truncated"]
    assert (note["alerts"], note["kept"], note["dropped"], note["limit"]) == (150, 120, 30, 120)
    assert metrics.ALERTS_TRUNCATED.labels("alertmanager")._value.get() - before == 30
    assert b'hub_alerts_truncated_total{source="alertmanager"}' in metrics.render()[0]


async def test_the_event_limit_applies_without_chunks_too(redis_url: str, redis: Any, pd: FakePagerDuty,
                                                         running_worker: Any) -> None:
    settings = fan_settings(redis_url, pd, hub_max_alerts_per_event=3)
    store = Store(redis, settings)
    event_id = await post(settings, group(5, first=6000))
    async with running_worker(settings):
        rec = await final(store, event_id)
    assert rec["state"] == "done" and "chunks" not in rec
    assert {a.dedup_key for a in pd.created} == fingerprints(3, first=6000)
    assert [e["dropped"] for e in await store.timeline(event_id) if e["type"] == "truncated"] == [2]


async def test_a_failed_chunk_makes_the_event_partially_failed_and_a_replay_finishes_it(
        redis_url: str, redis: Any, pd: FakePagerDuty, running_worker: Any) -> None:
    settings = fan_settings(redis_url, pd, hub_max_alerts_per_job=10)
    store = Store(redis, settings)
    pd.faults.append(Fault(status=400, body='{"status":"invalid event"}'))  # the first page is refused
    event_id = await post(settings, group(30, first=7000))
    async with running_worker(settings):
        rec = await final(store, event_id)
        assert rec["state"] == "partially_failed"
        assert sorted(v.decode() for v in (await redis.hgetall(results_key(event_id))).values()) == \
            ["done", "done", "partially_failed"]
        assert len(pd.created) == 29
        await replay_event(store, event_id)
        rec = await final(store, event_id)
    assert rec["state"] == "done"
    assert {a.dedup_key for a in pd.created} == fingerprints(30, first=7000)
    assert len(pd.requests) == 31  # the refused page once more; nothing else again
    assert (await store.get(event_id))["chunks"] == "3"


def test_operations_doc_names_the_settings() -> None:
    text = (Path(__file__).parents[1] / "docs" / "operations.md").read_text()
    design = (Path(__file__).parents[1] / "docs" / "DESIGN.md").read_text()
    for name in ("HUB_MAX_ALERTS_PER_JOB", "HUB_MAX_ALERTS_PER_EVENT", "hub_alerts_truncated_total"):
        assert name in text
    assert "HUB_MAX_ALERTS_PER_JOB" in design and "HUB_MAX_ALERTS_PER_EVENT" in design


async def test_a_large_grafana_group_is_chunked_too(redis_url: str, redis: Any, pd: FakePagerDuty,
                                                    running_worker: Any) -> None:
    data = json.loads((FIXTURES / "grafana_firing.json").read_bytes())
    template = data["alerts"][0]
    alerts = []
    for i in range(60):
        alert = json.loads(json.dumps(template))
        alert["fingerprint"] = f"{0xE0000000 + i:016x}"
        alert["labels"] = {**alert["labels"], "severity": "critical", "pod": f"g-{i}"}
        alerts.append(alert)
    data["alerts"] = alerts
    settings = fan_settings(redis_url, pd, hub_max_alerts_per_job=25)
    store = Store(redis, settings)
    # recorded as the ingress records a verified delivery
    event_id = (await store.ingest("grafana", "grafana-group-60", json.dumps(data).encode(), {},
                                   "application/json", "hmac")).event_id
    async with running_worker(settings):
        rec = await final(store, event_id)
    assert rec["state"] == "done" and rec["chunks"] == "3"
    assert paged(pd) == Counter({f"{0xE0000000 + i:016x}": 1 for i in range(60)})


async def test_chunk_runs_parse_a_large_body_once_per_worker(redis_url: str, redis: Any, pd: FakePagerDuty,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Every chunk run needs the delivery's events; a 1 MiB group costs ~0.3 s to parse."""
    from hub.core.registry import sources
    from hub.worker.app import process_event, shutdown

    source = sources()["alertmanager"]
    parses = []
    original = source.parse

    def counting(*args: Any, **kwargs: Any) -> Any:
        parses.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(source, "parse", counting)
    settings = fan_settings(redis_url, pd, hub_max_alerts_per_job=5)
    event_id = await post(settings, group(20, first=8000))
    parses.clear()  # the ingress parsed it too
    ctx = await startup_ctx(settings, redis)
    try:
        await process_event(ctx, event_id)
        for k in range(4):
            assert await ctx["processor"].process(event_id, chunk=k) is None
        assert len(parses) == 1
        assert (await Store(redis, settings).get(event_id))["state"] == "done"
        from hub.rules import load_rules

        ctx["processor"].rules = load_rules(settings.rules_path())  # a SIGHUP: parsed afresh
        ctx["processor"].normalise(await Store(redis, settings).get(event_id))
        assert len(parses) == 2
    finally:
        await shutdown(ctx)
