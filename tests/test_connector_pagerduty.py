"""PagerDuty Events API v2 through the real ActionRunner against the fake over loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from connectors.pagerduty import PagerDuty, pd_severity
from tests.conftest import make_settings
from tests.connector_harness import FAST_RETRY, Harness, planned
from tests.fakes.base import Fault
from tests.fakes.pagerduty import FakePagerDuty

ROUTING_KEY = "R0UT1NGKEY0123456789abcdefABCDEF"
OTHER_KEY = "0THERKEY0123456789abcdefABCDEF00"


@pytest.fixture
async def fake() -> AsyncIterator[FakePagerDuty]:
    async with FakePagerDuty() as fake:
        yield fake


@pytest.fixture
async def hub(redis: Any, redis_url: str, fake: FakePagerDuty, monkeypatch: pytest.MonkeyPatch
              ) -> AsyncIterator[Harness]:
    monkeypatch.setattr(PagerDuty, "retry_policy", FAST_RETRY)
    settings = make_settings(redis_url, pagerduty_routing_key=ROUTING_KEY, pagerduty_events_url=fake.events_url)
    async with Harness(redis, settings, PagerDuty) as h:
        yield h


TRIGGER = {"summary": "checkout error rate 12%", "severity": "SEV1", "source": "grafana", "component": "checkout",
           "group": "payments", "class": "error-rate", "custom_details": {"value": "12%"},
           "links": [{"href": "https://grafana.example/d/1", "text": "dashboard"}], "dedup_key": "fp-123"}


async def test_trigger_sends_the_documented_body(hub: Harness, fake: FakePagerDuty) -> None:
    rec = await hub.run(planned("pagerduty", "trigger", TRIGGER))
    assert rec["state"] == "succeeded" and rec["result"] == {"dedup_key": "fp-123"}
    (req,) = fake.calls("/v2/enqueue", "POST")
    assert "Authorization" not in req.headers  # the routing key in the body is the credential
    body = req.json()
    assert body["routing_key"] == ROUTING_KEY and body["event_action"] == "trigger" and body["dedup_key"] == "fp-123"
    assert body["payload"] == {"summary": "checkout error rate 12%", "source": "grafana", "severity": "critical",
                               "component": "checkout", "group": "payments", "class": "error-rate",
                               "custom_details": {"value": "12%"}}
    assert body["links"] == [{"href": "https://grafana.example/d/1", "text": "dashboard"}]
    assert rec["params"].get("routing_key") is None and rec["attempts"][0]["status"] == 202


def test_severity_mapping() -> None:
    assert [pd_severity(s) for s in ("SEV1", "SEV2", "SEV3", "SEV4")] == ["critical", "error", "warning", "info"]
    assert pd_severity("warning") == "warning" and pd_severity(None) == "error"


async def test_routing_key_override_from_params_is_used_and_redacted(hub: Harness, fake: FakePagerDuty) -> None:
    rec = await hub.run(planned("pagerduty", "trigger", {**TRIGGER, "routing_key": OTHER_KEY}))
    assert fake.requests[0].json()["routing_key"] == OTHER_KEY
    assert rec["params"]["routing_key"] == "***"
    assert fake.created[0].routing_key == OTHER_KEY


async def test_trigger_without_dedup_key_uses_the_idempotency_key(hub: Harness, fake: FakePagerDuty) -> None:
    params = {k: v for k, v in TRIGGER.items() if k != "dedup_key"}
    rec = await hub.run(planned("pagerduty", "trigger", params, key="ev1:page"))
    assert fake.requests[0].json()["dedup_key"] == "ev1:page" and rec["result"]["dedup_key"] == "ev1:page"


async def test_long_dedup_key_is_hashed_stably(hub: Harness, fake: FakePagerDuty) -> None:
    long_key = "x" * 300
    await hub.run(planned("pagerduty", "trigger", {**TRIGGER, "dedup_key": long_key}), "ev_a")
    await hub.run(planned("pagerduty", "trigger", {**TRIGGER, "dedup_key": long_key}), "ev_b")
    sent = [r.json()["dedup_key"] for r in fake.requests]
    assert sent[0] == sent[1] and len(sent[0]) <= 255
    assert len(fake.created) == 1


async def test_acknowledge_and_resolve_send_the_dedup_key(hub: Harness, fake: FakePagerDuty) -> None:
    await hub.run(planned("pagerduty", "trigger", TRIGGER))
    ack = await hub.run(planned("pagerduty", "acknowledge", {"dedup_key": "fp-123"}))
    res = await hub.run(planned("pagerduty", "resolve", {"dedup_key": "fp-123"}))
    assert ack["state"] == res["state"] == "succeeded"
    bodies = [r.json() for r in fake.requests[1:]]
    assert bodies == [{"routing_key": ROUTING_KEY, "event_action": "acknowledge", "dedup_key": "fp-123"},
                      {"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": "fp-123"}]
    assert fake.alerts[(ROUTING_KEY, "fp-123")].status == "resolved"


async def test_resolve_without_dedup_key_is_dead_without_calling(hub: Harness, fake: FakePagerDuty) -> None:
    rec = await hub.run(planned("pagerduty", "resolve", {}))
    assert rec["state"] == "dead" and "dedup_key" in rec["error"] and fake.requests == []


async def test_500_then_success_is_retried(hub: Harness, fake: FakePagerDuty) -> None:
    fake.faults.extend([Fault(status=500), Fault(status=502)])
    rec = await hub.run_to_final(planned("pagerduty", "trigger", TRIGGER))
    assert rec["state"] == "succeeded"
    assert [a["status"] for a in rec["attempts"]] == [500, 502, 202]
    assert len(fake.created) == 1


async def test_429_retry_after_is_honoured(hub: Harness, fake: FakePagerDuty) -> None:
    fake.faults.append(Fault(status=429, retry_after="1"))
    first = await hub.run(planned("pagerduty", "trigger", TRIGGER))
    assert first["state"] == "retrying" and first["attempts"][0]["status"] == 429
    assert first["next_at"] - first["attempts"][0]["at"] >= 990  # never before the server said
    again = await hub.run(planned("pagerduty", "trigger", TRIGGER))
    assert again["attempts"] == first["attempts"]  # not due yet: nothing sent
    final = await hub.run_to_final(planned("pagerduty", "trigger", TRIGGER))
    assert final["state"] == "succeeded" and len(fake.requests) == 2


async def test_400_is_dead_at_once_with_the_body_kept(hub: Harness, fake: FakePagerDuty, redis: Any) -> None:
    fake.faults.append(Fault(status=400, body='{"status":"invalid event","message":"Event object is invalid",'
                                              '"errors":["Length of \'dedup_key\' is too long"]}'))
    rec = await hub.run(planned("pagerduty", "trigger", TRIGGER))
    assert rec["state"] == "dead" and len(rec["attempts"]) == 1
    assert "Event object is invalid" in rec["last_response"] and rec["error"].startswith("HTTP 400")
    assert await redis.zscore("hub:dead", f"ev_test/{rec['id']}") is not None


async def test_out_of_attempts_is_dead_with_last_response(hub: Harness, fake: FakePagerDuty) -> None:
    fake.faults.extend([Fault(status=503, body="upstream unavailable")] * 4)
    rec = await hub.run_to_final(planned("pagerduty", "trigger", TRIGGER))
    assert rec["state"] == "dead" and len(rec["attempts"]) == FAST_RETRY.max_attempts
    assert rec["error"].startswith("out of attempts (4)") and rec["last_response"] == "upstream unavailable"
    assert fake.created == []


async def test_job_run_twice_pages_once(hub: Harness, fake: FakePagerDuty) -> None:
    action = planned("pagerduty", "trigger", TRIGGER)
    await hub.run(action)
    await hub.run(action)  # arq ran the job again: the recorded success is not repeated
    await hub.run(action, fresh=True)  # the record was lost after the call: PagerDuty dedups
    assert len(fake.requests) == 2
    assert len(fake.created) == 1 and fake.created[0].events == ["trigger", "trigger"]


async def test_timeout_then_retry_pages_once(hub: Harness, fake: FakePagerDuty, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    monkeypatch.setattr(PagerDuty, "timeout", 0.2)
    fake.faults.append(Fault(stall=0.5))  # PagerDuty accepts it, but after we gave up
    rec = await hub.run_to_final(planned("pagerduty", "trigger", TRIGGER))
    assert rec["state"] == "succeeded" and rec["attempts"][0]["ambiguous"] is True
    assert len(fake.created) == 1


async def test_no_routing_key_is_skipped(redis: Any, redis_url: str, fake: FakePagerDuty) -> None:
    settings = make_settings(redis_url, pagerduty_events_url=fake.events_url)
    async with Harness(redis, settings, PagerDuty) as h:
        rec = await h.run(planned("pagerduty", "trigger", TRIGGER))
    assert rec["state"] == "skipped" and rec["error"] == "skipped: pagerduty not configured (PAGERDUTY_ROUTING_KEY)"
    assert fake.requests == []
