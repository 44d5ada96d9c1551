"""Statuspage through the real ActionRunner against the fake over loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from connectors.base import stable_ref
from connectors.statuspage import Statuspage
from tests.conftest import make_settings, wait_for
from tests.connector_harness import FAST_RETRY, Harness, planned
from tests.fakes.base import Fault
from tests.fakes.statuspage import API_KEY, PAGE_ID, FakeStatuspage

BASE = f"/v1/pages/{PAGE_ID}/incidents"
OPEN = {"key": "inc-42", "name": "Checkout errors", "status": "investigating", "body": "We are looking into it.",
        "component_ids": ["cmp_checkout"],
        "components": {"cmp_checkout": "major_outage", "cmp_api": "degraded_performance"}, "impact_override": "major"}


@pytest.fixture
async def fake() -> AsyncIterator[FakeStatuspage]:
    async with FakeStatuspage() as fake:
        yield fake


def sp_settings(redis_url: str, fake: FakeStatuspage) -> Any:
    return make_settings(redis_url, statuspage_api_key=API_KEY, statuspage_page_id=PAGE_ID,
                         statuspage_api_url=fake.url)


@pytest.fixture
async def hub(redis: Any, redis_url: str, fake: FakeStatuspage, monkeypatch: pytest.MonkeyPatch
              ) -> AsyncIterator[Harness]:
    monkeypatch.setattr(Statuspage, "retry_policy", FAST_RETRY)
    async with Harness(redis, sp_settings(redis_url, fake), Statuspage) as h:
        yield h


def posts(fake: FakeStatuspage) -> list[Any]:
    return fake.calls(BASE, "POST")


async def test_open_sends_the_documented_request(hub: Harness, fake: FakeStatuspage) -> None:
    rec = await hub.run(planned("statuspage", "open", OPEN))
    assert rec["state"] == "succeeded"
    (req,) = posts(fake)
    assert req.headers["Authorization"] == f"OAuth {API_KEY}"
    incident = req.json()["incident"]
    assert incident["name"] == "Checkout errors" and incident["status"] == "investigating"
    assert incident["body"] == "We are looking into it." and incident["impact_override"] == "major"
    assert incident["component_ids"] == ["cmp_checkout", "cmp_api"]
    assert incident["components"] == {"cmp_checkout": "major_outage", "cmp_api": "degraded_performance"}
    assert incident["metadata"] == {"incident_hub": {"ref": stable_ref("inc-42")}}
    assert rec["result"] == {"statuspage_incident_id": fake.created[0]}


async def test_update_then_resolve_patch_the_same_incident(hub: Harness, fake: FakeStatuspage) -> None:
    opened = await hub.run(planned("statuspage", "open", OPEN))
    incident_id = opened["result"]["statuspage_incident_id"]
    upd = await hub.run(planned("statuspage", "update", {"key": "inc-42", "status": "identified",
                                                         "body": "Bad deploy found.",
                                                         "components": {"cmp_search": "partial_outage"}},
                                action_id="wf.update"))
    res = await hub.run(planned("statuspage", "resolve", {"key": "inc-42", "body": "Fixed."}, action_id="wf.res"))
    assert upd["state"] == res["state"] == "succeeded"
    assert upd["result"] == res["result"] == {"statuspage_incident_id": incident_id}
    patches = fake.calls(f"{BASE}/{incident_id}", "PATCH")
    assert [p.json()["incident"]["status"] for p in patches] == ["identified", "resolved"]
    assert patches[0].json()["incident"]["body"] == "Bad deploy found."
    resolved = patches[1].json()["incident"]
    assert resolved["body"] == "Fixed."
    # every component the incident touched goes back to operational
    assert resolved["components"] == {"cmp_checkout": "operational", "cmp_api": "operational",
                                      "cmp_search": "operational"}
    assert set(fake.components.values()) == {"operational"}
    assert fake.incidents[incident_id]["status"] == "resolved"


async def test_update_without_an_open_incident_is_skipped(hub: Harness, fake: FakeStatuspage) -> None:
    rec = await hub.run(planned("statuspage", "update", {"key": "never-opened", "status": "identified"}))
    assert rec["state"] == "skipped" and "no Statuspage incident open" in rec["error"]
    assert fake.requests == []


async def test_open_after_resolve_starts_a_new_incident(hub: Harness, fake: FakeStatuspage) -> None:
    await hub.run(planned("statuspage", "open", OPEN), "ev_1")
    await hub.run(planned("statuspage", "resolve", {"key": "inc-42"}), "ev_2")
    await hub.run(planned("statuspage", "open", OPEN), "ev_3")
    assert len(fake.created) == 2 and fake.incidents[fake.created[1]]["status"] == "investigating"


async def test_420_and_429_are_retried(hub: Harness, fake: FakeStatuspage) -> None:
    fake.faults.extend([Fault(status=420, body="Enhance your calm"), Fault(status=429, retry_after="0")])
    rec = await hub.run_to_final(planned("statuspage", "open", OPEN))
    assert rec["state"] == "succeeded" and [a["status"] for a in rec["attempts"]] == [420, 429, 201]
    assert len(fake.created) == 1
    assert [r.method for r in fake.requests] == ["POST", "POST", "POST"]  # a refusal needs no lookup


async def test_429_retry_after_is_a_floor(hub: Harness, fake: FakeStatuspage) -> None:
    fake.faults.append(Fault(status=429, retry_after="2"))
    rec = await hub.run(planned("statuspage", "open", OPEN))
    assert rec["state"] == "retrying" and rec["next_at"] - rec["attempts"][0]["at"] >= 1990


async def test_422_is_dead_with_the_body(hub: Harness, fake: FakeStatuspage) -> None:
    fake.faults.append(Fault(status=422, body='{"error":"Component cmp_x does not exist"}'))
    rec = await hub.run(planned("statuspage", "open", OPEN))
    assert rec["state"] == "dead" and "cmp_x does not exist" in rec["last_response"]


async def test_job_run_twice_opens_one_incident(hub: Harness, fake: FakeStatuspage) -> None:
    action = planned("statuspage", "open", OPEN)
    first = await hub.run(action)
    await hub.run(action)
    again = await hub.run(action, fresh=True)  # the record was lost: the ledger still knows
    assert len(fake.created) == 1 and len(posts(fake)) == 1
    assert again["result"] == first["result"]


async def test_two_events_opening_the_same_key_at_once_open_one(redis: Any, redis_url: str, fake: FakeStatuspage,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Statuspage, "retry_policy", FAST_RETRY)
    fake.faults.append(Fault(stall=0.3))  # the first create is slow; the second must wait, then find it
    settings = sp_settings(redis_url, fake)
    async with Harness(redis, settings, Statuspage) as a, Harness(redis, settings, Statuspage) as b:
        ra, rb = await asyncio.gather(a.run_to_final(planned("statuspage", "open", OPEN), "ev_a"),
                                      b.run_to_final(planned("statuspage", "open", OPEN), "ev_b"))
    assert ra["state"] == rb["state"] == "succeeded"
    assert len(fake.created) == 1 and ra["result"] == rb["result"]


async def test_timeout_after_send_is_looked_up_not_created_again(hub: Harness, fake: FakeStatuspage,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Statuspage, "timeout", 0.2)
    fake.faults.append(Fault(stall=0.6))  # Statuspage creates it after we gave up
    action = planned("statuspage", "open", OPEN)
    first = await hub.run(action)
    assert first["state"] == "retrying" and first["attempts"][0]["ambiguous"] is True
    await wait_for(lambda: asyncio.sleep(0, fake.created))
    rec = await hub.run_to_final(action)
    assert rec["state"] == "succeeded" and rec["result"] == {"statuspage_incident_id": fake.created[0]}
    assert len(fake.created) == 1 and len(posts(fake)) == 1
    assert fake.calls(f"{BASE}/unresolved", "GET")


async def test_crash_after_send_is_looked_up_by_name_too(hub: Harness, fake: FakeStatuspage,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The record was lost (worker killed mid-call) and Statuspage dropped our metadata: the
    intent marker still makes the next run look, and the exact name since then matches."""
    monkeypatch.setattr(Statuspage, "timeout", 0.2)
    fake.faults.append(Fault(stall=0.5))
    action = planned("statuspage", "open", OPEN)
    await hub.run(action)
    await wait_for(lambda: asyncio.sleep(0, fake.created))
    fake.incidents[fake.created[0]]["metadata"] = {}
    rec = await hub.run(action, "ev_other", fresh=True)  # no ambiguous attempt on this record
    assert rec["state"] == "succeeded" and rec["result"]["statuspage_incident_id"] == fake.created[0]
    assert len(fake.created) == 1


