"""Lone UTF-16 surrogates in a webhook (`"\\ud83d"`: an emoji cut in half by a JavaScript
sender) are valid JSON. They must not turn into a 500 at the ingress (they did, for sources
whose delivery id comes from the body) nor into a poison event that no worker can write.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from connectors.base import loads_json
from tests.test_workflows_e2e import DATADOG_TOKEN, Hub, load

HALF = "\ud83d"  # the first half of 😀, alone


def test_loads_json_replaces_lone_surrogates_and_keeps_pairs() -> None:
    body = json.dumps({"a" + HALF: ["x" + HALF, {"k": "\udc00y"}], "pair": "😀", "n": 1}).encode()
    assert b"\\ud83d" in body  # json.dumps escapes what it cannot encode
    assert loads_json(body) == {"a\ufffd": ["x\ufffd", {"k": "\ufffdy"}], "pair": "😀", "n": 1}
    assert loads_json(b'{"pair": "\\ud83d\\ude00"}') == {"pair": "😀"}
    assert loads_json(b'{"plain": "text"}') == {"plain": "text"}


@pytest.mark.parametrize("source", ["datadog", "alertmanager", "pagerduty"])
async def test_an_authentic_webhook_with_lone_surrogates_is_accepted_and_finishes(
        redis_url: str, redis: Any, upstreams: Any, source: str) -> None:
    if source == "datadog":
        payload = load("datadog_alert_triggered.json")
        payload.update(id=payload["id"] + HALF, title=payload["title"] + " " + HALF)
        headers = {"Authorization": f"Bearer {DATADOG_TOKEN}", "Content-Type": "application/json"}
    elif source == "alertmanager":
        payload = load("alertmanager_firing.json")
        for alert in payload["alerts"]:
            alert["fingerprint"] += HALF
            alert["labels"]["alertname"] += HALF
        headers = None
    else:
        from tests.test_sources_pagerduty import webhook

        payload = webhook(event_id="01EV0ACK" + HALF)
        headers = None
    settings = upstreams.settings(redis_url, alertmanager_webhook_token="am-token")
    async with Hub(settings, redis) as hub:
        rec = await hub.send(source, json.dumps(payload).encode(), headers=headers)
    assert rec["state"] in ("done", "partially_failed"), rec
    if source == "alertmanager":
        assert rec["events"] and all(e["fingerprint"].endswith("\ufffd") for e in rec["events"])
    else:  # the delivery id comes from the body: it was the 500
        assert "\ufffd" in rec["delivery_id"]
