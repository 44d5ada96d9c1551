"""Bulk replay: 1,000 dead letters through POST /admin/replay, progress readable while it runs."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient

from hub.operators.replay import BulkRequest, create_bulk, run_bulk
from hub.storage.event_store import ARQ_QUEUE, DEAD, Store, now_ms
from tests.test_admin import AUTH, seed_event, seed_many


async def test_bulk_replay_of_1000_dead_letters(client: TestClient, redis: Any, store: Store) -> None:
    ids = await seed_many(redis, 1000, state="dead")
    keep = await seed_event(redis, state="dead", source="grafana", kinds=("alert.firing",))
    done_event = await seed_event(redis, state="done", actions=[])
    assert await redis.zcard(DEAD) == 1001

    resp = await client.post("/admin/replay", json={"status": "failed", "source": "github"}, headers=AUTH)
    assert resp.status == 202
    job = await resp.json()
    assert job["total"] == 1000 and job["state"] == "running"
    seen: list[int] = []
    for _ in range(400):
        status = await (await client.get(job["status_url"], headers=AUTH)).json()
        seen.append(status["processed"])
        if status["state"] != "running":
            break
        await asyncio.sleep(0.02)
    assert status["state"] == "done"
    assert status["processed"] == 1000 and status["replayed"] == 1000 and status["failed"] == 0
    assert status["progress"] == 1.0
    assert seen == sorted(seen)  # progress only moves forward

    assert await redis.zcard(DEAD) == 1  # only the grafana one, outside the filter
    assert await redis.zscore(DEAD, f"{keep}/deploy-failed.notify:fp") is not None
    assert await redis.zcard("hub:idx:state:accepted") == 1000
    assert await redis.zcard(ARQ_QUEUE) == 1000
    assert (await store.get(done_event))["state"] == "done"
    tl = await store.timeline(ids[500])
    assert tl[-2]["type"] == "replay" and tl[-2]["job"] == job["id"]

    detail = await (await client.get(f"{job['status_url']}?results=1", headers=AUTH)).json()
    assert len(detail["results"]) == 1000 and {r["outcome"] for r in detail["results"]} == {"replayed"}
    listing = await (await client.get("/admin/replays", headers=AUTH)).json()
    assert listing["replays"][0]["id"] == job["id"]
    audit = await (await client.get("/admin/audit", headers=AUTH)).json()
    assert [e["action"] for e in audit["audit"]] == ["replay.bulk"]  # one entry for the job, not 1000


async def test_bulk_replay_again_skips_what_is_now_in_flight(client: TestClient, redis: Any, store: Store) -> None:
    ids = await seed_many(redis, 30, state="dead")
    first = await create_bulk(store, BulkRequest(ids=tuple(ids)), "alice")
    await run_bulk(store, first["id"])
    again = await create_bulk(store, BulkRequest(ids=(*ids, "ev_000000000000deadbeef")), "alice")
    progress: list[tuple[int, int]] = []
    result = await run_bulk(store, again["id"], on_progress=lambda d, t, _o: progress.append((d, t)))
    assert result["total"] == 31 and result["replayed"] == 0 and result["skipped"] == 31
    assert progress[-1] == (31, 31) and len(progress) == 31


async def test_bulk_dry_run_changes_nothing(client: TestClient, redis: Any) -> None:
    await seed_many(redis, 5, state="dead")
    resp = await client.post("/admin/replay?dry_run=1", headers=AUTH)
    job = await resp.json()
    for _ in range(200):
        status = await (await client.get(job["status_url"], headers=AUTH)).json()
        if status["state"] != "running":
            break
        await asyncio.sleep(0.02)
    assert status["dry_run"] is True and status["processed"] == 5 and status["replayed"] == 0
    assert await redis.zcard(DEAD) == 5 and await redis.zcard(ARQ_QUEUE) == 0


async def test_bulk_bad_input_is_400(client: TestClient) -> None:
    for body in ({"status": "sideways"}, {"ids": ["not an id!"]}, {"limit": 0}, {"unknown": 1}, [1, 2]):
        resp = await client.post("/admin/replay", json=body, headers=AUTH)
        assert resp.status == 400, body
        assert (await resp.json())["error"] == "bad_request"
    resp = await client.post("/admin/replay", data=b"{not json", headers=AUTH)
    assert resp.status == 400
    assert (await client.get("/admin/replays/rp_000000000000deadbeef", headers=AUTH)).status == 404


async def test_interrupted_job_is_reported(client: TestClient, redis: Any, store: Store) -> None:
    ids = await seed_many(redis, 3, state="dead")
    job = await create_bulk(store, BulkRequest(ids=tuple(ids)), "alice")
    await redis.hset(f"hub:replay:{job['id']}", "updated_at", now_ms() - 120_000)  # its process died
    status = await (await client.get(f"/admin/replays/{job['id']}", headers=AUTH)).json()
    assert status["state"] == "interrupted" and "safe" in status["detail"]
