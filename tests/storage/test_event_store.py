"""The event store on its own: what one ingest writes, how records read back, how state moves.

Against the real Redis of the root conftest; no web app, no worker.
"""

from __future__ import annotations

from typing import Any

from hub.storage import keys
from hub.storage.batch import Batch
from hub.storage.event_store import (
    ARQ_JOB_PREFIX,
    ARQ_QUEUE,
    DEAD,
    IDX_ALL,
    PENDING,
    WORKERS,
    Store,
    now_ms,
    state_idx,
)
from hub.storage.records import ActionRecord

BODY = b'{"hello": "world"}'


async def ingest(store: Store, delivery: str = "d-1", source: str = "github") -> str:
    result = await store.ingest(source, delivery, BODY, {"X-GitHub-Event": "deployment_status"},
                                "application/json", "hmac-sha256")
    assert not result.duplicate
    return result.event_id


async def test_one_ingest_records_indexes_and_queues_the_event(store: Store, redis: Any) -> None:
    event_id = await ingest(store)
    rec = await store.get(event_id)
    assert rec is not None
    assert rec["id"] == event_id and rec["source"] == "github" and rec["state"] == "accepted"
    assert rec["body"] == BODY  # the raw bytes, never decoded
    assert rec["headers"] == {"X-GitHub-Event": "deployment_status"}
    assert rec["size"] == len(BODY) and isinstance(rec["received_at"], int)
    for index in (IDX_ALL, keys.source_index("github"), state_idx("accepted"), PENDING, ARQ_QUEUE):
        assert await redis.zscore(index, event_id) is not None, index
    assert await redis.exists(ARQ_JOB_PREFIX + event_id)
    (entry,) = await store.timeline(event_id)
    assert entry["type"] == "received" and entry["delivery_id"] == "d-1"


async def test_a_repeated_delivery_is_the_same_event(store: Store, redis: Any) -> None:
    first = await ingest(store, "same")
    again = await store.ingest("github", "same", BODY, {}, "application/json", "hmac-sha256")
    assert again.duplicate and again.event_id == first
    assert await redis.zcard(IDX_ALL) == 1
    other_source = await store.ingest("grafana", "same", BODY, {}, "application/json", "token")
    assert not other_source.duplicate  # dedup is per source


async def test_an_unknown_event_reads_as_none(store: Store) -> None:
    assert await store.get("ev_000000000000deadbeef") is None
    assert await store.start("ev_000000000000deadbeef") is None
    assert await store.actions("ev_000000000000deadbeef") == {}


async def test_start_counts_a_run_only_until_the_event_is_final(store: Store) -> None:
    event_id = await ingest(store)
    first = await store.start(event_id)
    second = await store.start(event_id)
    assert first is not None and second is not None
    assert (first["runs"], second["runs"]) == (1, 2)
    rec = await store.get(event_id)
    assert rec is not None
    await store.transition(event_id, rec["received_at"], "accepted", "done")
    final = await store.start(event_id)
    assert final is not None and final["runs"] == 2 and final["state"] == "done"


async def test_a_transition_moves_the_state_index_and_leaves_pending_when_final(store: Store, redis: Any) -> None:
    event_id = await ingest(store)
    rec = await store.get(event_id)
    assert rec is not None
    await store.transition(event_id, rec["received_at"], "accepted", "processing")
    assert await redis.zscore(state_idx("accepted"), event_id) is None
    assert await redis.zscore(state_idx("processing"), event_id) == rec["received_at"]
    assert await redis.zscore(PENDING, event_id) is not None
    await store.transition(event_id, rec["received_at"], "processing", "partially_failed", {"why": "test"},
                           error="one action is dead")
    after = await store.get(event_id)
    assert after is not None and after["state"] == "partially_failed" and after["error"] == "one action is dead"
    assert await redis.zscore(PENDING, event_id) is None
    last = (await store.timeline(event_id))[-1]
    assert last["type"] == "state" and last["state"] == "partially_failed" and last["why"] == "test"


async def test_a_dead_action_is_listed_until_it_is_saved_alive(store: Store, redis: Any) -> None:
    event_id = await ingest(store)
    record: ActionRecord = {"id": "a1", "name": "slack.post_message", "state": "dead", "attempts": [],
                            "error": "HTTP 400"}
    await store.save_action(event_id, record, {"type": "action", "action": "a1", "state": "dead"})
    assert await redis.zscore(DEAD, f"{event_id}/a1") is not None
    assert (await store.actions(event_id))["a1"]["error"] == "HTTP 400"
    await store.save_action(event_id, {**record, "state": "succeeded", "error": None})
    assert await redis.zscore(DEAD, f"{event_id}/a1") is None
    assert (await store.actions(event_id))["a1"]["state"] == "succeeded"


async def test_parsed_events_give_the_listing_row_and_the_kind_index(store: Store, redis: Any) -> None:
    event_id = await ingest(store)
    rec = await store.get(event_id)
    assert rec is not None
    batch = Batch()
    store.record_parsed_into(batch, event_id, rec["received_at"], [
        {"kind": "deploy.failed", "title": "Deploy failed", "severity": "SEV2", "services": ["web"]},
        {"kind": "alert.firing", "title": "", "severity": "SEV1", "services": ["web", "db"]}])
    await batch.execute(redis)
    after = await store.get(event_id)
    assert after is not None
    assert (after["title"], after["severity"], after["services"]) == ("Deploy failed", "SEV1", "web,db")
    assert after["kinds"] == "alert.firing,deploy.failed"
    assert await redis.zscore(keys.kind_index("deploy.failed"), event_id) == rec["received_at"]


async def test_stuck_lists_events_untouched_since_and_touch_defers_them(store: Store) -> None:
    event_id = await ingest(store)
    assert await store.stuck(now_ms() + 1000) == [event_id]
    assert await store.stuck(now_ms() - 60_000) == []
    await store.touch(event_id)
    assert await store.stuck(now_ms() - 60_000) == []


async def test_trim_drops_index_entries_past_the_retention(store: Store, redis: Any) -> None:
    old = now_ms() - (store.retention + 60) * 1000
    await redis.zadd(IDX_ALL, {"ev_old": old, "ev_new": now_ms()})
    await redis.zadd(DEAD, {"ev_old/a": old})
    assert await store.trim_indexes() == 2
    assert [m.decode() for m in await redis.zrange(IDX_ALL, 0, -1)] == ["ev_new"]


async def test_live_workers_counts_recent_heartbeats_only(store: Store, redis: Any) -> None:
    await store.heartbeat("host:1")
    await store.heartbeat("host:2")
    await redis.zadd(WORKERS, {"host:3": now_ms() - 120_000})
    assert await store.live_workers() == 2
    await store.forget_worker("host:2")
    assert await store.live_workers() == 1
