"""The fallback pager end to end: a page that dead-letters pages through the other pager and
tells the channel how to replay it; a replay that then succeeds pages nobody twice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from connectors.base import RetryPolicy
from hub.operators.replay import dry_run, replay_event
from tests.fakes.base import Fault
from tests.test_workflows_e2e import INCIDENT_KEY, Hub, incident_payload

FAST = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.02, deadline=600)


@pytest.fixture(autouse=True)
def fast_pagerduty(monkeypatch: pytest.MonkeyPatch) -> None:
    from connectors.opsgenie import OpsGenie
    from connectors.pagerduty import PagerDuty

    monkeypatch.setattr(PagerDuty, "retry_policy", FAST)
    monkeypatch.setattr(OpsGenie, "retry_policy", FAST)


def notices(ups: Any) -> list[str]:
    return [r.json()["text"] for r in ups.slack.requests if "failed" in r.json()["text"]]


async def test_dead_page_falls_back_to_opsgenie_and_a_replay_does_not_page_twice(
        redis_url, redis, upstreams) -> None:
    upstreams.pagerduty.faults.extend(Fault(status=500, body="boom") for _ in range(3))
    settings = upstreams.settings(redis_url)
    async with Hub(settings, redis) as hub:
        declared = await hub.send("incidentio", incident_payload("incident_created_v2"))
        event_id = declared["id"]
        assert declared["state"] == "partially_failed"
        states = dict((name, state) for name, state in await hub.done_actions(event_id)
                      if name != "slack.notify")
        assert states == {"pagerduty.trigger": "dead", "opsgenie.create": "succeeded"}
        (alert,) = upstreams.opsgenie.calls("/v2/alerts", "POST")
        body = alert.json()
        assert body["alias"] == INCIDENT_KEY and body["priority"] == "P2"
        assert body["message"] == "[SEV2] INC-1482: Checkout API returning 5xx errors"
        assert "The PagerDuty page failed" in body["description"]
        (notice,) = notices(upstreams)
        assert "OpsGenie was paged instead" in notice
        assert f"`incident-hub replay {event_id}`" in notice

        # the dry run says what the fallback actions are, not "no longer planned"
        plan = await dry_run(hub.store, event_id, settings=settings)
        reasons = {a["id"].rsplit(":", 1)[1]: (a["would"], a["reason"]) for a in plan["actions"]}
        assert reasons["fallback"][0] == "skip" and reasons["fallback"][1].startswith("the fallback of ")
        # PagerDuty is back: the replay delivers the page; the fallback does not run again
        await replay_event(hub.store, event_id, by="test")
        replayed = await hub.final(event_id)
        assert replayed["state"] == "done"
        assert len(upstreams.pagerduty.calls("/v2/enqueue")) == 4  # 3 failed + the replay
        # the same incident delivered again: still one fallback page and one notice
        again = await hub.send("incidentio", incident_payload("incident_updated_v2"))
        assert again["state"] in ("done", "partially_failed")
    assert len(upstreams.opsgenie.calls("/v2/alerts", "POST")) == 1
    assert len(notices(upstreams)) == 1
    state = await hub.incidents.get(INCIDENT_KEY)
    assert state["paged_by"] == "opsgenie" and state["page_dedup_key"] == INCIDENT_KEY
    records = await hub.actions(event_id)
    fallback = [r for r in records.values() if r["id"].endswith(":fallback")]
    assert [r["state"] for r in fallback] == ["succeeded"]


async def test_without_a_second_pager_the_channel_hears_that_nobody_was_paged(
        redis_url, redis, upstreams) -> None:
    upstreams.pagerduty.faults.extend(Fault(status=500) for _ in range(3))
    settings = upstreams.settings(redis_url, opsgenie_api_key=None)
    async with Hub(settings, redis) as hub:
        declared = await hub.send("incidentio", incident_payload("incident_created_v2"))
    (notice,) = notices(upstreams)
    assert "nobody was paged" in notice and f"incident-hub replay {declared['id']}" in notice
    assert upstreams.opsgenie.requests == []


async def test_fallback_pager_false_turns_it_off(redis_url, redis, upstreams, tmp_path: Path) -> None:
    rules = tmp_path / "hub.yaml"
    rules.write_text("version: 1\ncatalog:\n  fallback_pager: false\n")
    upstreams.pagerduty.faults.extend(Fault(status=500) for _ in range(3))
    settings = upstreams.settings(redis_url, hub_config=rules)
    async with Hub(settings, redis) as hub:
        declared = await hub.send("incidentio", incident_payload("incident_created_v2"))
    assert declared["state"] == "partially_failed"
    assert upstreams.opsgenie.requests == [] and notices(upstreams) == []


async def test_a_dead_opsgenie_page_falls_back_to_the_services_pagerduty_key(
        redis_url, redis, upstreams, tmp_path: Path) -> None:
    rules = tmp_path / "hub.yaml"
    rules.write_text("version: 1\ncatalog:\n  services:\n    checkout:\n      aliases: [Payments]\n"
                     "      opsgenie_responders: [{type: team, name: Payments}]\n"
                     "      pagerduty_routing_key: SERVICEKEY0000000000000000000000\n"
                     "  sources:\n    incidentio: {services_field: Affected Team}\n"
                     "workflows:\n  - name: page\n    on: [incident.declared]\n    do:\n"
                     "      - id: page\n        action: opsgenie.create\n"
                     "        with: {message: 'page {{ incident.title }}', alias: '{{ incident.key }}'}\n")
    upstreams.opsgenie.faults.extend(Fault(status=503) for _ in range(3))
    settings = upstreams.settings(redis_url, hub_config=rules, pagerduty_routing_key=None)
    async with Hub(settings, redis) as hub:
        await hub.send("incidentio", incident_payload("incident_created_v2"))
    (page,) = upstreams.pagerduty.calls("/v2/enqueue")
    sent = page.json()
    assert sent["routing_key"] == "SERVICEKEY0000000000000000000000"
    assert sent["dedup_key"] == INCIDENT_KEY and sent["payload"]["summary"].startswith("page INC-1482")
    (notice,) = notices(upstreams)
    assert "The OpsGenie page failed for “" in notice and "PagerDuty was paged instead" in notice


async def test_the_fallback_alert_closes_when_the_incident_resolves(redis_url, redis, upstreams) -> None:
    upstreams.pagerduty.faults.extend(Fault(status=500) for _ in range(3))
    settings = upstreams.settings(redis_url)
    async with Hub(settings, redis) as hub:
        await hub.send("incidentio", incident_payload("incident_created_v2"))
        resolved = await hub.send("incidentio", incident_payload("incident_status_updated_v2"))
    names = [name for name, _ in await hub.done_actions(resolved["id"])]
    assert "opsgenie.close" in names and "pagerduty.resolve" not in names  # the alert that went out is closed
    close = upstreams.opsgenie.requests[-1]
    assert close.path == f"/v2/alerts/{INCIDENT_KEY}/close"


async def test_a_forced_replay_that_delivers_the_page_leaves_the_fallback_alone(redis_url, redis,
                                                                                upstreams) -> None:
    upstreams.pagerduty.faults.extend(Fault(status=500) for _ in range(3))
    settings = upstreams.settings(redis_url)
    async with Hub(settings, redis) as hub:
        declared = await hub.send("incidentio", incident_payload("incident_created_v2"))
        await replay_event(hub.store, declared["id"], force=True, by="test")
        await hub.final(declared["id"])
    assert len(upstreams.opsgenie.calls("/v2/alerts", "POST")) == 1 and len(notices(upstreams)) == 1
    records = await hub.actions(declared["id"])
    fallback = {aid.rsplit(":", 1)[1]: r for aid, r in records.items() if ":fallback" in aid}
    assert {k: r["state"] for k, r in fallback.items()} == {"fallback": "skipped", "fallback-notice": "skipped"}
    assert fallback["fallback"]["error"] == "not needed: the page it stood in for is succeeded"
