"""OpsGenie Alert API through the real ActionRunner against the fake over loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from connectors.opsgenie import OpsGenie
from tests.conftest import make_settings
from tests.connector_harness import FAST_RETRY, Harness, planned
from tests.fakes.base import Fault
from tests.fakes.opsgenie import API_KEY, FakeOpsGenie

CREATE = {"message": "Checkout error rate above 10% " + "x" * 200, "alias": "fp-checkout-errors",
          "description": "Error rate 12% for 5 minutes", "severity": "SEV2",
          "responders": [{"type": "team", "name": "payments"}], "tags": ["checkout", "grafana"],
          "details": {"value": 12, "runbook": "https://runbooks.example/checkout"}}


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpsGenie]:
    async with FakeOpsGenie() as fake:
        yield fake


@pytest.fixture
async def hub(redis: Any, redis_url: str, fake: FakeOpsGenie, monkeypatch: pytest.MonkeyPatch
              ) -> AsyncIterator[Harness]:
    monkeypatch.setattr(OpsGenie, "retry_policy", FAST_RETRY)
    settings = make_settings(redis_url, opsgenie_api_key=API_KEY, opsgenie_api_url=fake.url)
    async with Harness(redis, settings, OpsGenie) as h:
        yield h


async def test_create_sends_the_documented_request(hub: Harness, fake: FakeOpsGenie) -> None:
    rec = await hub.run(planned("opsgenie", "create", CREATE))
    assert rec["state"] == "succeeded" and rec["attempts"][0]["status"] == 202
    (req,) = fake.calls("/v2/alerts", "POST")
    assert req.headers["Authorization"] == f"GenieKey {API_KEY}"
    body = req.json()
    assert len(body["message"]) == 130 and body["message"].startswith("Checkout error rate above 10%")
    assert body["alias"] == "fp-checkout-errors" and body["priority"] == "P2"
    assert body["responders"] == [{"type": "team", "name": "payments"}] and body["tags"] == ["checkout", "grafana"]
    assert body["details"] == {"value": "12", "runbook": "https://runbooks.example/checkout"}
    assert body["description"] == "Error rate 12% for 5 minutes"
    assert rec["result"]["alias"] == "fp-checkout-errors" and rec["result"]["request_id"]


async def test_explicit_priority_wins_over_severity(hub: Harness, fake: FakeOpsGenie) -> None:
    await hub.run(planned("opsgenie", "create", {**CREATE, "priority": "p5"}))
    assert fake.requests[0].json()["priority"] == "P5"


async def test_acknowledge_close_and_note_address_the_alias(hub: Harness, fake: FakeOpsGenie) -> None:
    await hub.run(planned("opsgenie", "create", CREATE))
    await hub.run(planned("opsgenie", "add_note", {"alias": "fp-checkout-errors", "note": "Escalated to level 2"},
                          action_id="wf.note"))
    await hub.run(planned("opsgenie", "acknowledge", {"alias": "fp-checkout-errors"}, action_id="wf.ack"))
    rec = await hub.run(planned("opsgenie", "close", {"alias": "fp-checkout-errors", "note": "Resolved"},
                                action_id="wf.close"))
    assert rec["state"] == "succeeded"
    paths = [(r.path, r.query) for r in fake.requests[1:]]
    assert paths == [("/v2/alerts/fp-checkout-errors/notes", {"identifierType": "alias"}),
                     ("/v2/alerts/fp-checkout-errors/acknowledge", {"identifierType": "alias"}),
                     ("/v2/alerts/fp-checkout-errors/close", {"identifierType": "alias"})]
    assert fake.requests[1].json() == {"source": "incident-hub", "note": "Escalated to level 2"}
    (alert,) = fake.created()
    assert alert.status == "closed" and alert.acknowledged and alert.notes == ["Escalated to level 2", "Resolved"]


async def test_alias_with_slashes_and_spaces_round_trips(hub: Harness, fake: FakeOpsGenie) -> None:
    alias = "grafana/checkout errors?x=1"
    await hub.run(planned("opsgenie", "create", {**CREATE, "alias": alias}))
    rec = await hub.run(planned("opsgenie", "close", {"alias": alias}, action_id="wf.close"))
    assert rec["state"] == "succeeded"
    (alert,) = fake.created()
    assert alert.alias == alias and alert.status == "closed"


async def test_job_run_twice_opens_one_alert(hub: Harness, fake: FakeOpsGenie) -> None:
    action = planned("opsgenie", "create", CREATE)
    await hub.run(action)
    await hub.run(action)
    await hub.run(action, fresh=True)  # record lost after the call: OpsGenie dedups by alias
    assert len(fake.requests) == 2 and len(fake.created()) == 1 and fake.created()[0].count == 2


async def test_5xx_then_429_then_success(hub: Harness, fake: FakeOpsGenie) -> None:
    fake.faults.extend([Fault(status=500), Fault(status=429, retry_after="0")])
    rec = await hub.run_to_final(planned("opsgenie", "create", CREATE))
    assert [a["status"] for a in rec["attempts"]] == [500, 429, 202] and rec["state"] == "succeeded"
    assert len(fake.created()) == 1


async def test_bad_key_is_dead_with_the_body_and_the_key_is_not_recorded(redis: Any, redis_url: str,
                                                                         fake: FakeOpsGenie) -> None:
    settings = make_settings(redis_url, opsgenie_api_key="wrong-key-0123456789", opsgenie_api_url=fake.url)
    async with Harness(redis, settings, OpsGenie) as h:
        rec = await h.run(planned("opsgenie", "create", CREATE))
    assert rec["state"] == "dead" and rec["attempts"][0]["status"] == 401
    assert "Key format is not valid" in rec["last_response"]
    assert "wrong-key-0123456789" not in str(rec)


async def test_missing_message_is_dead_without_calling(hub: Harness, fake: FakeOpsGenie) -> None:
    rec = await hub.run(planned("opsgenie", "create", {"alias": "x"}))
    assert rec["state"] == "dead" and "needs a message" in rec["error"] and fake.requests == []


async def test_not_configured_is_skipped(redis: Any, redis_url: str) -> None:
    async with Harness(redis, make_settings(redis_url), OpsGenie) as h:
        rec = await h.run(planned("opsgenie", "create", CREATE))
    assert rec["state"] == "skipped" and rec["error"] == "skipped: opsgenie not configured (OPSGENIE_API_KEY)"
