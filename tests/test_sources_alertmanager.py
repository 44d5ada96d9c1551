"""Alertmanager: token auth, webhook v4 fan-out (the code it shares with Grafana), redelivery."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from multidict import CIMultiDict

from connectors.alertmanager import source
from hub.core.events import Kind, Severity
from hub.ingress.app import create_app
from hub.storage.event_store import ARQ_QUEUE
from tests.conftest import fixture_request, make_settings

FIRING = "alertmanager_firing.json"
TOKEN = "am-token"


def request(token: str = TOKEN) -> tuple[bytes, dict[str, str]]:
    body, headers = fixture_request(FIRING)
    headers["Authorization"] = f"Bearer {token}"  # the fixture shows a placeholder
    return body, headers


@pytest.fixture
async def am(redis_url: str) -> AsyncIterator[TestClient]:
    settings = make_settings(redis_url, alertmanager_webhook_token=f"{TOKEN},am-token-next")
    async with TestClient(TestServer(create_app(settings))) as c:
        yield c


async def test_fixture_is_accepted_and_redelivery_is_a_duplicate(am: TestClient, redis: Any) -> None:
    body, headers = request()
    first = await am.post("/webhooks/alertmanager", data=body, headers=headers)
    assert first.status == 202
    event_id = (await first.json())["event_id"]
    again = await am.post("/webhooks/alertmanager", data=body, headers=headers)
    assert await again.json() == {"event_id": event_id, "status": "duplicate"}
    assert await redis.zcard(ARQ_QUEUE) == 1
    rec = await redis.hgetall(f"hub:ev:{event_id}")
    assert json.loads(rec[b"headers"]) == {"User-Agent": "Alertmanager/0.27.0"}
    # the worker's path: the stored bytes and headers parse to the same fan-out
    evs = source.normalise(source.parse(rec[b"body"], CIMultiDict(json.loads(rec[b"headers"])),
                                        rec[b"content_type"].decode()), {}, {})
    assert [e.fingerprint for e in evs] == ["3b8f5c1a9e2d4f60", "c41e0a9b7d35f218"]


def test_fixture_fans_out_two_firing_critical_alerts() -> None:
    body, _ = fixture_request(FIRING)
    evs = source.normalise(source.parse(body, {}, "application/json"), {}, None)
    assert len(evs) == 2
    for ev in evs:
        assert ev.source == "alertmanager" and ev.kind == Kind.ALERT_FIRING
        assert ev.severity == Severity.SEV1
        assert ev.services == ["kube-state-metrics"]  # no `service` label: `job`
        assert ev.title == "KubePodCrashLooping: Pod is crash looping."
        assert ev.attributes["group_key"] == '{}/{severity="critical"}:{alertname="KubePodCrashLooping", ' \
                                             'namespace="payments"}'
        assert ev.links[0].text == "source" and "&g0.tab=1" in ev.links[0].href
        assert ev.links[1].href.endswith("/kubernetes/kubepodcrashlooping")
    assert evs[0].labels["pod"] == "payments-api-7d9f8b6c5d-x2k9p"
    assert evs[1].labels["pod"] == "payments-api-7d9f8b6c5d-zq7rm"
    assert evs[0].occurred_at is not None and evs[0].occurred_at.isoformat() == "2024-06-17T08:12:41.512000+00:00"


def test_one_alert_resolving_changes_the_delivery_and_the_kind_of_that_alert_only() -> None:
    body, _ = fixture_request(FIRING)
    data = json.loads(body)
    data["alerts"][1].update(status="resolved", endsAt="2024-06-17T08:40:11.512Z")
    changed = json.dumps(data).encode()
    p0, p1 = source.parse(body, {}, "application/json"), source.parse(changed, {}, "application/json")
    assert source.delivery_id(p0, {}, body) != source.delivery_id(p1, {}, changed)
    kinds = [(e.fingerprint, e.kind) for e in source.normalise(p1, {}, {})]
    assert kinds == [("3b8f5c1a9e2d4f60", Kind.ALERT_FIRING), ("c41e0a9b7d35f218", Kind.ALERT_RESOLVED)]


async def test_basic_auth_and_the_next_token_are_accepted(am: TestClient) -> None:
    body, headers = request()
    headers["Authorization"] = "Basic " + base64.b64encode(b"alertmanager:am-token-next").decode()
    assert (await am.post("/webhooks/alertmanager", data=body, headers=headers)).status == 202


@pytest.mark.parametrize(("auth", "code"), [(None, "missing_token"), ("Bearer nope", "bad_token"),
                                            ("Basic !!notbase64", "bad_token"), ("Bearer", "bad_token")])
async def test_bad_token_is_401_and_nothing_stored(am: TestClient, redis: Any, auth: str | None, code: str) -> None:
    body, headers = request()
    del headers["Authorization"]
    if auth:
        headers["Authorization"] = auth
    resp = await am.post("/webhooks/alertmanager", data=body, headers=headers)
    assert resp.status == 401
    data = await resp.json()
    assert data["error"] == code and "ALERTMANAGER_WEBHOOK_TOKEN" in data["detail"]
    assert await redis.keys("hub:ev:*") == []


async def test_wrong_content_type_and_bad_json_are_4xx(am: TestClient) -> None:
    body, headers = request()
    resp = await am.post("/webhooks/alertmanager", data=body, headers={**headers, "Content-Type": "text/plain"})
    assert resp.status == 415
    resp = await am.post("/webhooks/alertmanager", data=body[:-20], headers=headers)
    assert resp.status == 400 and (await resp.json())["error"] == "malformed_json"


async def test_unconfigured_is_401_naming_the_variable(client: TestClient) -> None:
    body, headers = request()
    resp = await client.post("/webhooks/alertmanager", data=body, headers=headers)
    assert resp.status == 401 and "ALERTMANAGER_WEBHOOK_TOKEN" in (await resp.json())["detail"]
