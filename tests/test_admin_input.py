"""Hostile bodies on the admin API get a 400, never a 500."""

from __future__ import annotations

from aiohttp.test_utils import TestClient

AUTH = {"Authorization": "Bearer test-admin-token"}


async def test_bulk_replay_with_an_undecodable_body_is_400(client: TestClient) -> None:
    resp = await client.post("/admin/replay", data=b"not gzip at all",
                             headers={**AUTH, "Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert resp.status == 400
