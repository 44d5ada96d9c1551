"""Deeply nested JSON is refused with a 400, not a 500 (RecursionError) or a poison event."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from connectors.base import MAX_JSON_DEPTH, loads_json
from hub.core.registry import sources
from hub.ingress.app import create_app
from tests.conftest import make_settings


def nested(depth: int) -> bytes:
    return b'{"id": "1", "x": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


def test_the_depth_limit_is_exact() -> None:
    assert loads_json(nested(MAX_JSON_DEPTH))["id"] == "1"
    with pytest.raises(ValueError, match="nested deeper"):
        loads_json(nested(MAX_JSON_DEPTH + 1))


def test_wide_shallow_bodies_are_fine() -> None:
    body = json.dumps({"alerts": [{"labels": {"a": str(i)}} for i in range(5000)]}).encode()
    assert len(loads_json(body)["alerts"]) == 5000


@pytest.mark.parametrize("source", ["datadog", "alertmanager", "grafana", "pagerduty", "incidentio"])
@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 50, 5_000, 200_000])
async def test_deep_authentic_bodies_are_400_and_not_stored(redis_url: str, redis: Any, source: str,
                                                            depth: int) -> None:
    settings = make_settings(redis_url, datadog_webhook_token="dd", alertmanager_webhook_token="am",
                             grafana_webhook_token="gt", pagerduty_webhook_secret="pd",
                             incidentio_webhook_secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    body = nested(depth)
    async with TestClient(TestServer(create_app(settings))) as client:
        headers = sources()[source].sign_request(body, settings)
        resp = await client.post(f"/webhooks/{source}", data=body, headers=headers)
        assert resp.status == 400, await resp.text()
        assert (await resp.json())["error"] == "malformed_json"
    assert await redis.keys("hub:ev:*") == []
