"""Cursor pagination of /admin/events: stable while events arrive and while events change state."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient

from hub.storage.event_store import Store, now_ms
from tests.conftest import fixture_request
from tests.test_admin import AUTH, seed_event, seed_many


async def _walk(client: TestClient, query: str, limit: int, between: Any = None, cursor: str | None = None
                ) -> list[str]:
    seen: list[str] = []
    while True:
        q = f"limit={limit}&{query}" + (f"&cursor={cursor}" if cursor else "")
        resp = await client.get(f"/admin/events?{q}", headers=AUTH)
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        seen += [e["id"] for e in body["events"]]
        cursor = body["next_cursor"]
        if not cursor:
            return seen
        if between is not None:
            await between(seen)


async def test_pages_are_stable_while_webhooks_arrive(client: TestClient, redis: Any, store: Store) -> None:
    original = await seed_many(redis, 120, start_ms=now_ms() - 60_000, step_ms=7, state="done", actions=[])
    body, headers = fixture_request("github_deployment_status_failure.json")
    arrivals = 0

    async def insert(_seen: list[str]) -> None:
        nonlocal arrivals
        for _ in range(3):  # real ingests (newer than anything paged so far), through the ingress path
            arrivals += 1
            await store.ingest("github", f"delivery-{arrivals}", body, headers, "application/json", "test")

    seen = await _walk(client, "", 25, insert)
    assert seen == original  # nothing repeated, nothing skipped, newest first
    assert arrivals >= 12
    first = await (await client.get("/admin/events?limit=5", headers=AUTH)).json()
    assert all(e["state"] == "accepted" for e in first["events"])  # the newcomers are on a fresh first page


async def test_concurrent_inserts_from_another_task(client: TestClient, redis: Any, store: Store) -> None:
    original = await seed_many(redis, 200, start_ms=now_ms() - 60_000, step_ms=3, state="dead")
    body, headers = fixture_request("github_deployment_status_failure.json")
    stop = asyncio.Event()

    async def writer() -> int:
        n = 0
        while not stop.is_set():
            n += 1
            await store.ingest("github", f"bg-{n}", body, headers, "application/json", "test")
            await asyncio.sleep(0)
        return n

    task = asyncio.create_task(writer())
    try:
        seen = await _walk(client, "status=dead", 30)
    finally:
        stop.set()
        written = await task
    assert seen == original and written > 0


async def test_many_events_in_the_same_millisecond(client: TestClient, redis: Any) -> None:
    ms = now_ms() - 30_000
    same = await seed_many(redis, 75, start_ms=ms, step_ms=0, state="done", actions=[])
    older = await seed_event(redis, state="done", actions=[], received_ms=ms - 1)
    seen = await _walk(client, "", 10)
    assert sorted(seen[:75]) == sorted(same) and len(set(seen)) == 76
    assert seen[-1] == older


async def test_cursor_event_leaving_the_state_index(client: TestClient, redis: Any, store: Store) -> None:
    """The last event of a page is replayed (leaves `dead`) before the next page is asked for."""
    original = await seed_many(redis, 40, start_ms=now_ms() - 60_000, step_ms=0, state="dead")
    first = await (await client.get("/admin/events?status=dead&limit=10", headers=AUTH)).json()
    last_id = first["events"][-1]["id"]
    rec = await store.get(last_id)
    await store.transition(last_id, rec["received_at"], "dead", "accepted")
    rest = await _walk(client, "status=dead", 10, cursor=first["next_cursor"])
    got = [e["id"] for e in first["events"]] + rest
    assert len(got) == 40 and set(got) == set(original)
