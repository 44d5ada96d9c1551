"""Operator ack (admin API and CLI): the escalation's `unless: acknowledged` sees it."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp.test_utils import TestClient

from hub.cli.main import main
from hub.storage.connection import connect
from hub.storage.incidents import IncidentStore

KEY = "incidentio:01TESTACK"
AUTH = {"Authorization": "Bearer test-admin-token"}


async def _open_incident(redis) -> IncidentStore:
    incidents = IncidentStore(redis, 3600)
    await incidents.save(KEY, {"severity": "SEV1", "status": "triage", "services": ["checkout"],
                               "declared_at": 1_700_000_000_000})
    return incidents


async def test_admin_ack_marks_the_incident_and_is_audited(client: TestClient, redis) -> None:
    incidents = await _open_incident(redis)
    assert (await client.post(f"/admin/incidents/{KEY}/ack")).status == 401
    resp = await client.post(f"/admin/incidents/{KEY}/ack", headers=AUTH)
    assert resp.status == 200
    body = await resp.json()
    assert body["acknowledged"] is True and body["acknowledged_by"] == "admin"
    state = await incidents.get(KEY)
    assert state["acknowledged_at"] and state["acknowledged_by"] == "admin"
    again = await (await client.post(f"/admin/incidents/{KEY}/ack", headers=AUTH)).json()
    assert again["acknowledged"] is False  # already acknowledged: nothing changes
    audit = await (await client.get("/admin/audit", headers=AUTH)).json()
    assert any(e.get("action") == "ack" and e.get("target") == KEY for e in audit["audit"])


async def test_admin_ack_unknown_incident_is_404(client: TestClient) -> None:
    resp = await client.post("/admin/incidents/incidentio:nope/ack", headers=AUTH)
    assert resp.status == 404 and (await resp.json())["error"] == "not_found"


def test_cli_ack(redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)

    async def setup_and_read(read: bool):
        redis = connect(redis_url)
        try:
            incidents = IncidentStore(redis, 3600) if read else await _open_incident(redis)
            return await incidents.get(KEY)
        finally:
            await redis.aclose()

    asyncio.run(setup_and_read(False))
    assert main(["ack", KEY, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["acknowledged"] is True and out["incident"] == KEY
    assert asyncio.run(setup_and_read(True))["acknowledged_at"]
    assert main(["ack", "incidentio:unknown"]) == 1

