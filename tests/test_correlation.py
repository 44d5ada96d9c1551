"""Correlation across sources (issue 12, item 2): `grouping: {by: [service], window: 5m}` in
hub.yaml. An Alertmanager group and a Datadog monitor on the same service are one incident:
one page, one incident.io incident, resolved only when both have resolved. Real Redis, the
real worker, fake upstreams over loopback; the join's script against real Redis.
"""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import pytest

from hub.operators.replay import replay_event
from hub.rules.grouping import Grouping
from hub.storage import keys
from hub.worker.grouping import Correlator
from tests.grouping_rules import DEFAULTS
from tests.test_alert_groups import TOKEN, notification, resolves, triggers
from tests.test_workflows_e2e import DATADOG_TOKEN, Hub, Upstreams, load

AUTH = {"Authorization": f"Bearer {DATADOG_TOKEN}", "Content-Type": "application/json"}


def rules(tmp_path: Path, window: str = "5m") -> Path:
    path = tmp_path / "hub.yaml"
    path.write_text(DEFAULTS.read_text() + f"\ngrouping:\n  by: [service]\n  window: {window}\n")
    return path


def checkout_group(**alerts: str) -> dict[str, Any]:
    data = notification(**alerts)
    for alert in data["alerts"]:
        alert["labels"]["service"] = "checkout"
    return data


def monitor(transition: str = "Triggered", delivery: str = "dd-1") -> dict[str, Any]:
    body = copy.deepcopy(load("datadog_alert_triggered.json" if transition == "Triggered"
                              else "datadog_alert_recovered.json"))
    body["id"] = delivery
    return body


async def test_a_datadog_alert_joins_the_open_group_incident_and_holds_its_resolve(
        redis_url: str, redis: Any, upstreams: Upstreams, tmp_path: Path) -> None:
    settings = upstreams.settings(redis_url, alertmanager_webhook_token=TOKEN, hub_config=rules(tmp_path))
    async with Hub(settings, redis) as hub:
        await hub.send("alertmanager", checkout_group(aaaa="firing", bbbb="firing"))
        (key,) = triggers(upstreams)
        joined = await hub.send("datadog", monitor(), headers=AUTH)
        fp = joined["events"][0]["fingerprint"]
        assert triggers(upstreams) == [key] and len(upstreams.incidentio.created) == 1  # no new page or incident
        assert await hub.incidents.get(fp) is None  # no incident of its own
        state = await hub.incidents.get(key)
        assert state["members"] == {key: "firing", fp: "firing"} and state["alert_count"] == 2
        assert state["sources"] == ["alertmanager", "datadog"]
        await hub.send("alertmanager", checkout_group(aaaa="resolved", bbbb="resolved"))
        assert resolves(upstreams) == [] and (await hub.incidents.get(key))["resolved_at"] is None
        await replay_event(hub.store, joined["id"], force=True)  # a replay of the joined alert
        await hub.final(joined["id"])
        assert triggers(upstreams) == [key]
        await hub.send("datadog", monitor("Recovered", "dd-2"), headers=AUTH)
        assert resolves(upstreams) == [key]  # the last member resolved: the page resolves, once
        timeline = await hub.incidents.timeline(key)
    assert [e["alert"] for e in timeline if e["type"] == "joined"] == [fp]


async def test_outside_the_window_a_resolved_incident_is_not_joined(
        redis_url: str, redis: Any, upstreams: Upstreams, tmp_path: Path) -> None:
    settings = upstreams.settings(redis_url, alertmanager_webhook_token=TOKEN,
                                  hub_config=rules(tmp_path, window="0s"))
    async with Hub(settings, redis) as hub:
        await hub.send("alertmanager", checkout_group(aaaa="firing"))
        await hub.send("alertmanager", checkout_group(aaaa="resolved"))
        joined = await hub.send("datadog", monitor(), headers=AUTH)
    fp = joined["events"][0]["fingerprint"]
    assert len(triggers(upstreams)) == 2 and triggers(upstreams)[1] == fp  # its own incident, its own page


async def test_two_workers_racing_open_one_incident(redis: Any) -> None:
    correlator = Correlator(redis, 3600)
    outcomes = await asyncio.gather(*(correlator.correlate(f"alert-{i}", "service=checkout", 300)
                                      for i in range(20)))
    assert sorted(outcomes).count("opened") == 1 and outcomes.count("joined") == 19


async def test_an_incident_declared_in_the_incident_tool_is_never_joined(redis: Any) -> None:
    correlator = Correlator(redis, 3600)
    assert await correlator.correlate("incidentio:01H", "service=payments", 300) == "opened"
    await redis.hset(keys.incident("incidentio:01H"), mapping={"kind": json.dumps("incident"),
                                                               "resolved_at": "null"})
    assert await correlator.correlate("alert-x", "service=payments", 300) == "opened"


def test_by_names_fields_or_labels() -> None:
    assert Grouping(by=["service", "labels.cluster"], window="5m").window == 300
    with pytest.raises(ValueError):
        Grouping(by=["team"])


async def test_a_restarted_hub_still_joins_and_resolves_the_incident(
        redis_url: str, redis: Any, upstreams: Upstreams, tmp_path: Path) -> None:
    """Everything the join needs is in Redis: a new worker (a restart mid-storm) carries on."""
    settings = upstreams.settings(redis_url, alertmanager_webhook_token=TOKEN, hub_config=rules(tmp_path))
    async with Hub(settings, redis) as hub:
        await hub.send("alertmanager", checkout_group(aaaa="firing"))
        joined = await hub.send("datadog", monitor(), headers=AUTH)
    (key,) = triggers(upstreams)
    async with Hub(settings, redis) as hub:  # the worker restarted
        await hub.send("datadog", monitor("Triggered", "dd-again"), headers=AUTH)  # a repeat: still joined
        await hub.send("datadog", monitor("Recovered", "dd-2"), headers=AUTH)
        assert resolves(upstreams) == []
        await hub.send("alertmanager", checkout_group(aaaa="resolved"))
        state = await hub.incidents.get(key)
    assert triggers(upstreams) == [key] and resolves(upstreams) == [key]
    assert state["members"] == {key: "resolved", joined["events"][0]["fingerprint"]: "resolved"}
