"""Fuzz the real ingress: random bodies, content types and headers at every endpoint.

Properties, for every request:
- never a 5xx, and every answer is the contract's JSON (an event id, or an error and a detail);
- a request that is not authentic is refused (401, or 404 for an unknown source) and leaves
  nothing behind;
- an authentic one is accepted (202) or refused as bad input (400/415) — and an accepted one
  normalises in the worker's way (stored bytes, kept headers, stored content type) without
  raising, so the ingress never acks something the worker would then fail to parse.

Kept to a few hundred examples so it runs in seconds.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import event as tally
from hypothesis import strategies as st
from multidict import CIMultiDict

from hub.core.events import NormalisedEvent
from hub.core.registry import sources
from hub.core.settings import Settings
from hub.ingress.app import create_app
from hub.ingress.verify import sign_hex_hmac
from hub.storage.event_store import IDX_ALL
from tests.conftest import FIXTURES, GITHUB_SECRET, GRAFANA_SECRET, INCIDENTIO_SECRET, make_settings

SOURCES = ("datadog", "grafana", "alertmanager", "incidentio", "github", "pagerduty")
FIXTURE_FILES = {
    "datadog": ["datadog_alert_triggered.json", "datadog_alert_recovered.json"],
    "grafana": ["grafana_firing.json", "grafana_resolved.json"],
    "alertmanager": ["alertmanager_firing.json"],
    "incidentio": ["incidentio_incident_created.json", "incidentio_incident_status_updated.json",
                   "incidentio_followup_created.json", "incidentio_incident_updated.json"],
    "github": ["github_deployment_status_failure.json", "github_deployment.json"],
    "pagerduty": [],
}
PAGERDUTY_SAMPLE = {"event": {"id": "01EV", "event_type": "incident.acknowledged", "resource_type": "incident",
                              "occurred_at": "2024-06-17T08:16:40Z", "agent": {"summary": "Maria", "id": "PU1"},
                              "data": {"id": "Q1", "number": 1, "status": "acknowledged", "title": "CPU",
                                       "incident_key": "datadog:1", "service": {"summary": "checkout"},
                                       "priority": {"summary": "P1"}, "html_url": "https://x"}}}
AUTH_HEADERS = ("Authorization", "X-Hub-Signature-256", "X-GitHub-Event", "X-GitHub-Delivery",
                "X-Grafana-Alerting-Signature", "X-Grafana-Alerting-Timestamp", "X-PagerDuty-Signature",
                "webhook-id", "webhook-timestamp", "webhook-signature", "svix-id", "svix-timestamp",
                "svix-signature")
CONTENT_TYPES = ("application/json", "application/json; charset=utf-8", "application/x-www-form-urlencoded",
                 "application/cloudevents+json", "text/plain", "application/xml", "multipart/form-data; boundary=x")


def sample(source: str) -> Any:
    if source == "pagerduty":
        return json.loads(json.dumps(PAGERDUTY_SAMPLE))
    return json.loads((FIXTURES / FIXTURE_FILES[source][0]).read_bytes())


def fixture_samples() -> list[tuple[str, Any]]:
    out = [("pagerduty", PAGERDUTY_SAMPLE)]
    for source, names in FIXTURE_FILES.items():
        out += [(source, json.loads((FIXTURES / n).read_bytes())) for n in names]
    return out


header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)
# text may hold lone UTF-16 surrogates: JSON allows them (json.dumps writes "\ud83d") and
# JavaScript senders produce them by cutting an emoji in half
any_text = st.lists(st.one_of(st.text(max_size=8), st.text(st.characters(categories=["Cs"]), min_size=1, max_size=2)),
                    max_size=4).map("".join)
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30), any_text,
                         st.sampled_from(["", "0", "1718612045000", "0001-01-01T00:00:00Z", "firing", "resolved",
                                          "P1", "critical", "Recovered", "closed", "SEV1", "whsec_x"]))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.text(max_size=12), any_text), inner, max_size=4)),
    max_leaves=12)


Path = tuple[Any, ...]


def mutate(data: st.DataObject, value: Any, path: Path = ()) -> tuple[Any, Path]:
    """One random change somewhere in a JSON document (drop, null, retype or replace a value),
    and the path it was made at."""
    descend = isinstance(value, dict | list) and len(value) > 0 and len(path) < 6
    if descend and (len(path) < 2 or data.draw(st.integers(0, 3)) > 0):
        keys = sorted(value) if isinstance(value, dict) else list(range(len(value)))
        nested = [k for k in keys if isinstance(value[k], dict | list) and value[k]]
        if not path and nested and data.draw(st.integers(0, 3)) > 0:
            keys = nested  # at the top, mostly go where the payload is
        key = data.draw(st.sampled_from(keys))
        if isinstance(value, dict) and data.draw(st.integers(0, 5)) == 0:
            return {k: v for k, v in value.items() if k != key}, (*path, key)
        copy_ = dict(value) if isinstance(value, dict) else list(value)
        copy_[key], where = mutate(data, value[key], (*path, key))
        return copy_, where
    choice = data.draw(st.integers(0, 4))
    if choice == 0:
        return None, path
    if choice == 1 and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value), path
    if choice == 2 and isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value), path
    return data.draw(json_values), path


#: Where each source keeps what the hub cannot work without (`*` = any key or index). A
#: document changed only elsewhere must still be accepted: a cosmetic field never costs an alert.
ESSENTIAL: dict[str, list[Path]] = {
    "datadog": [("id",)],
    "grafana": [("alerts", "*", "status")],
    "alertmanager": [("alerts", "*", "status")],
    "incidentio": [("event_type",), ("*", "id"), ("*", "incident_id"), ("*", "incident", "id")],
    "pagerduty": [("event", "id"), ("event", "event_type"), ("event", "data", "id")],
}


def touches_essential(source: str, path: Path) -> bool:
    """True when a change at `path` may alter an essential field (it is one, or contains one)."""
    if source not in ESSENTIAL:
        return True  # GitHub's model is the reference, not under this rule
    for pattern in ESSENTIAL[source]:
        if len(path) <= len(pattern) and all(p in ("*", k) for p, k in zip(pattern, path, strict=False)):
            return True
    return False


def hub_settings(redis_url: str) -> Settings:
    return make_settings(redis_url, datadog_webhook_token="dd-token", alertmanager_webhook_token="am-token",
                         grafana_webhook_secret=GRAFANA_SECRET, grafana_webhook_token="gf-token",
                         grafana_timestamp_header="X-Grafana-Alerting-Timestamp",
                         incidentio_webhook_secret=INCIDENTIO_SECRET, pagerduty_webhook_secret="pd-secret",
                         github_webhook_secret=GITHUB_SECRET)


def authentic_headers(source: str, body: bytes, settings: Settings, github_event: str) -> dict[str, str]:
    if source == "github":
        return {"X-Hub-Signature-256": "sha256=" + sign_hex_hmac(GITHUB_SECRET, body),
                "X-GitHub-Event": github_event, "X-GitHub-Delivery": str(uuid.uuid4())}
    return sources()[source].sign_request(body, settings)


@pytest.fixture
async def hub(redis_url: str) -> AsyncIterator[tuple[TestClient, Settings]]:
    settings_ = hub_settings(redis_url)
    async with TestClient(TestServer(create_app(settings_))) as c:
        yield c, settings_


async def check_response(resp: Any) -> dict[str, Any]:
    assert resp.status < 500, await resp.text()
    data = await resp.json()
    if resp.status == 202:
        assert set(data) == {"event_id", "status"} and data["status"] in ("accepted", "duplicate")
    else:
        assert set(data) == {"error", "detail"} and data["error"] and data["detail"]
    return data


async def normalises_like_the_worker(redis: Any, event_id: str) -> list[NormalisedEvent]:
    rec = await redis.hgetall(f"hub:ev:{event_id}")
    src = sources()[rec[b"source"].decode()]
    headers = CIMultiDict(json.loads(rec[b"headers"]))
    payload = src.parse(rec[b"body"], headers, rec[b"content_type"].decode())
    events = src.normalise(payload, headers, {})
    for ev in events:
        assert isinstance(ev, NormalisedEvent) and ev.fingerprint
        json.dumps(ev.model_dump(mode="json"))  # storable as the worker stores it
    return events


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(source=st.sampled_from((*SOURCES, "nagios")), data=st.data(),
       auth=st.sampled_from(["none", "garbage", "authentic"]),
       content_type=st.one_of(st.just("application/json"), st.sampled_from(CONTENT_TYPES), header_text))
async def test_random_requests(hub: tuple[TestClient, Settings], redis: Any, source: str, data: st.DataObject,
                               auth: str, content_type: str) -> None:
    client, settings_ = hub
    body = data.draw(st.one_of(
        st.binary(max_size=300),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.just(source).map(lambda s: json.dumps(mutate(data, sample(s if s in SOURCES else "github"))[0]).encode()),
    ), label="body")
    headers = {"Content-Type": content_type}
    if auth == "garbage":
        names = data.draw(st.lists(st.sampled_from(AUTH_HEADERS), min_size=1, max_size=4, unique=True))
        headers.update({n: data.draw(header_text, label=n) for n in names})
    elif auth == "authentic" and source in SOURCES:
        event = data.draw(st.sampled_from(["deployment", "deployment_status", "workflow_run", "ping", "push"]))
        headers.update(authentic_headers(source, body, settings_, event))
        headers["Content-Type"] = content_type
    before = await redis.zcard(IDX_ALL)
    resp = await client.post(f"/webhooks/{source}", data=body, headers=headers)
    out = await check_response(resp)
    tally(f"{auth} → {resp.status}")
    after = await redis.zcard(IDX_ALL)
    if source not in SOURCES:
        assert resp.status == 404
    elif auth != "authentic":
        assert resp.status == 401, out
    else:
        assert resp.status in (202, 400, 415), out
        if resp.status == 202 and out["status"] == "accepted":
            assert after == before + 1
            await normalises_like_the_worker(redis, out["event_id"])
            return
    assert after == before, "nothing may be stored from a refused request"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pick=st.sampled_from(fixture_samples()), data=st.data())
async def test_authentic_mutated_payloads_are_accepted_unless_an_essential_field_broke(
        hub: tuple[TestClient, Settings], redis: Any, pick: tuple[str, Any], data: st.DataObject) -> None:
    client, settings_ = hub
    source, document = pick
    paths = []
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        document, path = mutate(data, document)
        paths.append(path)
    body = json.dumps(document).encode()
    event = "deployment_status" if isinstance(document, dict) and "deployment_status" in document else "deployment"
    headers = {**authentic_headers(source, body, settings_, event), "Content-Type": "application/json"}
    resp = await client.post(f"/webhooks/{source}", data=body, headers=headers)
    out = await check_response(resp)
    essential = any(touches_essential(source, p) for p in paths)
    tally(f"{source} → {resp.status}{' (essential field changed)' if essential else ''}")
    assert resp.status in (202, 400), out
    if not essential:
        assert resp.status == 202, (paths, out)
    if resp.status == 202:
        await normalises_like_the_worker(redis, out["event_id"])
