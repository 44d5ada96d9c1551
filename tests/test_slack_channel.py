"""`slack.create_channel`: the incident's own channel, once, through the real runner against the fake
Slack Web API; and through the defaults end to end (no incident.io: the hub makes the channel)."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any

import pytest

from connectors.slack import Slack, channel_name
from tests.conftest import make_settings
from tests.connector_harness import FAST_RETRY, Harness, planned
from tests.fakes.slack import BOT_TOKEN, FakeSlackApi
from tests.test_slack_living_e2e import api_settings
from tests.test_workflows_e2e import DATADOG_TOKEN, Hub, Upstreams, load

DECLARED = 1764547200000  # 2025-12-01 00:00 UTC
PARAMS = {"key": "datadog:42", "episode": 1, "title": "[P1] High CPU on web-01 & <!channel>",
          "declared_at": str(DECLARED), "members": ["U0VP", "U0CTO"]}
NAME = "inc-20251201-p1-high-cpu-on-web-01-channel"


@pytest.fixture
def fake(slack_api: FakeSlackApi) -> FakeSlackApi:
    """Slack's Web API, faked over loopback (the root conftest's `slack_api`)."""
    return slack_api


@pytest.fixture
async def hub(redis: Any, redis_url: str, fake: FakeSlackApi, monkeypatch: pytest.MonkeyPatch
              ) -> AsyncIterator[Harness]:
    monkeypatch.setattr(Slack, "retry_policy", FAST_RETRY)
    settings = make_settings(redis_url, slack_bot_token=BOT_TOKEN, slack_api_url=fake.api_url)
    async with Harness(redis, settings, Slack) as h:
        yield h


def create(action_id: str, **changes: Any) -> Any:
    return planned("slack", "create_channel", {**PARAMS, **changes}, key=f"idem-{action_id}", action_id=action_id)


def test_the_name_follows_slacks_rules() -> None:
    assert channel_name(PARAMS) == NAME
    long = channel_name({**PARAMS, "title": "Ünïcode — and " + "x" * 200})
    assert len(long) == 80 and long.startswith("inc-20251201-n-code-and-xxx")
    assert channel_name({**PARAMS, "title": "!!!"}).startswith("inc-20251201-") and \
        len(channel_name({**PARAMS, "title": "!!!"})) == len("inc-20251201-") + 8


async def test_created_once_and_members_invited_once(hub: Harness, fake: FakeSlackApi) -> None:
    first = await hub.run_to_final(create("wf.a"))
    second = await hub.run_to_final(create("wf.b"))  # another step, another event: the same channel
    assert first["state"] == second["state"] == "succeeded"
    (cid,) = fake.created
    assert fake.channels[cid] == NAME and fake.members[cid] == ["U0BOT", "U0VP", "U0CTO"]
    assert first["result"]["slack_incident_channel"] == second["result"]["slack_incident_channel"] == cid
    assert len(fake.calls("/api/conversations.create")) == 1
    assert len(fake.calls("/api/conversations.invite")) == 1


async def test_a_name_taken_reuses_the_channel(hub: Harness, fake: FakeSlackApi) -> None:
    fake.channels["C0EXISTING"] = NAME
    rec = await hub.run_to_final(create("wf.a"))
    assert rec["state"] == "succeeded" and rec["result"]["slack_incident_channel"] == "C0EXISTING"
    assert fake.created == [] and fake.members["C0EXISTING"] == ["U0VP", "U0CTO"]
    assert "reused" in str(rec)


async def test_a_create_whose_answer_was_lost_is_not_made_twice(hub: Harness, fake: FakeSlackApi,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Slack, "timeout", 0.2)
    fake.stall_answer["conversations.create"] = 0.6  # Slack made it; its answer comes after we gave up
    rec = await hub.run_to_final(create("wf.a"))
    assert rec["state"] == "succeeded" and rec["attempts"][0]["error"].startswith("timed out")
    (cid,) = fake.created
    assert rec["result"]["slack_incident_channel"] == cid


async def test_members_already_there_are_fine(hub: Harness, fake: FakeSlackApi) -> None:
    fake.channels["C0EXISTING"] = NAME
    fake.members["C0EXISTING"] = ["U0VP", "U0CTO"]
    rec = await hub.run_to_final(create("wf.a"))
    assert rec["state"] == "succeeded"


# -- through the defaults ------------------------------------------------------------------------


async def test_without_incidentio_an_incident_gets_its_own_channel_with_a_living_message(
        redis_url: str, redis: Any, upstreams: Upstreams, fake: FakeSlackApi) -> None:
    alert = copy.deepcopy(load("datadog_alert_triggered.json"))
    auth = {"Authorization": f"Bearer {DATADOG_TOKEN}", "Content-Type": "application/json"}
    settings = api_settings(redis_url, upstreams, fake).model_copy(update={"incidentio_api_key": None})
    async with Hub(settings, redis) as hub:
        fired = await hub.send("datadog", alert, headers=auth)
        again = await hub.send("datadog", {**alert, "id": "another-delivery"}, headers=auth)
    assert fired["state"] == again["state"] == "done"
    (cid,) = fake.created
    assert fake.channels[cid].startswith("inc-") and "high-cpu-on-web-01" in fake.channels[cid]
    (own,) = fake.posted(cid, top_level=True)
    (team,) = fake.posted("C0INCIDENT", top_level=True)
    assert own.metadata["event_payload"]["incident"] == team.metadata["event_payload"]["incident"]


async def test_with_incidentio_configured_no_channel_is_made(redis_url: str, redis: Any, upstreams: Upstreams,
                                                             fake: FakeSlackApi) -> None:
    alert = copy.deepcopy(load("datadog_alert_triggered.json"))
    auth = {"Authorization": f"Bearer {DATADOG_TOKEN}", "Content-Type": "application/json"}
    async with Hub(api_settings(redis_url, upstreams, fake), redis) as hub:
        fired = await hub.send("datadog", alert, headers=auth)
    assert fired["state"] == "done" and fake.created == [] and fake.calls("/api/conversations.create") == []
