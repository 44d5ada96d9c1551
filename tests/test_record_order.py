"""When each outside call goes out, every earlier call of the event is already on record.

The worker lets some records ride along with its next write (decisions made without a call,
successes the outside system deduplicates); this checks, from inside the fake upstreams, that
none of them is still unwritten when the next call leaves: a worker killed at that moment
repeats no call that a repeat would duplicate.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.test_workflows_e2e import Hub

RULES = Path(__file__).parent / "data" / "rules"


def alert(fingerprint: str) -> dict[str, Any]:
    labels = {"alertname": "DiskFull", "severity": "critical", "service": "api"}
    return {"version": "4", "status": "firing", "receiver": "hub", "groupKey": "{}:{alertname=\"DiskFull\"}",
            "groupLabels": {"alertname": "DiskFull"}, "commonLabels": labels, "commonAnnotations": {},
            "externalURL": "http://am:9093", "truncatedAlerts": 0,
            "alerts": [{"status": "firing", "labels": labels, "annotations": {"summary": "disk full"},
                        "startsAt": "2024-06-17T08:12:41.512Z", "endsAt": "0001-01-01T00:00:00Z",
                        "generatorURL": "http://prom", "fingerprint": fingerprint}]}


async def test_each_call_goes_out_after_the_earlier_ones_are_recorded(redis_url, redis, upstreams) -> None:
    seen: list[tuple[str, dict[str, str]]] = []

    async def on_request(system: str) -> None:
        states: dict[str, str] = {}
        async for key in redis.scan_iter("hub:ev:*:actions"):
            for raw in (await redis.hgetall(key)).values():
                rec = json.loads(raw)
                states[rec["id"].rsplit(":", 1)[-1]] = rec["state"]
        seen.append((system, states))

    for name in ("slack", "pagerduty", "opsgenie"):
        getattr(upstreams, name).on_request = (lambda n: lambda: on_request(n))(name)
    settings = upstreams.settings(redis_url, hub_config=RULES / "sequence.yaml", alertmanager_webhook_token="am-token")
    async with Hub(settings, redis) as hub:
        sent = await hub.send("alertmanager", alert("fp-order-1"))
        done = await hub.done_actions(sent["id"])
    assert done == [("slack.notify", "succeeded"), ("pagerduty.trigger", "succeeded"),
                    ("opsgenie.create", "succeeded"), ("slack.notify", "succeeded")]
    order = ["first-message", "page", "opsgenie", "last-message"]
    assert [system for system, _ in seen] == ["slack", "pagerduty", "opsgenie", "slack"]
    for i, (_, states) in enumerate(seen):
        assert {step: states.get(step) for step in order[:i]} == dict.fromkeys(order[:i], "succeeded"), (i, states)
