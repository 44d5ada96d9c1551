"""A sender's notification group is one incident (issue 12, item 1), end to end: signed
Alertmanager webhooks → the real worker → fake PagerDuty and incident.io over loopback.

Alertmanager resends the whole group on each change (an alert joins, one resolves, all
resolve); the group's page is triggered once, keeps its dedup key, and resolves once, when
the group says every alert is resolved. `grouping: per_alert` keeps a page per alert.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from connectors.alertmanager import source as alertmanager
from hub.operators.replay import replay_event
from hub.storage import alert_groups
from tests.conftest import FIXTURES
from tests.grouping_rules import PER_ALERT_RULES
from tests.test_workflows_e2e import Hub, Upstreams

TOKEN = "am-group-token"
ENDS = "0001-01-01T00:00:00Z"


def notification(**alerts: str) -> dict[str, Any]:
    """The group as Alertmanager sends it: fingerprint → status; the group resolved when all are."""
    data = json.loads((FIXTURES / "alertmanager_firing.json").read_bytes())
    template = data["alerts"][0]
    out = []
    for i, (fp, status) in enumerate(alerts.items()):
        alert = copy.deepcopy(template)
        alert.update(fingerprint=fp, status=status,
                     endsAt="2024-06-17T08:30:00Z" if status == "resolved" else ENDS)
        alert["labels"] = {**alert["labels"], "pod": f"payments-api-{i}"}
        out.append(alert)
    data["alerts"] = out
    data["status"] = "resolved" if all(s == "resolved" for s in alerts.values()) else "firing"
    return data


def triggers(ups: Upstreams) -> list[str]:
    return [c.json()["dedup_key"] for c in ups.pagerduty.calls("/v2/enqueue") if c.json()["event_action"] == "trigger"]


def resolves(ups: Upstreams) -> list[str]:
    return [c.json()["dedup_key"] for c in ups.pagerduty.calls("/v2/enqueue") if c.json()["event_action"] == "resolve"]


async def test_a_group_pages_once_keeps_its_alerts_and_resolves_when_the_group_does(
        redis_url: str, redis: Any, upstreams: Upstreams) -> None:
    settings = upstreams.settings(redis_url, alertmanager_webhook_token=TOKEN)
    async with Hub(settings, redis) as hub:
        first = await hub.send("alertmanager", notification(aaaa="firing", bbbb="firing"))
        assert first["state"] == "done"
        (key,) = triggers(upstreams)
        assert key.startswith("alertmanager:group:")
        joined = await hub.send("alertmanager", notification(aaaa="firing", bbbb="firing", cccc="firing"))
        partly = await hub.send("alertmanager", notification(aaaa="resolved", bbbb="firing", cccc="firing"))
        assert triggers(upstreams) == [key] and resolves(upstreams) == []  # one page, not resolved yet
        state = await hub.incidents.get(key)
        assert state["resolved_at"] is None and state["episode"] == 1
        assert state["title"] == "Pod is crash looping." and state["group"]
        done = await hub.send("alertmanager", notification(aaaa="resolved", bbbb="resolved", cccc="resolved"))
        assert resolves(upstreams) == [key]  # resolved once, with the group's dedup key
        state = await hub.incidents.get(key)
        timeline = await hub.incidents.timeline(key)
    assert {e["state"] for e in (first, joined, partly, done)} == {"done"}
    assert state["resolved_at"] is not None
    assert len(upstreams.incidentio.created) == 1
    members = await alert_groups.members(redis, key)
    assert {fp: m["status"] for fp, m in members.items()} == {"aaaa": "resolved", "bbbb": "resolved",
                                                              "cccc": "resolved"}
    assert all(m["first_seen"] <= m["last_seen"] for m in members.values())
    assert members["cccc"]["first_seen"] >= members["aaaa"]["first_seen"]
    kept = [(e["fingerprint"], e["status"]) for e in timeline if e["type"] == "alert"]
    assert kept[:3] == [("aaaa", "firing"), ("bbbb", "firing"), ("aaaa", "firing")]
    assert len(kept) == 2 + 3 + 3 + 3
    assert [e["type"] for e in timeline].count("resolved") == 1


async def test_a_replay_of_a_joining_delivery_never_pages(redis_url: str, redis: Any,
                                                          upstreams: Upstreams) -> None:
    settings = upstreams.settings(redis_url, alertmanager_webhook_token=TOKEN)
    async with Hub(settings, redis) as hub:
        await hub.send("alertmanager", notification(aaaa="firing"))
        joined = await hub.send("alertmanager", notification(aaaa="firing", bbbb="firing"))
        await replay_event(hub.store, joined["id"], force=True)
        again = await hub.final(joined["id"])
    assert again["state"] == "done"
    assert len(triggers(upstreams)) == 1 and len(upstreams.incidentio.created) == 1


async def test_per_alert_grouping_keeps_a_page_per_alert(redis_url: str, redis: Any, upstreams: Upstreams) -> None:
    settings = upstreams.settings(redis_url, alertmanager_webhook_token=TOKEN, hub_config=PER_ALERT_RULES)
    async with Hub(settings, redis) as hub:
        await hub.send("alertmanager", notification(aaaa="firing", bbbb="firing"))
        await hub.send("alertmanager", notification(aaaa="resolved", bbbb="firing"))
    assert sorted(triggers(upstreams)) == ["aaaa", "bbbb"] and resolves(upstreams) == ["aaaa"]
    assert await alert_groups.members(redis, "aaaa") == {}


def test_the_grouping_option_is_checked() -> None:
    assert alertmanager.check_options({"grouping": "per_alert"}) == []
    assert alertmanager.check_options({"grouping": "group"}) == []
    (problem,) = alertmanager.check_options({"grouping": "per-alert"})
    assert "grouping" in problem
