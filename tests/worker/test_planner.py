"""The planner: read-only, deterministic, and the one planning path (worker, replay, simulate)."""

from __future__ import annotations

from typing import Any

from hub.core.settings import Settings
from hub.operators.replay import make_planner
from hub.rules import Rules
from hub.rules.engine import World
from hub.storage.batch import Batch
from hub.storage.event_store import Store
from hub.storage.incidents import IncidentStore
from hub.worker.planner import Planner, settings_configured
from hub.worker.processor import Processor
from tests.worker.conftest import grafana_group, ingest, snapshot


def ids(steps: list[Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(s.id, s.name, s.params) for s in steps]


async def test_the_same_record_plans_the_same_steps_and_writes_nothing(redis: Any, worker_settings: Settings,
                                                                       rules: Rules) -> None:
    store = Store(redis, worker_settings)
    event_id = await ingest(store, grafana_group(), "d-plan-1")
    rec = await store.get(event_id)
    planner = Planner(rules, incidents=IncidentStore(redis, store.retention),
                      configured=settings_configured(worker_settings))
    before = await snapshot(redis)
    events, first = await planner.plan(rec)
    _, again = await planner.plan(dict(rec))
    assert await snapshot(redis) == before
    assert [e.fingerprint for e in events] == ["fp-worker-1"]
    assert ids(first) == ids(again)
    assert [s.name for s in first] == ["slack.notify", "slack.notify"]
    assert first[1].timer is not None and first[0].timer is None


async def test_steps_another_event_claimed_are_left_out_and_the_claims_untouched(redis: Any, worker_settings: Settings,
                                                                                 rules: Rules) -> None:
    store = Store(redis, worker_settings)
    incidents = IncidentStore(redis, store.retention)
    event_id = await ingest(store, grafana_group(), "d-plan-2")
    rec = await store.get(event_id)
    planner = Planner(rules, incidents=incidents, configured=settings_configured(worker_settings))
    _, steps = await planner.plan(rec)
    taken = Batch()
    incidents.claim_into(taken, steps[0].subject, steps[0].id, "ev_someone_else")
    await taken.execute(redis)
    before = await snapshot(redis)
    _, kept = await planner.plan(rec)
    assert [s.id for s in kept] == [s.id for s in steps[1:]]
    assert await snapshot(redis) == before


async def test_an_offline_planner_plans_every_event_as_the_first_of_its_incident(worker_settings: Settings,
                                                                                 rules: Rules) -> None:
    """No store at all (what `simulate` uses): the rules' plan in an empty world."""
    planner = Planner(rules, configured=settings_configured(worker_settings))
    rec = {"id": "ev_simulated", "source": "grafana", "body": grafana_group(), "headers": {},
           "content_type": "application/json", "received_at": 1_700_000_000_000}
    events, steps = await planner.plan(rec)
    world = World(received_ms=rec["received_at"], now_ms=rec["received_at"],
                  configured=settings_configured(worker_settings)())
    assert ids(steps) == ids(rules.plan(events, world))


async def test_replay_and_the_worker_plan_through_the_same_planner(redis: Any, worker_settings: Settings,
                                                                  processor: Processor) -> None:
    store = Store(redis, worker_settings)
    event_id = await ingest(store, grafana_group(), "d-plan-3")
    rec = await store.get(event_id)
    replay_planner = make_planner(store, worker_settings)
    assert isinstance(replay_planner, Planner) and isinstance(processor.planner, Planner)
    _, from_replay = await replay_planner.plan(rec)
    _, from_worker = await processor.plan(rec)
    assert ids(from_replay) == ids(from_worker)


async def test_a_rules_reload_reaches_the_planner(processor: Processor, rules: Rules) -> None:
    """The worker swaps `processor.rules` on SIGHUP: every piece reads the planner's."""
    fresh = Rules(rules.config)
    processor.rules = fresh
    assert processor.planner.rules is fresh and processor.steps.planner.rules is fresh
    assert processor.timers.planner.rules is fresh
