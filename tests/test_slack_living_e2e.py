"""The built-in workflows in Slack's Web API mode (SLACK_BOT_TOKEN), end to end: signed webhooks →
ingress → Redis → worker → the fake Slack Web API. One living message per incident, edited in
place, with the other Slack steps as thread replies."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.fakes.slack import BOT_TOKEN, FakeSlackApi
from tests.test_workflows_e2e import DATADOG_TOKEN, INCIDENT_KEY, Hub, Upstreams, incident_payload, load

CHANNEL = "C0INCIDENT"


def api_settings(redis_url: str, ups: Upstreams, fake: FakeSlackApi) -> Any:
    return ups.settings(redis_url, slack_bot_token=BOT_TOKEN, slack_api_url=fake.api_url, slack_channel=CHANNEL)


async def test_declared_raised_resolved_is_one_living_message_with_thread_replies(
        redis_url: str, redis: Any, upstreams: Upstreams, slack_api: FakeSlackApi) -> None:
    async with Hub(api_settings(redis_url, upstreams, slack_api), redis) as hub:
        created = await hub.send("incidentio", incident_payload("incident_created_v2"))
        raised = await hub.send("incidentio", incident_payload("incident_updated_v2", severity="Critical",
                                                                status=("Fixing", "live")))
        resolved = await hub.send("incidentio", incident_payload("incident_status_updated_v2", severity="Critical"))
    done = await hub.done_actions(created["id"])  # (the timers the resolution cancelled are there, skipped)
    assert ("slack.notify", "succeeded") not in done and ("slack.incident", "succeeded") in done
    assert upstreams.slack.requests == []  # the incoming webhook is not used
    (top,) = slack_api.posted(CHANNEL, top_level=True)
    assert top.metadata["event_type"] == "incident_hub_incident"
    assert top.metadata["event_payload"]["incident"] == INCIDENT_KEY
    assert top.edits == 2  # raised to SEV1, then resolved
    assert "SEV1" in top.text and "(resolved)" in top.text
    replies = slack_api.posted(CHANNEL, top_level=False)
    assert [m.thread_ts for m in replies] == [top.ts, top.ts]
    assert ":arrows_counterclockwise:" in replies[0].text and "Resolved after" in replies[1].text
    assert raised["state"] == resolved["state"] == "done"
    assert all(r.headers["Authorization"] == f"Bearer {BOT_TOKEN}" for r in slack_api.requests)


async def test_an_alert_born_incident_gets_one_living_message(redis_url: str, redis: Any, upstreams: Upstreams,
                                                               slack_api: FakeSlackApi) -> None:
    alert = copy.deepcopy(load("datadog_alert_triggered.json"))
    auth = {"Authorization": f"Bearer {DATADOG_TOKEN}", "Content-Type": "application/json"}
    async with Hub(api_settings(redis_url, upstreams, slack_api), redis) as hub:
        fired = await hub.send("datadog", alert, headers=auth)
        again = await hub.send("datadog", {**alert, "id": "another-delivery"}, headers=auth)
    assert fired["state"] == "done" and again["state"] == "done"
    (top,) = slack_api.posted(CHANNEL, top_level=True)
    assert "*Paged:* yes, key" in str(top.blocks)  # it runs after the page, so it shows it
    assert top.edits == 0  # the repeat changed nothing the message shows


async def test_without_a_bot_token_the_defaults_post_through_the_webhook(
        redis_url: str, redis: Any, upstreams: Upstreams, slack_api: FakeSlackApi) -> None:
    async with Hub(upstreams.settings(redis_url), redis) as hub:
        created = await hub.send("incidentio", incident_payload("incident_created_v2"))
    assert ("slack.notify", "succeeded") in await hub.done_actions(created["id"])
    assert "slack.incident" not in [n for n, _ in await hub.done_actions(created["id"])]
    assert len(upstreams.slack.requests) == 1 and slack_api.requests == []


DM_RULES = """
version: 1
catalog:
  leadership: [U0CTO]
  services:
    checkout-api:
      aliases: [Payments, checkout]
      team: payments
  teams:
    payments:
      slack_channel: "#payments"
      notify_dm: [U0VP, U0CTO]
  sources:
    incidentio: {services_field: Affected Team}
"""


async def test_a_sev1_dms_the_team_and_leadership_once_and_posts_in_the_team_channel(
        redis_url: str, redis: Any, upstreams: Upstreams, slack_api: FakeSlackApi, tmp_path: Any) -> None:
    rules = tmp_path / "hub.yaml"
    rules.write_text(DM_RULES)
    settings = api_settings(redis_url, upstreams, slack_api).model_copy(update={"hub_config": rules})
    async with Hub(settings, redis) as hub:
        await hub.send("incidentio", incident_payload("incident_created_v2", severity="Critical"))
        await hub.send("incidentio", incident_payload("incident_updated_v2", severity="Critical",
                                                      status=("Fixing", "live")))
    dms = sorted(m.channel for m in slack_api.messages if m.channel.startswith("D"))
    assert dms == ["D0CTO", "D0VP"]  # once each, although the CTO is listed twice
    (top,) = slack_api.posted("C0PAYMENTS", top_level=True)  # the team's channel, by name
    assert top.metadata["event_payload"]["incident"] == INCIDENT_KEY


def test_a_catalog_user_id_that_is_not_one_is_refused_by_validate(tmp_path: Any) -> None:
    from hub.rules.loader import RulesError, load_text

    with pytest.raises(RulesError) as e:
        load_text(DM_RULES.replace("[U0VP, U0CTO]", "[U0VP, '@dana']"), "hub.yaml")
    (problem,) = e.value.problems
    assert "notify_dm" in str(problem) and problem.line == 12
