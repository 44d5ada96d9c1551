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
from hub.worker.turns import Turns
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
    processor.turns = Turns(max_wait=0.3, poll=0.1)  # waits in line, looks again, then gives up
    assert await processor.process(event_id) == LOCK_RETRY_S
    rec = await store.get(event_id)
    assert rec["state"] == "accepted" and "incident_ctx" not in rec
    assert int(rec.get("runs") or 0) == 0  # waiting for a lease is not a run
    assert await processor.incidents.get(key) is None and fake_slack.requests == []
    await redis.delete(keys.incident_lock(key))
    assert await processor.process(event_id) is None
    assert (await store.get(event_id))["state"] == "done"


async def test_a_run_that_finds_its_incident_busy_waits_in_line_and_goes_once_it_is_free(
        redis: Any, processor: Processor, fake_slack: Any) -> None:
    """Instead of a deferral to a later poll of arq, the run waits in line and enters as soon
    as the holder lets go; the run is counted once (given back when busy, counted on entry)."""
    store = processor.store
    event_id = await ingest(store, grafana_group("fp-line"), "d-exec-line")
    key = incident_key(processor.normalise(await store.get(event_id))[0])
    assert key
    await redis.set(keys.incident_lock(key), "another-worker", px=60_000)
    processor.turns = Turns(max_wait=30, poll=0.05)
    runs_at_call: list[int] = []

    async def count_runs() -> None:
        runs_at_call.append(int((await store.get(event_id))["runs"]))
    fake_slack.on_request = count_runs
    run = asyncio.create_task(processor.process(event_id))
    await asyncio.sleep(0.2)
    assert not run.done() and processor.turns.waiting(key) == 1
    assert int((await store.get(event_id)).get("runs") or 0) == 0  # waiting is not a run
    await redis.delete(keys.incident_lock(key))  # another process lets go: heard at its next look
    assert await asyncio.wait_for(run, 10) is None
    assert (await store.get(event_id))["state"] == "done"
    assert runs_at_call == [1]  # counted again once it entered


async def test_runs_of_one_incident_in_one_process_hand_it_over_without_a_deferral(
        processor: Processor, fake_slack: Any) -> None:
    """Alerts of one group processed at once by one worker: one holds the incident, the others
    wait in line and are woken in turn; none is sent back to the queue."""
    store = processor.store
    ids = [await ingest(store, grafana_group(f"fp-turn-{i}"), f"d-exec-turn-{i}") for i in range(6)]
    keys_seen = {incident_key(processor.normalise(await store.get(i))[0]) for i in ids}
    assert len(keys_seen) == 1
    processor.turns = Turns(max_wait=60, poll=60)  # only a wake-up can let a waiter in
    assert await asyncio.wait_for(asyncio.gather(*(processor.process(i) for i in ids)), 30) == [None] * 6
    assert [(await store.get(i))["state"] for i in ids] == ["done"] * 6


async def test_a_parser_failure_is_a_dead_letter_with_its_reason(processor: Processor) -> None:
    store = processor.store
    event_id = await ingest(store, b"{not json", "d-exec-4")
    assert await processor.process(event_id) is None
    rec = await store.get(event_id)
    assert rec["state"] == "dead" and rec["error"].startswith("parse failed: ")
