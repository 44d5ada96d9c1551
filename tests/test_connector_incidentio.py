"""incident.io outbound through the real ActionRunner against the fake over loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from connectors.incidentio import IncidentIO
from tests.conftest import make_settings, wait_for
from tests.connector_harness import FAST_RETRY, Harness, planned
from tests.fakes.base import Fault
from tests.fakes.incidentio import API_KEY, FakeIncidentIO

CREATE = {"name": "Checkout is down", "summary": "Error rate 40% on checkout", "severity": "SEV1",
          "visibility": "private"}


@pytest.fixture
async def fake() -> AsyncIterator[FakeIncidentIO]:
    async with FakeIncidentIO() as fake:
        yield fake


@pytest.fixture
async def hub(redis: Any, redis_url: str, fake: FakeIncidentIO, monkeypatch: pytest.MonkeyPatch
              ) -> AsyncIterator[Harness]:
    monkeypatch.setattr(IncidentIO, "retry_policy", FAST_RETRY)
    settings = make_settings(redis_url, incidentio_api_key=API_KEY, incidentio_api_url=fake.url)
    async with Harness(redis, settings, IncidentIO) as h:
        yield h


async def create(hub: Harness, params: dict[str, Any] = CREATE, event_id: str = "ev_test", **kw: Any
                 ) -> dict[str, Any]:
    return await hub.run(planned("incidentio", "create_incident", params, key=f"{event_id}:declare", **kw),
                         event_id)


async def test_create_sends_the_documented_request(hub: Harness, fake: FakeIncidentIO) -> None:
    rec = await create(hub)
    assert rec["state"] == "succeeded" and rec["attempts"][0]["status"] == 201
    (req,) = fake.calls("/v2/incidents", "POST")
    assert req.headers["Authorization"] == f"Bearer {API_KEY}"
    assert req.json() == {"idempotency_key": "ev_test:declare", "visibility": "private", "mode": "standard",
                          "name": "Checkout is down", "summary": "Error rate 40% on checkout",
                          "severity_id": "sev_critical"}
    incident = fake.incidents[fake.created[0]]
    assert rec["result"] == {"incident_id": incident["id"], "incident_reference": incident["reference"],
                             "incident_url": incident["permalink"]}


@pytest.mark.parametrize(("severity", "expected"), [("SEV1", "sev_critical"), ("SEV2", "sev_major"),
                                                    ("SEV3", "sev_minor"), ("SEV4", "sev_minor"),
                                                    ("major", "sev_major"), ("sev_minor", "sev_minor")])
async def test_severity_by_name_id_or_rank(hub: Harness, fake: FakeIncidentIO, severity: str, expected: str) -> None:
    await create(hub, {**CREATE, "severity": severity})
    assert fake.calls("/v2/incidents", "POST")[0].json()["severity_id"] == expected


async def test_severities_are_cached_per_process(hub: Harness, fake: FakeIncidentIO,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    await create(hub, event_id="ev_1")
    await create(hub, event_id="ev_2")
    assert len(fake.calls("/v1/severities")) == 1
    monkeypatch.setattr(hub.connector("incidentio"), "catalog_ttl", 0.0)
    hub.connector("incidentio")._catalog.clear()
    await create(hub, event_id="ev_3")
    await create(hub, event_id="ev_4")
    assert len(fake.calls("/v1/severities")) == 3  # expired at once: fetched each time


async def test_unknown_severity_still_creates_the_incident(hub: Harness, fake: FakeIncidentIO) -> None:
    rec = await create(hub, {**CREATE, "severity": "Catastrophic"})
    assert rec["state"] == "succeeded" and "severity_id" not in fake.requests[-1].json()
    assert "Catastrophic" in rec["result"]["severity_warning"]


async def test_job_run_twice_creates_one_incident(hub: Harness, fake: FakeIncidentIO) -> None:
    first = await create(hub)
    await create(hub)
    again = await hub.run(planned("incidentio", "create_incident", CREATE, key="ev_test:declare"), fresh=True)
    assert len(fake.created) == 1 and len(fake.calls("/v2/incidents", "POST")) == 2
    assert again["result"]["incident_id"] == first["result"]["incident_id"]


async def test_timeout_then_retry_creates_one_incident(hub: Harness, fake: FakeIncidentIO,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    await create(hub, event_id="ev_warm")  # severities cached: the stall below hits the create
    monkeypatch.setattr(IncidentIO, "timeout", 0.2)
    fake.faults.append(Fault(stall=0.5))
    action = planned("incidentio", "create_incident", CREATE, key="ev_slow:declare")
    first = await hub.run(action, "ev_slow")
    assert first["state"] == "retrying" and first["attempts"][0]["ambiguous"] is True
    await wait_for(lambda: asyncio.sleep(0, len(fake.created) == 2))
    rec = await hub.run_to_final(action, "ev_slow")
    assert rec["state"] == "succeeded" and len(fake.created) == 2
    assert rec["result"]["incident_id"] == fake.created[1]


async def test_update_uses_the_edit_endpoint(hub: Harness, fake: FakeIncidentIO) -> None:
    incident_id = (await create(hub))["result"]["incident_id"]
    rec = await hub.run(planned("incidentio", "update", {"incident_id": incident_id, "summary": "Rolled back",
                                                         "severity": "SEV2", "status": "Monitoring"},
                                action_id="wf.upd"))
    assert rec["state"] == "succeeded" and rec["result"] == {"incident_id": incident_id}
    (req,) = fake.calls(f"/v2/incidents/{incident_id}/actions/edit", "POST")
    assert req.json() == {"incident": {"summary": "Rolled back", "severity_id": "sev_major",
                                       "incident_status_id": "st_monitoring"},
                          "notify_incident_channel": False}
    assert fake.incidents[incident_id]["incident_status"]["name"] == "Monitoring"


async def test_update_status_by_category(hub: Harness, fake: FakeIncidentIO) -> None:
    incident_id = (await create(hub))["result"]["incident_id"]
    await hub.run(planned("incidentio", "update", {"incident_id": incident_id, "status": "closed",
                                                   "notify_incident_channel": True}, action_id="wf.upd"))
    assert fake.incidents[incident_id]["incident_status"]["id"] == "st_closed"
    assert fake.requests[-1].json()["notify_incident_channel"] is True


async def test_update_with_unknown_status_is_dead_and_sends_nothing(hub: Harness, fake: FakeIncidentIO) -> None:
    incident_id = (await create(hub))["result"]["incident_id"]
    rec = await hub.run(planned("incidentio", "update", {"incident_id": incident_id, "status": "Exploded"},
                                action_id="wf.upd"))
    assert rec["state"] == "dead" and "Exploded" in rec["error"]
    assert fake.calls(f"/v2/incidents/{incident_id}/actions/edit") == []


async def test_update_of_unknown_incident_is_dead_with_body(hub: Harness, fake: FakeIncidentIO) -> None:
    rec = await hub.run(planned("incidentio", "update", {"incident_id": "01NOPE", "summary": "x"}))
    assert rec["state"] == "dead" and rec["attempts"][0]["status"] == 404 and "not_found" in rec["last_response"]


async def test_add_note_is_a_timeline_item_once(hub: Harness, fake: FakeIncidentIO) -> None:
    incident_id = (await create(hub))["result"]["incident_id"]
    action = planned("incidentio", "add_note", {"incident_id": incident_id,
                                                "message": "Not acknowledged in 5 minutes.\nPaged level 2."},
                     key="ev_esc:note", action_id="wf.note")
    rec = await hub.run(action, "ev_esc")
    await hub.run(action, "ev_esc", fresh=True)  # record lost: incident.io dedups by idempotency_key
    (req, _) = fake.calls("/v2/incident_timeline_items", "POST")
    body = req.json()
    assert body["incident_id"] == incident_id and body["idempotency_key"] == "ev_esc:note"
    assert body["title"] == "Not acknowledged in 5 minutes."
    assert body["description"] == "Not acknowledged in 5 minutes.\nPaged level 2." and body["timestamp"].endswith("Z")
    assert len(fake.timeline) == 1
    assert rec["result"] == {"incident_id": incident_id,
                             "timeline_item_id": next(iter(fake.timeline.values()))["id"]}


async def test_401_is_dead_and_the_key_is_not_recorded(redis: Any, redis_url: str, fake: FakeIncidentIO) -> None:
    settings = make_settings(redis_url, incidentio_api_key="inc_wrong_key_123456", incidentio_api_url=fake.url)
    async with Harness(redis, settings, IncidentIO) as h:
        rec = await h.run(planned("incidentio", "create_incident", {**CREATE, "severity": None}))
    assert rec["state"] == "dead" and rec["attempts"][0]["status"] == 401
    assert "authentication_error" in rec["last_response"] and "inc_wrong_key_123456" not in str(rec)


async def test_429_then_500_then_success(hub: Harness, fake: FakeIncidentIO) -> None:
    fake.faults.extend([Fault(status=429, retry_after="0", body='{"type":"too_many_requests"}'), Fault(status=500)])
    rec = await hub.run_to_final(planned("incidentio", "create_incident", {**CREATE, "severity": None}))
    assert [a["status"] for a in rec["attempts"]] == [429, 500, 201] and len(fake.created) == 1


async def test_not_configured_is_skipped(redis: Any, redis_url: str) -> None:
    async with Harness(redis, make_settings(redis_url), IncidentIO) as h:
        rec = await h.run(planned("incidentio", "create_incident", CREATE))
    assert rec["state"] == "skipped" and rec["error"] == "skipped: incidentio not configured (INCIDENTIO_API_KEY)"
