"""Sender values that used to name other keys, end to end (signed webhooks → worker → fakes).

Before `hub.storage.keys`, an alert fingerprinted ``V:lock`` stored its incident at V's lock (V then
waited forever), ``V:timeline`` broke V's timeline writes (WRONGTYPE), and a service named
``checkout:production`` read the deploy list of ``checkout`` as its set of environments.
Also here: a poison event is bounded by HUB_MAX_EVENT_RUNS whatever the cause, and a GitHub
deploy replayed under a new delivery id adds nothing to the deploy history.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest

from hub.storage import keys
from hub.storage.event_store import Store
from tests.conftest import github_deploy, make_settings
from tests.grouping_rules import PER_ALERT_RULES
from tests.test_workflows_e2e import Hub, load


def alert(fingerprint: str, **labels: str) -> dict[str, Any]:
    """A Grafana group of one critical firing alert (it pages) with this fingerprint: with
    `grouping: per_alert` (`PER_ALERT_RULES`) the fingerprint is the sender-controlled incident key."""
    group = load("grafana_firing.json")
    one = copy.deepcopy(group["alerts"][0])
    one["fingerprint"] = fingerprint
    one["labels"] = {**one["labels"], **labels}
    group["alerts"] = [one]
    return group


async def test_fingerprints_named_like_sub_keys_do_not_break_the_plain_one(redis_url, redis, upstreams) -> None:
    settings = upstreams.settings(redis_url, hub_config=PER_ALERT_RULES)
    async with Hub(settings, redis) as hub:
        for fp in ("V:lock", "V:timeline", "V:timers"):
            first = await hub.send("grafana", alert(fp))
            assert first["state"] == "done"
        plain = await hub.send("grafana", alert("V"))
        assert plain["state"] == "done"
        assert await hub.done_actions(plain["id"]) == [("pagerduty.trigger", "succeeded"),
                                                       ("incidentio.create_incident", "succeeded")]
        timeline = await hub.incidents.timeline("V")
    pages = sorted(c.json()["dedup_key"] for c in upstreams.pagerduty.calls("/v2/enqueue"))
    assert pages == ["V", "V:lock", "V:timeline", "V:timers"]  # each its own incident, each paged
    assert [e["type"] for e in timeline][:1] == ["opened"]


async def test_a_service_named_like_a_deploy_index_key_still_pages(redis_url, redis, upstreams) -> None:
    settings = upstreams.settings(redis_url, hub_config=PER_ALERT_RULES)
    body, headers = github_deploy(repo="checkout", environment="production", at=time.time() - 30)
    async with Hub(settings, redis) as hub:
        deploy = await hub.send("github", body, headers=headers)
        assert deploy["state"] == "done"
        assert await redis.type(keys.deploys("checkout", "production")) == b"zset"
        fired = await hub.send("grafana", alert("svc-colon", service="checkout:production"))
        assert fired["state"] == "done"
        assert ("pagerduty.trigger", "succeeded") in await hub.done_actions(fired["id"])
        assert [d["service"] for d in await hub.incidents.deploys(["checkout"], 0)] == ["checkout"]
        assert await hub.incidents.deploys(["checkout:production"], 0) == []


async def test_a_replayed_github_deploy_keeps_its_own_time_and_adds_nothing(redis_url, redis, upstreams) -> None:
    settings = upstreams.settings(redis_url, hub_config=PER_ALERT_RULES)
    two_hours_ago = time.time() - 7200
    async with Hub(settings, redis) as hub:
        for delivery in ("orig-delivery", "replayed-under-a-new-id"):
            body, headers = github_deploy(repo="checkout", environment="production", at=two_hours_ago,
                                          delivery=delivery)
            assert (await hub.send("github", body, headers=headers))["state"] == "done"
        history = await hub.incidents.deploys(["checkout"], 0)
        assert [d["at"] for d in history] == [int(two_hours_ago) * 1000]  # one entry, GitHub's time
        fired = await hub.send("grafana", alert("after-replay", service="checkout"))
        assert fired["state"] == "done"
        assert (await hub.incidents.get("after-replay"))["deploys"] == []  # not "deployed shortly before"


# -- poison events are bounded ----------------------------------------------------------------

async def test_an_incident_lock_that_is_not_a_lock_ends_as_a_dead_letter(redis_url, redis, upstreams) -> None:
    """What the collision did, forced: the lock's name holds a hash that will never clear.
    Each run used to retry in 0.2 s without being counted, forever."""
    settings = upstreams.settings(redis_url, hub_max_event_runs=3, hub_config=PER_ALERT_RULES)
    await redis.hset(keys.incident_lock("V"), "stray", "1")
    async with Hub(settings, redis) as hub:
        rec = await hub.send("grafana", alert("V"))
    assert rec["state"] == "dead"
    assert "worker crashed or timed out 3 times" in rec["error"] and "hash, not a lock" in rec["error"]
    assert upstreams.pagerduty.calls("/v2/enqueue") == []


async def test_waiting_for_another_workers_lock_is_not_a_run(redis_url, redis, upstreams) -> None:
    """A real lock (a lease) lapses: waiting for it must not use up the event's runs."""
    settings = upstreams.settings(redis_url, hub_max_event_runs=2)
    await redis.set(keys.incident_lock("V"), "another-worker", px=1500)  # ~7 retries of 0.2 s
    async with Hub(settings, redis) as hub:
        rec = await hub.send("grafana", alert("V"))
    assert rec["state"] == "done"  # ~7 waits, 2 runs allowed


async def test_a_run_that_raises_is_counted_and_dead_after_max_runs_with_its_error(
        redis_url, redis, monkeypatch: pytest.MonkeyPatch) -> None:
    from hub.worker.app import process_event, shutdown, startup
    from hub.worker.processor import Processor

    settings = make_settings(redis_url, hub_max_event_runs=2)
    body, headers = github_deploy()
    ctx: dict[str, Any] = {"settings": settings, "redis": redis}
    await startup(ctx)
    store: Store = ctx["store"]
    ingested = await store.ingest("github", "d-raises", body, headers, "application/json", "test")

    async def boom(self: Processor, *args: Any, **kwargs: Any) -> None:
        raise ConnectionResetError("the run failed for a reason the hub cannot fix")

    monkeypatch.setattr(Processor, "_process", boom)
    try:
        for _ in range(2):
            with pytest.raises(ConnectionResetError):
                await process_event(ctx, ingested.event_id)
        assert await process_event(ctx, ingested.event_id) is None
    finally:
        await shutdown(ctx)
    rec = await store.get(ingested.event_id)
    assert rec["state"] == "dead"
    assert rec["error"].endswith("last error: ConnectionResetError: the run failed for a reason the hub cannot fix")
    assert (await store.timeline(ingested.event_id))[-1]["state"] == "dead"