async def test_a_lookup_never_adopts_another_keys_incident_of_the_same_public_name(
        hub: Harness, fake: FakeStatuspage, monkeypatch: pytest.MonkeyPatch) -> None:
    """Public wording repeats ("Degraded performance of Checkout" for every checkout incident):
    after an unconfirmed create, an incident marked for another key is not ours, name or not."""
    other = await hub.run(planned("statuspage", "open", {**OPEN, "key": "inc-41"}, action_id="wf.other"))
    assert other["state"] == "succeeded"
    monkeypatch.setattr(Statuspage, "timeout", 0.2)
    fake.faults.append(Fault(status=500))  # nothing created, but a 5xx is ambiguous: the next run looks
    action = planned("statuspage", "open", OPEN)
    first = await hub.run(action)
    assert first["state"] == "retrying"
    rec = await hub.run_to_final(action)
    assert rec["state"] == "succeeded"
    assert rec["result"]["statuspage_incident_id"] != other["result"]["statuspage_incident_id"]
    assert len(fake.created) == 2


async def test_reset_before_anything_was_created_creates_once(hub: Harness, fake: FakeStatuspage,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A reset loses the answer: the server may still create it, so an empty look-up is only
    trusted once the in-flight grace has passed; then the hub creates, once."""
    monkeypatch.setattr(Statuspage, "in_flight_grace", 0.5)
    fake.faults.append(Fault(reset=True))
    action = planned("statuspage", "open", OPEN)
    early = await hub.run(action)
    assert early["state"] == "retrying" and early["attempts"][0]["ambiguous"] is True
    await asyncio.sleep(0.1)  # the retry is due (FAST_RETRY), the grace has not passed
    early = await hub.run(action)  # within the grace: looks, finds nothing, does not create
    assert early["state"] == "retrying" and "may still land" in early["attempts"][-1]["error"]
    assert [r.method for r in fake.requests] == ["POST", "GET"]
    rec = await hub.run_to_final(action)
    assert rec["state"] == "succeeded" and len(fake.created) == 1
    assert [r.method for r in fake.requests][-2:] == ["GET", "POST"]  # looked again, found nothing, created


async def test_a_create_that_lands_after_the_first_look_up_is_adopted_not_doubled(
        hub: Harness, fake: FakeStatuspage, monkeypatch: pytest.MonkeyPatch) -> None:
    """The request timed out on our side and Statuspage creates the incident a little later,
    after the next attempt has already looked and found nothing: that attempt must not create
    a second one (seen in the upstream-faults run: a stall of timeout + 1 s)."""
    monkeypatch.setattr(Statuspage, "timeout", 0.2)
    monkeypatch.setattr(Statuspage, "in_flight_grace", 1.5)
    fake.faults.append(Fault(stall=1.0))  # lands 0.8 s after we gave up
    action = planned("statuspage", "open", OPEN)
    first = await hub.run(action)
    assert first["state"] == "retrying" and first["attempts"][0]["ambiguous"] is True
    await asyncio.sleep(0.1)  # the retry is due, the stalled create has not landed
    second = await hub.run(action)
    assert [r.method for r in fake.requests] == ["POST", "GET"]
    assert second["state"] == "retrying" and fake.created == []
    rec = await hub.run_to_final(action)
    assert rec["state"] == "succeeded" and rec["result"] == {"statuspage_incident_id": fake.created[0]}
    assert len(fake.created) == 1 and len(posts(fake)) == 1


async def test_update_after_a_timeout_is_not_posted_twice(hub: Harness, fake: FakeStatuspage,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    opened = await hub.run(planned("statuspage", "open", OPEN))
    incident_id = opened["result"]["statuspage_incident_id"]
    monkeypatch.setattr(Statuspage, "timeout", 0.2)
    fake.faults.append(Fault(stall=0.5))
    action = planned("statuspage", "update", {"key": "inc-42", "status": "monitoring", "body": "Fix deployed."},
                     action_id="wf.upd")
    await hub.run(action)
    await wait_for(lambda: asyncio.sleep(0, fake.incidents[incident_id]["status"] == "monitoring"))
    rec = await hub.run_to_final(action)
    assert rec["state"] == "succeeded"
    bodies = [u["body"] for u in fake.incidents[incident_id]["incident_updates"]]
    assert bodies.count("Fix deployed.") == 1


async def test_not_configured_is_skipped(redis: Any, redis_url: str, fake: FakeStatuspage) -> None:
    settings = make_settings(redis_url, statuspage_api_key=API_KEY, statuspage_api_url=fake.url)
    async with Harness(redis, settings, Statuspage) as h:
        rec = await h.run(planned("statuspage", "open", OPEN))
    assert rec["state"] == "skipped" and rec["error"] == "skipped: statuspage not configured (STATUSPAGE_PAGE_ID)"
    assert fake.requests == []


async def test_rate_limit_wait_is_not_an_attempt(redis: Any, redis_url: str, fake: FakeStatuspage) -> None:
    """The documented 1/s per token: a second call within the second is parked, not attempted."""
    async with Harness(redis, sp_settings(redis_url, fake), Statuspage, env={}, inline_wait=0) as h:
        first = await h.run(planned("statuspage", "open", OPEN), "ev_1")
        second = await h.run(planned("statuspage", "open", {**OPEN, "key": "inc-43"}), "ev_2")
    assert first["state"] == "succeeded"
    assert second["state"] == "retrying" and second["attempts"] == []
    assert second["waiting"] == "waiting: statuspage rate limit" and second["next_at"] is not None
    assert len(fake.requests) == 1
