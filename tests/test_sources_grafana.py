"""Grafana: HMAC (with and without the timestamp header), token, both together, fan-out, delivery ids."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from connectors.grafana import SIGNATURE_HEADER, source
from hub.core.events import Kind, Severity
from hub.core.settings import Settings
from hub.ingress.app import create_app
from hub.ingress.verify import sign_hex_hmac
from hub.storage.event_store import ARQ_QUEUE
from tests.conftest import FIXTURES, GRAFANA_SECRET, fixture_request, make_settings

FIRING = "grafana_firing.json"
RESOLVED = "grafana_resolved.json"
TS_HEADER = "X-Grafana-Alerting-Timestamp"
TOKEN = "grafana-token"


def variant_b(name: str) -> tuple[bytes, dict[str, str]]:
    """The fixture signed over `ts:body` (its recorded timestamp header)."""
    body, headers = fixture_request(name)
    extra = json.loads((FIXTURES / "headers.json").read_text())[name]["_variant_B"]
    return body, {**headers, **extra}


def group(*alerts: dict[str, Any], **top: Any) -> dict[str, Any]:
    base = json.loads(fixture_request(FIRING)[0])
    return {**base, "alerts": list(alerts), **top}


def alert(fp: str, status: str = "firing", **labels: str) -> dict[str, Any]:
    return {"status": status, "labels": {"alertname": "HighLatency", **labels}, "annotations": {},
            "startsAt": "2024-06-17T08:00:00Z",
            "endsAt": "2024-06-17T08:30:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
            "generatorURL": "", "fingerprint": fp}


def parse(payload: dict[str, Any] | bytes, options: dict[str, Any] | None = None) -> list:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return source.normalise(source.parse(body, {}, "application/json"), {}, options)


def delivery(payload: dict[str, Any]) -> str:
    body = json.dumps(payload).encode()
    return source.delivery_id(source.parse(body, {}, "application/json"), {}, body)


async def app(settings: Settings) -> TestClient:
    return TestClient(TestServer(create_app(settings)))


@pytest.fixture
async def graf(redis_url: str) -> AsyncIterator[TestClient]:
    async with await app(make_settings(redis_url, grafana_webhook_secret=GRAFANA_SECRET)) as c:
        yield c


async def test_fixtures_verify_with_recorded_headers_and_redelivery_is_a_duplicate(graf: TestClient,
                                                                                   redis: Any) -> None:
    seen = []
    for name in (FIRING, RESOLVED):
        body, headers = fixture_request(name)
        resp = await graf.post("/webhooks/grafana", data=body, headers=headers)
        assert resp.status == 202, await resp.text()
        seen.append((await resp.json())["event_id"])
        again = await graf.post("/webhooks/grafana", data=body, headers=headers)
        assert await again.json() == {"event_id": seen[-1], "status": "duplicate"}
    assert len(set(seen)) == 2
    assert await redis.zcard(ARQ_QUEUE) == 2


def test_firing_and_resolved_fixtures_share_the_grafana_fingerprint() -> None:
    (fired,) = parse(fixture_request(FIRING)[0])
    (resolved,) = parse(fixture_request(RESOLVED)[0])
    assert fired.kind == Kind.ALERT_FIRING and resolved.kind == Kind.ALERT_RESOLVED
    assert fired.fingerprint == resolved.fingerprint == "a3f1c2d4e5b60789"
    assert fired.severity == Severity.SEV1  # severity=critical
    assert fired.title == "HighCPUUsage: High CPU usage on web-01:9100"
    assert fired.summary == "CPU usage on web-01:9100 has been above 90% for 5 minutes."
    assert fired.services == []  # neither `service` nor `job` label
    assert fired.labels["team"] == "platform"
    assert fired.occurred_at is not None and fired.occurred_at.isoformat() == "2024-06-17T08:14:10+00:00"
    assert resolved.occurred_at is not None and resolved.occurred_at.isoformat() == "2024-06-17T08:31:10+00:00"
    assert [link.text for link in fired.links] == ["source", "runbook", "dashboard", "panel", "silence"]
    assert "&viewPanel=3" in fired.links[3].href  # \u0026 decoded
    assert fired.attributes["values"] == {"A": 93.71, "C": 1}
    assert fired.attributes["rule_uid"] == "ddlw3x2ybb0g0c"
    assert fired.attributes["ends_at"] is None  # Go's zero time
    assert resolved.attributes["ends_at"] == "2024-06-17T08:31:10+00:00"


def test_a_mixed_group_fans_out_one_event_per_alert() -> None:
    payload = group(alert("fp-a", "firing", severity="critical", service="checkout", env="prod"),
                    alert("fp-b", "resolved", severity="warning", job="node-exporter"),
                    alert("fp-c", "firing", severity="info"),
                    alert("fp-d", "firing", severity="error", service="payments", job="ignored"),
                    status="firing")
    evs = parse(payload)
    assert [(e.fingerprint, e.kind, e.severity) for e in evs] == [
        ("fp-a", Kind.ALERT_FIRING, Severity.SEV1), ("fp-b", Kind.ALERT_RESOLVED, Severity.SEV3),
        ("fp-c", Kind.ALERT_FIRING, Severity.SEV4), ("fp-d", Kind.ALERT_FIRING, Severity.SEV2)]
    assert [e.services for e in evs] == [["checkout"], ["node-exporter"], [], ["payments"]]
    assert evs[0].environment == "prod" and evs[1].environment is None
    assert all(e.attributes["alert_count"] == 4 for e in evs)


def test_catalog_options_change_labels_and_severity() -> None:
    payload = group(alert("fp-a", priority="p1", team="sre", component="api", stage="staging"))
    (ev,) = parse(payload, {"severity_label": "priority", "severity_map": {"P1": "SEV2"},
                            "service_labels": ["component"], "environment_label": "stage"})
    assert ev.severity == Severity.SEV2 and ev.services == ["api"] and ev.environment == "staging"
    (ev,) = parse(group(alert("fp-a")), {"default_severity": "SEV3"})  # no severity label at all
    assert ev.severity == Severity.SEV3
    (ev,) = parse(group(alert("fp-a", severity="Critical")))  # case-insensitive default map
    assert ev.severity == Severity.SEV1


def test_delivery_id_is_stable_and_changes_with_the_group() -> None:
    a, b = alert("fp-a"), alert("fp-b")
    one = delivery(group(a, b))
    assert delivery(group(b, a)) == one  # order of alerts does not matter
    assert delivery(json.loads(json.dumps(group(a, b), indent=2))) == one  # nor formatting
    assert delivery(group(a, alert("fp-b", "resolved"))) != one  # an alert resolved
    assert delivery(group(a)) != one  # an alert left the group
    assert delivery(group(a, b, groupKey="{}:{other}")) != one
    assert delivery(group(a, b, message="re-rendered text")) == one  # only identity fields count


def test_lenient_variants_parse() -> None:
    no_fp = {"status": "firing", "labels": {"alertname": "X", "severity": "warning", "port": 8080}}
    payload = {"status": "firing", "alerts": [no_fp, {**alert("fp-2"), "labels": None, "annotations": None,
                                                      "values": None, "extra": {"k": 1}}],
               "groupKey": None, "truncatedAlerts": "2", "commonLabels": None}
    first, second = parse(payload)
    assert len(first.fingerprint) == 16 and first.labels["port"] == "8080"
    assert first.fingerprint == parse(payload)[0].fingerprint  # label hash is deterministic
    assert second.fingerprint == "fp-2" and second.labels == {}
    assert first.attributes["truncated_alerts"] == 2
    assert delivery(payload)  # no groupKey: still an id


@pytest.mark.parametrize(("payload", "mentions"), [
    ({"status": "firing"}, "alerts"),
    ({"status": "firing", "alerts": [{"labels": {"a": "b"}}]}, "alerts.0.status"),
    ({"status": "firing", "alerts": [{"status": "firing"}]}, "fingerprint or labels"),
    ({"status": "firing", "alerts": "none"}, "alerts"),
    ({"status": "firing", "alerts": [{"status": "firing", "labels": ["a"]}]}, "labels"),
])
async def test_signed_wrong_shape_is_400_naming_the_field(graf: TestClient, redis: Any, payload: dict,
                                                          mentions: str) -> None:
    body = json.dumps(payload).encode()
    resp = await graf.post("/webhooks/grafana", data=body, headers={
        "Content-Type": "application/json", SIGNATURE_HEADER: sign_hex_hmac(GRAFANA_SECRET, body)})
    assert resp.status == 400
    data = await resp.json()
    assert data["error"] == "invalid_payload" and mentions in data["detail"]
    assert await redis.keys("hub:ev:*") == []


async def test_unknown_alert_status_is_kept_as_other() -> None:
    (ev,) = parse(group(alert("fp-a", "pending")))
    assert ev.kind == Kind.OTHER and ev.status == "pending"


@pytest.mark.parametrize(("mutate", "code"), [
    (lambda h, b: h.pop(SIGNATURE_HEADER), "missing_signature"),
    (lambda h, b: h.update({SIGNATURE_HEADER: sign_hex_hmac("other-secret", b)}), "bad_signature"),
    (lambda h, b: h.update({SIGNATURE_HEADER: "sha256=" + sign_hex_hmac(GRAFANA_SECRET, b)}), "bad_signature"),
    (lambda h, b: h.update({SIGNATURE_HEADER: "zz" * 32}), "bad_signature"),
])
async def test_bad_signatures_are_401_and_not_stored(graf: TestClient, redis: Any, mutate: Any, code: str) -> None:
    body, headers = fixture_request(FIRING)
    mutate(headers, body)
    resp = await graf.post("/webhooks/grafana", data=body, headers=headers)
    assert resp.status == 401
    assert (await resp.json())["error"] == code
    assert await redis.keys("hub:ev:*") == []


async def test_rotated_secrets_are_both_accepted(redis_url: str) -> None:
    settings = make_settings(redis_url, grafana_webhook_secret=f"new-secret,{GRAFANA_SECRET}")
    async with await app(settings) as c:
        body, headers = fixture_request(FIRING)  # signed with the old secret
        assert (await c.post("/webhooks/grafana", data=body, headers=headers)).status == 202
        body = (FIXTURES / RESOLVED).read_bytes()
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign_hex_hmac("new-secret", body)}
        assert (await c.post("/webhooks/grafana", data=body, headers=headers)).status == 202


async def test_timestamped_fixture_verifies_within_a_wide_tolerance(redis_url: str) -> None:
    settings = make_settings(redis_url, grafana_webhook_secret=GRAFANA_SECRET, grafana_timestamp_header=TS_HEADER,
                             hub_timestamp_tolerance=10 * 365 * 86400)
    async with await app(settings) as c:
        body, headers = variant_b(FIRING)
        resp = await c.post("/webhooks/grafana", data=body, headers=headers)
        assert resp.status == 202, await resp.text()
        body, headers = fixture_request(FIRING)  # body-only signature: refused once timestamps are on
        headers[TS_HEADER] = variant_b(FIRING)[1][TS_HEADER]
        assert (await c.post("/webhooks/grafana", data=body, headers=headers)).status == 401


@pytest.mark.parametrize(("offset", "status", "code"), [(0, 202, None), (-290, 202, None), (290, 202, None),
                                                        (-310, 401, "stale_timestamp"),
                                                        (310, 401, "stale_timestamp")])
async def test_timestamp_outside_tolerance_is_refused(redis_url: str, redis: Any, offset: int, status: int,
                                                      code: str | None) -> None:
    settings = make_settings(redis_url, grafana_webhook_secret=GRAFANA_SECRET, grafana_timestamp_header=TS_HEADER)
    body = (FIXTURES / FIRING).read_bytes()
    headers = source.sign_request(body, settings, now=time.time() + offset)
    assert set(headers) >= {TS_HEADER, SIGNATURE_HEADER}
    async with await app(settings) as c:
        resp = await c.post("/webhooks/grafana", data=body, headers=headers)
        assert resp.status == status
        if code:
            data = await resp.json()
            assert data["error"] == code and TS_HEADER in data["detail"]
            assert await redis.keys("hub:ev:*") == []


async def test_missing_timestamp_header_is_401_naming_it(redis_url: str) -> None:
    settings = make_settings(redis_url, grafana_webhook_secret=GRAFANA_SECRET, grafana_timestamp_header=TS_HEADER)
    async with await app(settings) as c:
        body, headers = fixture_request(FIRING)
        resp = await c.post("/webhooks/grafana", data=body, headers=headers)
        assert resp.status == 401
        data = await resp.json()
        assert data["error"] == "missing_timestamp" and TS_HEADER in data["detail"]


async def test_token_only(redis_url: str) -> None:
    settings = make_settings(redis_url, grafana_webhook_token=TOKEN)
    async with await app(settings) as c:
        body, headers = fixture_request(FIRING)
        resp = await c.post("/webhooks/grafana", data=body, headers=headers)  # signature alone is not enough
        assert resp.status == 401 and (await resp.json())["error"] == "missing_token"
        basic = "Basic " + base64.b64encode(f"grafana:{TOKEN}".encode()).decode()
        resp = await c.post("/webhooks/grafana", data=body, headers={**headers, "Authorization": basic})
        assert resp.status == 202


async def test_secret_and_token_configured_both_must_pass(redis_url: str, redis: Any) -> None:
    settings = make_settings(redis_url, grafana_webhook_secret=GRAFANA_SECRET, grafana_webhook_token=TOKEN)
    body, headers = fixture_request(FIRING)
    async with await app(settings) as c:
        only_sig = await c.post("/webhooks/grafana", data=body, headers=headers)
        assert only_sig.status == 401 and (await only_sig.json())["error"] == "missing_token"
        no_sig = {k: v for k, v in headers.items() if k != SIGNATURE_HEADER} | {"Authorization": f"Bearer {TOKEN}"}
        only_token = await c.post("/webhooks/grafana", data=body, headers=no_sig)
        assert only_token.status == 401 and (await only_token.json())["error"] == "missing_signature"
        assert await redis.keys("hub:ev:*") == []
        both = await c.post("/webhooks/grafana", data=body, headers={**headers, "Authorization": f"Bearer {TOKEN}"})
        assert both.status == 202
        rec = await redis.hgetall(f"hub:ev:{(await both.json())['event_id']}")
        assert rec[b"verified"] == b"hmac-sha256 (X-Grafana-Alerting-Signature) + token"
        assert set(json.loads(rec[b"headers"])) == {"User-Agent"}  # no signature, no token recorded


async def test_unconfigured_grafana_is_401_naming_both_variables(client: TestClient) -> None:
    body, headers = fixture_request(FIRING)
    resp = await client.post("/webhooks/grafana", data=body, headers=headers)
    assert resp.status == 401
    detail = (await resp.json())["detail"]
    assert "GRAFANA_WEBHOOK_SECRET" in detail and "GRAFANA_WEBHOOK_TOKEN" in detail


# -- legacy alerting (Grafana <= 10 dashboard alerts): field names from Grafana's legacy webhook docs --

def legacy(state: str = "alerting", **extra: Any) -> dict[str, Any]:
    return {"dashboardId": 1, "evalMatches": [{"value": 100, "metric": "High value", "tags": None},
                                             {"value": 200, "metric": "Higher Value", "tags": None}],
            "imageUrl": "https://grafana.com/assets/img/blog/mixed_styles.png", "message": "Notification Message",
            "orgId": 1, "panelId": 2, "ruleId": 7, "ruleName": "Panel Title alert",
            "ruleUrl": "http://localhost:3000/d/hZ7BuVbWz/test-dashboard?fullscreen&edit&tab=alert&panelId=2&orgId=1",
            "state": state, "tags": {"tag name": "tag value", "severity": "critical"},
            "title": f"[{state.title()}] Panel Title alert", **extra}


def test_legacy_alerting_fires_and_ok_resolves_the_same_rule() -> None:
    (fired,) = parse(legacy("alerting"))
    (ok,) = parse(legacy("ok", evalMatches=[]))
    assert (fired.kind, ok.kind) == (Kind.ALERT_FIRING, Kind.ALERT_RESOLVED)
    assert fired.fingerprint == ok.fingerprint == "legacy-1-7"
    assert fired.severity == Severity.SEV1  # from the rule's `severity` tag
    assert fired.title == "Panel Title alert" and fired.summary == "Notification Message"
    assert fired.labels["tag name"] == "tag value" and fired.labels["alertname"] == "Panel Title alert"
    assert [link.text for link in fired.links] == ["source", "image"]
    assert fired.attributes["values"] == {"High value": 100, "Higher Value": 200}


@pytest.mark.parametrize(("state", "kind"), [("no_data", Kind.ALERT_FIRING), ("pending", Kind.OTHER),
                                             ("paused", Kind.OTHER)])
def test_legacy_other_states(state: str, kind: Kind) -> None:
    (ev,) = parse(legacy(state))
    assert ev.kind == kind


def test_legacy_deliveries_differ_by_state_and_values_and_repeat_exactly() -> None:
    assert delivery(legacy("alerting")) == delivery(legacy("alerting"))
    assert delivery(legacy("alerting")) != delivery(legacy("ok"))
    assert delivery(legacy("alerting")) != delivery(legacy("alerting", evalMatches=[{"value": 1, "metric": "m"}]))


async def test_legacy_body_is_accepted_signed_and_redelivery_is_a_duplicate(graf: TestClient, redis: Any) -> None:
    body = json.dumps(legacy("alerting")).encode()
    headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign_hex_hmac(GRAFANA_SECRET, body)}
    first = await graf.post("/webhooks/grafana", data=body, headers=headers)
    assert first.status == 202, await first.text()
    again = await graf.post("/webhooks/grafana", data=body, headers=headers)
    assert await again.json() == {"event_id": (await first.json())["event_id"], "status": "duplicate"}
    unsigned = await graf.post("/webhooks/grafana", data=body, headers={"Content-Type": "application/json"})
    assert unsigned.status == 401


def test_a_legacy_body_without_a_rule_id_falls_back_to_its_labels() -> None:
    payload = legacy("alerting")
    del payload["ruleId"]
    (ev,) = parse(payload)
    assert ev.kind == Kind.ALERT_FIRING and ev.fingerprint and not ev.fingerprint.startswith("legacy-")
