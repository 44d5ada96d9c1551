"""The operator actions on their own (what the admin API and the CLI both call), against real Redis."""

from __future__ import annotations

from typing import Any

from hub.operators import audit, operations
from hub.operators.queries import EventFilter
from hub.storage import keys
from hub.storage.event_store import DEAD, Store, now_ms
from hub.storage.incidents import IncidentStore
from tests.test_admin import action, seed_event


async def test_acknowledge_resolves_an_alias_acks_once_and_audits_every_attempt(store: Store, redis: Any) -> None:
    incidents = IncidentStore(redis, 3600)
    await incidents.save("grafana:abc", {"key": "grafana:abc", "declared_at": now_ms(), "acknowledged_at": None})
    await redis.set(keys.incident_alias("pd-1"), "grafana:abc")
    assert await operations.acknowledge(store, "no-such-incident", "ann") is None

    first = await operations.acknowledge(store, "pd-1", "ann")  # by alias
    assert first is not None and first["incident"] == "grafana:abc" and first["acknowledged"] is True
    assert first["acknowledged_by"] == "ann" and isinstance(first["acknowledged_at"], int)
    again = await operations.acknowledge(store, "grafana:abc", "bob")
    assert again == {**first, "acknowledged": False}  # still ann's acknowledgement

    entries, _ = await audit.recent(redis)
    assert [(e["who"], e["action"], e["target"], e["detail"]) for e in entries] == [
        ("bob", "ack", "grafana:abc", {"changed": False}), ("ann", "ack", "grafana:abc", {"changed": True})]


async def test_dead_letter_page_counts_every_dead_letter(store: Store, redis: Any) -> None:
    await seed_event(redis, source="github")
    await seed_event(redis, source="grafana")
    page = await operations.dead_letters_page(store, 1, None)
    assert len(page["dead_letters"]) == 1 and page["total"] == 2 and page["next_cursor"]
    only = await operations.dead_letters_page(store, 10, None, source="grafana")
    assert [d["source"] for d in only["dead_letters"]] == ["grafana"]  # type: ignore[union-attr]


async def test_purge_many_by_event_id_and_dry_run_changes_nothing(store: Store, redis: Any) -> None:
    eid = await seed_event(redis, actions=[action("a:1"), action("a:2"), action("a:3", state="succeeded")])
    done = await seed_event(redis, state="done", actions=[])

    dry = await operations.purge_many(store, [eid, done], by="ann", dry_run=True)
    assert sorted(dry["purged"]) == [f"{eid}/a:1", f"{eid}/a:2"]  # type: ignore[call-overload]
    assert dry["not_found"] == {done: "the event has no dead letters"} and dry["dry_run"] is True
    assert await redis.zcard(DEAD) == 2

    real = await operations.purge_many(store, [eid, f"{eid}/a:9"], by="ann")
    assert sorted(real["purged"]) == [f"{eid}/a:1", f"{eid}/a:2"]  # type: ignore[call-overload]
    assert list(real["not_found"]) == [f"{eid}/a:9"]  # type: ignore[call-overload]
    assert await redis.zcard(DEAD) == 0
    entries, _ = await audit.recent(redis)
    assert sorted(e["target"] for e in entries if e["action"] == "purge") == [f"{eid}/a:1", f"{eid}/a:2"]


async def test_summary_counts_events_per_state(store: Store, redis: Any) -> None:
    await seed_event(redis, state="dead")
    await seed_event(redis, state="done", actions=[])
    counts = await operations.summary(store)
    assert counts["states"]["dead"] == 1 and counts["states"]["done"] == 1  # type: ignore[index]
    assert counts["dead_letters"] == 1


async def test_events_page_filters_by_state(store: Store, redis: Any) -> None:
    dead = await seed_event(redis, state="dead")
    await seed_event(redis, state="done", actions=[])
    page = await operations.events_page(store, EventFilter(states=("dead",)), 50, None)
    assert [e["id"] for e in page["events"]] == [dead]  # type: ignore[union-attr]
