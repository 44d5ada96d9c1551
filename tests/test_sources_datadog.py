"""Datadog: token auth, JSON and form bodies, the default template, fingerprints, severity."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp.test_utils import TestClient, TestServer
from multidict import CIMultiDict

from connectors.datadog import source
from hub.core.events import Kind, Severity
from hub.ingress.app import create_app
from hub.storage.event_store import ARQ_QUEUE
from tests.conftest import FIXTURES, fixture_request, make_settings

TOKEN = "dd-token-current"
TRIGGERED = "datadog_alert_triggered.json"
RECOVERED = "datadog_alert_recovered.json"

#: Only the fields of Datadog's default payload template.
DEFAULT_TEMPLATE = {
    "body": "%%%\n@webhook-hub Disk almost full on db-2\n%%%", "last_updated": "1718612045000",
    "event_type": "query_alert_monitor", "title": "[Triggered on {host:db-2}] [P2] Disk almost full",
    "date": "1718612045000", "org": {"id": "42", "name": "Acme"}, "id": "100200300",
}


def request(name: str, token: str = TOKEN) -> tuple[bytes, dict[str, str]]:
    body, headers = fixture_request(name)
    headers.pop("X-Integration-Hub-Token", None)
    headers["Authorization"] = f"Bearer {token}"
    return body, headers


def events(payload: dict[str, Any] | bytes, options: dict[str, Any] | None = None,
           content_type: str = "application/json") -> list:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return source.normalise(source.parse(body, {}, content_type), {}, options)


@pytest.fixture
async def dd(redis_url: str) -> AsyncIterator[TestClient]:
    settings = make_settings(redis_url, datadog_webhook_token=f"{TOKEN},dd-token-old")
    async with TestClient(TestServer(create_app(settings))) as c:
        yield c


async def stored_events(redis: Any) -> list[bytes]:
    return await redis.keys("hub:ev:*")


async def test_fixture_is_accepted_then_recognised_as_redelivery(dd: TestClient, redis: Any) -> None:
    body, headers = request(TRIGGERED)
    first = await dd.post("/webhooks/datadog", data=body, headers=headers)
    assert first.status == 202
    event_id = (await first.json())["event_id"]
    rec = await redis.hgetall(f"hub:ev:{event_id}")
    assert rec[b"delivery_id"] == b"7845839165284362845:Triggered"
    assert rec[b"body"] == body
    assert "Authorization" not in json.loads(rec[b"headers"])
    again = await dd.post("/webhooks/datadog", data=body, headers=headers)
    assert await again.json() == {"event_id": event_id, "status": "duplicate"}
    assert await redis.zcard(ARQ_QUEUE) == 1


async def test_recovery_is_a_new_delivery(dd: TestClient) -> None:
    ids = set()
    for name in (TRIGGERED, RECOVERED):
        body, headers = request(name)
        resp = await dd.post("/webhooks/datadog", data=body, headers=headers)
        assert (await resp.json())["status"] == "accepted"
        ids.add((await resp.json())["event_id"])
    assert len(ids) == 2


def test_triggered_fixture_normalises_to_a_firing_p1_alert() -> None:
    body, _ = fixture_request(TRIGGERED)
    (ev,) = events(body)
    assert ev.kind == Kind.ALERT_FIRING
    assert ev.fingerprint == "datadog:12345678:host:web-01"
    assert ev.severity == Severity.SEV1
    assert ev.services == ["checkout"]
    assert ev.environment == "prod"
    assert ev.title == "High CPU on web-01"
    assert ev.summary.startswith("CPU usage is above 90% on host:web-01")
    assert "@webhook" not in ev.summary and "%%%" not in ev.summary and "Edit Monitor" not in ev.summary
    assert ev.links[0].href == "https://app.datadoghq.com/event/event?id=7845839165284362845"
    assert [link.text for link in ev.links[1:]] == ["Monitor Status", "Edit Monitor", "Related Logs"]
    assert ev.occurred_at is not None and ev.occurred_at.isoformat() == "2024-06-17T08:14:05+00:00"
    assert ev.labels == {"env": "prod", "host": "web-01", "service": "checkout", "team": "sre"}
    assert ev.status == "Triggered"
    assert ev.attributes["monitor_id"] == "12345678" and ev.attributes["priority"] == "P1"
    assert ev.attributes["alert_cycle_key"] == "7318482193746532198"


def test_recovery_resolves_the_same_fingerprint() -> None:
    (fired,) = events(fixture_request(TRIGGERED)[0])
    (recovered,) = events(fixture_request(RECOVERED)[0])
    assert recovered.kind == Kind.ALERT_RESOLVED
    assert recovered.fingerprint == fired.fingerprint
    assert recovered.severity == Severity.SEV1


@pytest.mark.parametrize(("transition", "kind"), [
    ("Triggered", Kind.ALERT_FIRING), ("Re-Triggered", Kind.ALERT_FIRING), ("Warn", Kind.ALERT_FIRING),
    ("Re-Warn", Kind.ALERT_FIRING), ("No Data", Kind.ALERT_FIRING), ("Re-No Data", Kind.ALERT_FIRING),
    ("Renotify", Kind.ALERT_FIRING), ("Recovered", Kind.ALERT_RESOLVED), ("Null", Kind.OTHER),
])
def test_every_transition_maps_to_its_kind(transition: str, kind: Kind) -> None:
    payload = {**json.loads(fixture_request(TRIGGERED)[0]), "alert_transition": transition}
    (ev,) = events(payload)
    assert ev.kind == kind and ev.status == transition


@pytest.mark.parametrize(("priority", "severity"), [
    ("P1", Severity.SEV1), ("P2", Severity.SEV2), ("P3", Severity.SEV3), ("P4", Severity.SEV4),
    ("P5", Severity.SEV4), ("", Severity.SEV4), ("p2", Severity.SEV2),
])
def test_priority_maps_to_severity(priority: str, severity: Severity) -> None:
    payload = {**json.loads(fixture_request(TRIGGERED)[0]), "alert_priority": priority,
               "title": "[Triggered] High CPU on web-01"}
    assert events(payload)[0].severity == severity


def test_catalog_overrides_severity_services_and_environment() -> None:
    payload = {**json.loads(fixture_request(TRIGGERED)[0]), "alert_priority": "P3",
               "tags": "env:prod,environment:staging,component:api,component:db,service:checkout"}
    (ev,) = events(payload, {"severity_map": {"P3": "SEV2"}, "service_tag": "component",
                             "environment_tag": "environment"})
    assert ev.severity == Severity.SEV2
    assert ev.services == ["api", "db"]
    assert ev.environment == "staging"
    payload.update(alert_priority="", title="[Triggered] High CPU on web-01")  # no priority anywhere
    assert events(payload, {"default_severity": "SEV3"})[0].severity == Severity.SEV3


def test_default_template_only_still_parses_and_pairs_trigger_with_recovery() -> None:
    (fired,) = events(DEFAULT_TEMPLATE)
    assert fired.kind == Kind.ALERT_FIRING
    assert fired.severity == Severity.SEV2  # from "[P2]" in the title
    assert fired.title == "Disk almost full"
    assert fired.summary == "Disk almost full on db-2"
    assert fired.labels == {"host": "db-2"}  # the scope in the title
    recovered_payload = {**DEFAULT_TEMPLATE, "id": "100200399",
                         "title": "[Recovered on {host:db-2}] [P2] Disk almost full"}
    (recovered,) = events(recovered_payload)
    assert recovered.kind == Kind.ALERT_RESOLVED
    assert recovered.fingerprint == fired.fingerprint and fired.fingerprint.startswith("datadog:title:")
    other_host = {**DEFAULT_TEMPLATE, "title": "[Triggered on {host:db-3}] [P2] Disk almost full"}
    assert events(other_host)[0].fingerprint != fired.fingerprint
    p = source.parse(json.dumps(DEFAULT_TEMPLATE).encode(), {}, "application/json")
    assert source.delivery_id(p, {}, b"") == "100200300:Triggered"


def test_fingerprint_falls_back_to_cycle_key_and_sorts_the_scope() -> None:
    base = json.loads(fixture_request(TRIGGERED)[0])
    a = events({**base, "alert_scope": "host:web-01,env:prod"})[0].fingerprint
    b = events({**base, "alert_scope": " env:prod , host:web-01"})[0].fingerprint
    assert a == b == "datadog:12345678:env:prod,host:web-01"
    no_monitor = {k: v for k, v in base.items() if k != "alert_id"}
    assert events(no_monitor)[0].fingerprint == "datadog:cycle:7318482193746532198"


def test_numbers_nulls_and_extra_keys_are_tolerated() -> None:
    payload = {**json.loads(fixture_request(TRIGGERED)[0]), "id": 7845839165284362845, "alert_id": 12345678,
               "date": 1718612045000, "hostname": None, "tags": ["service:checkout", "env:prod"],
               "custom": {"nested": [1, 2]}}
    (ev,) = events(payload)
    assert ev.fingerprint == "datadog:12345678:host:web-01"
    assert ev.attributes["datadog_id"] == "7845839165284362845"
    assert ev.services == ["checkout"] and ev.occurred_at is not None


def test_fields_the_hub_only_shows_never_cause_a_400() -> None:
    payload = {**json.loads(fixture_request(TRIGGERED)[0]), "org": [1], "alert_metric": {"a": [1]},
               "tags": {"service": "checkout"}, "body": ["x"], "alert_type": None}
    (ev,) = events(payload)
    assert ev.kind == Kind.ALERT_FIRING and ev.fingerprint == "datadog:12345678:host:web-01"
    assert ev.attributes["org_id"] is None and ev.attributes["metric"] == '{"a": [1]}'


def test_alert_type_decides_when_there_is_no_transition_anywhere() -> None:
    payload = {"id": "1", "title": "Disk almost full", "alert_type": "success", "alert_id": "5"}
    (ev,) = events(payload)
    assert ev.kind == Kind.ALERT_RESOLVED and ev.fingerprint == "datadog:5"


async def test_form_encoded_body_is_accepted_and_normalised_from_the_record(dd: TestClient, redis: Any) -> None:
    fields = {k: v for k, v in json.loads(fixture_request(TRIGGERED)[0]).items() if k != "org"}
    fields.update({"org[id]": "123456", "org[name]": "Acme Corp"})
    body = urlencode(fields).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Authorization": f"Bearer {TOKEN}"}
    resp = await dd.post("/webhooks/datadog", data=body, headers=headers)
    assert resp.status == 202, await resp.text()
    rec = await redis.hgetall(f"hub:ev:{(await resp.json())['event_id']}")
    assert rec[b"content_type"] == b"application/x-www-form-urlencoded"
    # the worker's path: parse the stored bytes with the stored content type and headers
    payload = source.parse(rec[b"body"], CIMultiDict(json.loads(rec[b"headers"])), rec[b"content_type"].decode())
    (ev,) = source.normalise(payload, {}, {})
    assert ev.kind == Kind.ALERT_FIRING and ev.fingerprint == "datadog:12345678:host:web-01"
    assert ev.attributes["org_name"] == "Acme Corp"


async def test_basic_auth_password_and_the_old_token_are_accepted(dd: TestClient) -> None:
    body, headers = request(TRIGGERED)
    headers["Authorization"] = "Basic " + base64.b64encode(b"datadog:" + TOKEN.encode()).decode()
    assert (await dd.post("/webhooks/datadog", data=body, headers=headers)).status == 202
    body, headers = request(RECOVERED, token="dd-token-old")
    assert (await dd.post("/webhooks/datadog", data=body, headers=headers)).status == 202


@pytest.mark.parametrize(("auth", "code"), [(None, "missing_token"), ("Bearer retired", "bad_token"),
                                            ("Token dd-token-current", "bad_token")])
async def test_bad_or_missing_token_is_401_and_nothing_is_stored(dd: TestClient, redis: Any, auth: str | None,
                                                                 code: str) -> None:
    body, headers = request(TRIGGERED)
    del headers["Authorization"]
    if auth:
        headers["Authorization"] = auth
    resp = await dd.post("/webhooks/datadog", data=body, headers=headers)
    assert resp.status == 401
    data = await resp.json()
    assert data["error"] == code and "DATADOG_WEBHOOK_TOKEN" in data["detail"]
    assert await stored_events(redis) == []


@pytest.mark.parametrize(("body", "content_type", "status", "code", "mentions"), [
    (b'{"title": "x"}', "application/json", 400, "invalid_payload", "id"),
    (b'{"id": "  "}', "application/json", 400, "invalid_payload", "$ID"),
    (b'{"id": {"nested": 1}}', "application/json", 400, "invalid_payload", "id"),
    (b"[1, 2]", "application/json", 400, "invalid_payload", ""),
    (b'{"id": ', "application/json", 400, "malformed_json", ""),
    (b"id=\xff\xfe", "application/x-www-form-urlencoded", 400, "malformed_form", ""),
    (b"title=only", "application/x-www-form-urlencoded", 400, "invalid_payload", "id"),
    (b'{"id": "1"}', "text/plain", 415, "unsupported_media_type", ""),
])
async def test_bad_bodies_are_4xx_json_and_not_stored(dd: TestClient, redis: Any, body: bytes, content_type: str,
                                                      status: int, code: str, mentions: str) -> None:
    resp = await dd.post("/webhooks/datadog", data=body,
                         headers={"Content-Type": content_type, "Authorization": f"Bearer {TOKEN}"})
    assert resp.status == status
    data = await resp.json()
    assert data["error"] == code and mentions in data["detail"]
    assert await stored_events(redis) == []


def test_check_options_names_bad_values() -> None:
    problems = source.check_options({"severity_map": {"P1": "critical"}, "service_tag": "", "colour": "red"})
    assert any("severity_map['P1']" in p for p in problems)
    assert any("service_tag" in p for p in problems)
    assert any("unknown option 'colour'" in p for p in problems)
    assert source.check_options({"severity_map": {"P1": "SEV1"}, "environment_tag": ["env"]}) == []


def test_sign_request_produces_headers_the_source_accepts(redis_url: str) -> None:
    settings = make_settings(redis_url, datadog_webhook_token=TOKEN)
    body = (FIXTURES / TRIGGERED).read_bytes()
    assert source.verify(body, source.sign_request(body, settings), settings) == "token"
