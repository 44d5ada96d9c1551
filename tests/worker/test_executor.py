"""The executor: one run enters (locks), commits, runs the steps and finishes, idempotently."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hub.storage import keys
from hub.storage.event_store import Store
from hub.storage.incidents import incident_key
from hub.worker.executor import LOCK_RETRY_S
from hub.worker.processor import Processor
from tests.worker.conftest import grafana_group, ingest


async def test_a_run_pins_advances_the_incident_runs_its_steps_and_unlocks(redis: Any, processor: Processor,
                                                                           fake_slack: Any) -> None:
    store = processor.store
    event_id = await ingest(store, grafana_group(), "d-exec-1")
    key = incident_key(processor.normalise(await store.get(event_id))[0])
    assert key
    assert await processor.process(event_id) is None
    rec = await store.get(event_id)
    assert rec["state"] == "done"
    assert json.loads(rec["incident_ctx"])["keys"] == [key]  # pinned on the first run
    incident = await processor.incidents.get(key)
    assert incident is not None and incident["episode"] == 1
    actions = await store.actions(event_id)
    assert sorted(a["state"] for a in actions.values()) == ["pending", "succeeded"]  # the reminder waits
    claims = await processor.incidents.claims({s.subject for s in (await processor.plan(rec))[1]})
    assert {owner for owned in claims.values() for owner in owned.values()} == {event_id}
    assert await redis.exists(keys.incident_lock(key)) == 0
    assert len(fake_slack.requests) == 1


async def test_a_firing_processed_after_its_later_received_resolution_sends_nothing(
        processor: Processor, fake_slack: Any) -> None:
    """Two jobs of one alert run out of order: the resolution first. The firing, received
    earlier, must not reopen the incident and announce an alert that has already recovered."""
    store = processor.store
    fired = await ingest(store, grafana_group("fp-order"), "d-order-1")
    await asyncio.sleep(0.005)  # received in a later millisecond (a tie counts as later: it would page)
    resolved = await ingest(store, grafana_group("fp-order", "resolved"), "d-order-2")
    assert await processor.process(resolved) is None
    assert await processor.process(fired) is None
    key = incident_key(processor.normalise(await store.get(fired))[0])
    incident = await processor.incidents.get(key)
    assert incident is not None and incident["resolved_at"] is not None and incident["episode"] == 1
    assert fake_slack.requests == []
    assert (await store.get(fired))["state"] == "done"


async def test_a_second_run_of_a_finished_event_does_nothing(processor: Processor, fake_slack: Any) -> None:
    store: Store = processor.store
    event_id = await ingest(store, grafana_group(), "d-exec-2")
    assert await processor.process(event_id) is None
    timeline = await store.timeline(event_id)
    assert await processor.process(event_id) is None
    assert await store.timeline(event_id) == timeline
    assert len(fake_slack.requests) == 1


async def test_an_incident_another_worker_holds_is_tried_again_without_side_effects(
        redis: Any, processor: Processor, fake_slack: Any) -> None:
    store = processor.store
    event_id = await ingest(store, grafana_group(), "d-exec-3")
    key = incident_key(processor.normalise(await store.get(event_id))[0])
    assert key
    await redis.set(keys.incident_lock(key), "another-worker", px=60_000)
    assert await processor.process(event_id) == LOCK_RETRY_S
    rec = await store.get(event_id)
    assert rec["state"] == "accepted" and "incident_ctx" not in rec
    assert int(rec.get("runs") or 0) == 0  # waiting for a lease is not a run
    assert await processor.incidents.get(key) is None and fake_slack.requests == []
    await redis.delete(keys.incident_lock(key))
    assert await processor.process(event_id) is None
    assert (await store.get(event_id))["state"] == "done"


async def test_a_parser_failure_is_a_dead_letter_with_its_reason(processor: Processor) -> None:
    store = processor.store
    event_id = await ingest(store, b"{not json", "d-exec-4")
    assert await processor.process(event_id) is None
    rec = await store.get(event_id)
    assert rec["state"] == "dead" and rec["error"].startswith("parse failed: ")
