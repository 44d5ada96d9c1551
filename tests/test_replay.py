"""Replay: a dead letter delivered exactly once after the upstream recovers; skip vs force; 409 in flight."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from hub.ingress.app import create_app
from hub.operators.replay import reset_record, would
from hub.storage.event_store import ARQ_QUEUE, DEAD, Store
from tests.conftest import fixture_request, make_settings, wait_for
from tests.fakes.base import Fault
from tests.test_admin import AUTH, action, seed_event


async def _final(store: Store, event_id: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        rec = await store.get(event_id)
        return rec if rec and rec["state"] in ("done", "partially_failed", "dead") else None
    return await wait_for(check, timeout=15)


async def test_dead_letter_replayed_after_recovery_is_delivered_once(redis_url, redis, fake_slack,
                                                                      running_worker) -> None:
    fake_slack.faults.append(Fault(status=404, body="channel_not_found"))  # then the channel is fixed
    settings = make_settings(redis_url, slack_webhook_url=fake_slack.webhook_url)
    store = Store(redis, settings)
    body, headers = fixture_request("github_deployment_status_failure.json")
    async with TestClient(TestServer(create_app(settings))) as c, running_worker(settings):
        event_id = (await (await c.post("/webhooks/github", data=body, headers=headers)).json())["event_id"]
        assert (await _final(store, event_id))["state"] == "dead"
        (dead,) = await redis.zrange(DEAD, 0, -1)
        action_id = dead.decode().split("/", 1)[1]

        dry = await (await c.post(f"/admin/events/{event_id}/replay?dry_run=1", headers=AUTH)).json()
        assert dry["dry_run"] is True
        assert [(a["name"], a["would"]) for a in dry["actions"]] == [("slack.notify", "run")]
        assert (await store.get(event_id))["state"] == "dead" and len(fake_slack.requests) == 1

        resp = await c.post(f"/admin/events/{event_id}/replay", headers=AUTH)
        assert resp.status == 202
        answer = await resp.json()
        assert answer["status"] == "replaying" and answer["reset"] == [action_id]
        rec = await _final(store, event_id)
        assert rec["state"] == "done"
        assert len(fake_slack.requests) == 2  # the refused one, then exactly one delivery
        act = (await store.actions(event_id))[action_id]
        assert act["state"] == "succeeded"
        assert [a["status"] for a in act["attempts"]] == [404, 200]
        assert act["history"][0]["state"] == "dead" and act["history"][0]["by"] == "admin"
        assert await redis.zcard(DEAD) == 0
        timeline = await store.timeline(event_id)
        replay_entry = next(t for t in timeline if t["type"] == "replay")
        assert replay_entry["by"] == "admin" and replay_entry["reset"] == [action_id]
        assert [t["state"] for t in timeline if t["type"] == "state"][-1] == "done"

        # without force, a succeeded action is skipped: nothing more reaches Slack
        dry = await (await c.post(f"/admin/events/{event_id}/replay?dry_run=1", headers=AUTH)).json()
        assert [a["would"] for a in dry["actions"]] == ["skip"]
        resp = await c.post(f"/admin/events/{event_id}/replay", headers=AUTH)
        assert resp.status == 202 and (await resp.json())["reset"] == []
        assert (await _final(store, event_id))["state"] == "done"
        assert len(fake_slack.requests) == 2
        assert len((await store.actions(event_id))[action_id]["attempts"]) == 2

        # force re-runs it, once, with the original idempotency key
        dry = await (await c.post(f"/admin/events/{event_id}/replay?dry_run=1&force=1", headers=AUTH)).json()
        assert [a["would"] for a in dry["actions"]] == ["run"]
        resp = await c.post(f"/admin/events/{event_id}/replay?force=1", headers=AUTH)
        assert resp.status == 202 and (await resp.json())["reset"] == [action_id]
        await wait_for(lambda: _succeeded_rounds(store, event_id, action_id, 2))
        assert (await _final(store, event_id))["state"] == "done"
        await asyncio.sleep(0.3)  # a late duplicate would show up here
        assert len(fake_slack.requests) == 3
        forced = (await store.actions(event_id))[action_id]
        assert forced["idempotency_key"] == act["idempotency_key"]

        audit = await (await c.get("/admin/audit", headers=AUTH)).json()
        assert [e["action"] for e in audit["audit"]] == ["replay", "replay", "replay"]
        assert audit["audit"][0]["detail"]["force"] is True


async def _succeeded_rounds(store: Store, event_id: str, action_id: str, n: int) -> bool:
    act = (await store.actions(event_id)).get(action_id) or {}
    return sum(1 for a in act.get("attempts", []) if a.get("status") == 200) >= n


async def test_replay_of_an_in_flight_event_is_refused(client: TestClient, store: Store) -> None:
    body, headers = fixture_request("github_deployment_status_failure.json")
    resp = await client.post("/webhooks/github", data=body, headers=headers)
    event_id = (await resp.json())["event_id"]  # no worker: it stays accepted
    for query in ("", "?dry_run=1", "?force=1"):
        resp = await client.post(f"/admin/events/{event_id}/replay{query}", headers=AUTH)
        assert resp.status == 409
        err = await resp.json()
        assert err["error"] == "in_flight" and "accepted" in err["detail"]
    rec = await store.get(event_id)
    await store.transition(event_id, rec["received_at"], "accepted", "processing")
    assert (await client.post(f"/admin/events/{event_id}/replay", headers=AUTH)).status == 409
    assert (await store.get(event_id))["state"] == "processing"


async def test_unknown_event_replay_is_404(client: TestClient) -> None:
    resp = await client.post("/admin/events/ev_000000000000deadbeef/replay", headers=AUTH)
    assert resp.status == 404 and (await resp.json())["error"] == "not_found"
    resp = await client.post("/admin/events/ev_000000000000deadbeef/replay?force=maybe", headers=AUTH)
    assert resp.status == 400


async def test_two_operators_replaying_at_once_only_one_wins(client: TestClient, redis: Any, store: Store) -> None:
    event_id = await seed_event(redis, state="dead")
    answers = await asyncio.gather(*(client.post(f"/admin/events/{event_id}/replay", headers=AUTH)
                                     for _ in range(6)))
    statuses = sorted(r.status for r in answers)
    assert statuses == [202, 409, 409, 409, 409, 409]
    assert await redis.zcard(ARQ_QUEUE) == 1
    assert (await store.get(event_id))["replays"] == "1"


async def test_replay_writes_state_resets_and_job_together(client: TestClient, redis: Any, store: Store) -> None:
    ok = action(aid="a.ok", state="succeeded", status=200, error=None)
    dead = action(aid="b.dead", state="dead")
    never = action(aid="c.skipped", state="skipped", attempts=0, error="skipped: slack not configured")
    event_id = await seed_event(redis, state="partially_failed", actions=[ok, dead, never])
    resp = await client.post(f"/admin/events/{event_id}/replay", headers=AUTH)
    assert resp.status == 202
    assert (await resp.json())["reset"] == ["b.dead", "c.skipped"]
    rec = await store.get(event_id)
    assert rec["state"] == "accepted" and "error" not in rec
    assert await redis.zscore("hub:idx:state:accepted", event_id) is not None
    assert await redis.zscore("hub:idx:state:partially_failed", event_id) is None
    assert await redis.zscore("hub:pending", event_id) is not None
    assert await redis.zscore(ARQ_QUEUE, event_id) is not None
    actions = await store.actions(event_id)
    assert actions["a.ok"]["state"] == "succeeded"
    assert actions["b.dead"]["state"] == "pending" and len(actions["b.dead"]["attempts"]) == 1
    assert actions["b.dead"]["replayed_at"] >= rec["received_at"]
    assert actions["c.skipped"]["state"] == "pending"
    assert await redis.zcard(DEAD) == 0


def test_would_and_reset_record() -> None:
    assert would(None, False)[0] == "run"
    assert would(action(state="succeeded"), False) == ("skip", "succeeded")
    assert would(action(state="succeeded"), True)[0] == "run"
    assert would(action(state="dead"), False)[0] == "run"
    assert would(action(state="skipped", attempts=1, error="already exists"), False)[0] == "skip"
    assert would(action(state="skipped", attempts=0, error="skipped: x not configured"), False)[0] == "run"
    rec = action(state="dead", attempts=3)
    rec["last_response"] = "channel_not_found"
    rec["attempts"][-1]["ambiguous"] = True
    out = reset_record(rec, "alice", 123)
    assert out["state"] == "pending" and out["error"] is None and out["replayed_at"] == 123
    assert len(out["attempts"]) == 3 and out["attempts"][-1]["ambiguous"] is True  # creations still look first
    assert out["history"] == [{"replayed_at": 123, "by": "alice", "state": "dead", "error": rec["error"],
                               "attempts": 3, "last_response": "channel_not_found"}]
    assert "last_response" not in out and rec["state"] == "dead"  # the input is not modified


async def test_dry_run_under_an_invalid_rules_file_is_a_clear_422(redis_url, redis, tmp_path) -> None:
    from tests.test_cli_ops import dead_deploy_event

    bad = tmp_path / "hub.yaml"
    bad.write_text("workflows:\n  - name: broken\n    on: [\n")
    settings = make_settings(redis_url, hub_config=bad)
    event_id, _ = await dead_deploy_event(Store(redis, settings))
    async with TestClient(TestServer(create_app(settings))) as c:
        resp = await c.post(f"/admin/events/{event_id}/replay?dry_run=1", headers=AUTH)
        assert resp.status == 422
        body = await resp.json()
        assert body["error"] == "plan_failed" and "rules" in body["detail"]
