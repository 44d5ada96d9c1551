"""Timers, the worker's side: a delayed step is armed once, cancelled by a resolution, fired when due."""

from __future__ import annotations

from typing import Any

from hub.storage.event_store import ARQ_QUEUE, now_ms
from hub.storage.incidents import incident_key
from hub.worker.processor import Processor
from tests.worker.conftest import grafana_group, ingest


async def armed(processor: Processor, delivery: str) -> tuple[str, str, str, dict[str, Any]]:
    """An event processed: (event id, incident key, timer id, timer spec)."""
    event_id = await ingest(processor.store, grafana_group(), delivery)
    key = incident_key(processor.normalise(await processor.store.get(event_id))[0])
    assert key and await processor.process(event_id) is None
    ((timer_id, spec),) = (await processor.incidents.timers(key)).items()
    return event_id, key, timer_id, spec


async def test_a_delayed_step_is_armed_an_hour_after_its_anchor(redis: Any, processor: Processor) -> None:
    event_id, key, timer_id, spec = await armed(processor, "d-timer-1")
    assert spec["due_ms"] - spec["anchor_ms"] == 3600 * 1000
    assert int(await redis.zscore(ARQ_QUEUE, timer_id)) == spec["due_ms"]
    (record,) = [a for a in (await processor.store.actions(event_id)).values() if a.get("timer")]
    assert record["state"] == "pending" and record["scheduled_for"] == spec["due_ms"]
    assert "timer_scheduled" in [e["type"] for e in await processor.incidents.timeline(key)]


async def test_a_timer_not_due_yet_defers_itself_and_sends_nothing(processor: Processor, fake_slack: Any) -> None:
    _, _, _, spec = await armed(processor, "d-timer-2")
    outcome, defer = await processor.fire_timer(spec)
    assert outcome == "not due yet" and defer is not None and 3500 < defer <= 3600
    assert len(fake_slack.requests) == 1  # the immediate notice only


async def test_a_due_timer_runs_its_step_once_and_unlists_itself(processor: Processor, fake_slack: Any) -> None:
    event_id, key, _, spec = await armed(processor, "d-timer-3")
    spec = {**spec, "anchor_ms": now_ms() - 3600 * 1000 - 1000}  # as if an hour had passed
    assert await processor.fire_timer(spec) == ("fired", None)
    assert [r.json()["text"].startswith("still firing") for r in fake_slack.requests] == [False, True]
    (record,) = [a for a in (await processor.store.actions(event_id)).values() if a.get("timer")]
    assert record["state"] == "succeeded"
    assert await processor.incidents.timers(key) == {}
    assert await processor.fire_timer(spec) == ("not listed (cancelled or already fired)", None)
    assert len(fake_slack.requests) == 2


async def test_cancelling_closes_the_pending_actions_and_leaves_a_line(redis: Any, processor: Processor,
                                                                       fake_slack: Any) -> None:
    event_id, key, timer_id, spec = await armed(processor, "d-timer-4")
    assert await processor.cancel_timers(key, "resolved by a test") == 1
    assert await redis.zscore(ARQ_QUEUE, timer_id) is None
    (record,) = [a for a in (await processor.store.actions(event_id)).values() if a.get("timer")]
    assert record["state"] == "skipped" and record["error"] == "cancelled: resolved by a test"
    assert "timer_cancelled" in [e["type"] for e in await processor.incidents.timeline(key)]
    assert await processor.fire_timer({**spec, "anchor_ms": 0}) == ("not listed (cancelled or already fired)", None)
    assert len(fake_slack.requests) == 1


async def test_a_resolution_cancels_the_incidents_timers(processor: Processor) -> None:
    _, key, _, _ = await armed(processor, "d-timer-5")
    resolved = await ingest(processor.store, grafana_group(status="resolved"), "d-timer-5-resolved")
    assert await processor.process(resolved) is None
    assert await processor.incidents.timers(key) == {}
