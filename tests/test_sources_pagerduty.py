"""PagerDuty v3 webhooks: signatures (rotation), ack/resolve events, fingerprints, redelivery.

There is no recorded PagerDuty fixture: the payloads below follow the documented v3 shape
(`{"event": {id, event_type, resource_type, occurred_at, agent, client, data}}` with an
incident as `data`). The incident fields are written from the documented incident object
(reference objects `{id, type, summary, self, html_url}`); `incident_key` in `data` is
inferred from the task brief (see docs/sources.md).
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from connectors.pagerduty import SIGNATURE_HEADER, source
from hub.core.events import Kind, Severity
from hub.ingress.app import create_app
from hub.ingress.verify import sign_hex_hmac
from hub.storage.event_store import ARQ_QUEUE
from tests.conftest import make_settings

SECRET = "pd-webhook-secret-current"
OLD_SECRET = "pd-webhook-secret-previous"


def ref(kind: str, id_: str, summary: str) -> dict[str, Any]:
    return {"id": id_, "type": f"{kind}_reference", "summary": summary,
            "self": f"https://api.pagerduty.com/{kind}s/{id_}", "html_url": f"https://acme.pagerduty.com/{kind}s/{id_}"}


INCIDENT: dict[str, Any] = {
    "id": "Q2K1T0NZ7ZABCD", "type": "incident", "self": "https://api.pagerduty.com/incidents/Q2K1T0NZ7ZABCD",
    "html_url": "https://acme.pagerduty.com/incidents/Q2K1T0NZ7ZABCD", "number": 1482,
    "status": "acknowledged", "incident_key": "datadog:12345678:host:web-01",
    "created_at": "2024-06-17T08:14:12Z", "title": "High CPU on web-01",
    "service": ref("service", "PSVC001", "checkout"), "assignees": [ref("user", "PUSR001", "Maria Lopez")],
    "escalation_policy": ref("escalation_policy", "PESC001", "Checkout on-call"),
    "teams": [ref("team", "PTEAM01", "Payments")], "priority": ref("priority", "PPRI001", "P1"),
    "urgency": "high", "conference_bridge": None, "resolve_reason": None,
}


def webhook(event_type: str = "incident.acknowledged", event_id: str = "01EV0ACK0000000000000001",
            **data: Any) -> dict[str, Any]:
    incident = {**copy.deepcopy(INCIDENT), **data}
    return {"event": {"id": event_id, "event_type": event_type, "resource_type": "incident",
                      "occurred_at": "2024-06-17T08:16:40.123Z", "agent": ref("user", "PUSR001", "Maria Lopez"),
                      "client": None, "data": incident}}


def signed(data: dict[str, Any] | bytes, *secrets: str) -> tuple[bytes, dict[str, str]]:
    body = data if isinstance(data, bytes) else json.dumps(data).encode()
    sigs = ",".join("v1=" + sign_hex_hmac(s, body) for s in (secrets or (SECRET,)))
    return body, {"Content-Type": "application/json", SIGNATURE_HEADER: sigs, "User-Agent": "PagerDuty-Webhook/V3.0",
                  "X-Webhook-Id": "b1a8c1e2-0000-4000-8000-000000000001", "X-Webhook-Subscription": "PSUB001"}


def normalise(data: dict[str, Any], options: dict[str, Any] | None = None) -> list:
    return source.normalise(source.parse(json.dumps(data).encode(), {}, "application/json"), {}, options)


@pytest.fixture
async def pd(redis_url: str) -> AsyncIterator[TestClient]:
    settings = make_settings(redis_url, pagerduty_webhook_secret=f"{SECRET},{OLD_SECRET}")
    async with TestClient(TestServer(create_app(settings))) as c:
        yield c


async def test_signed_webhook_is_accepted_and_redelivery_is_a_duplicate(pd: TestClient, redis: Any) -> None:
    body, headers = signed(webhook())
    first = await pd.post("/webhooks/pagerduty", data=body, headers=headers)
    assert first.status == 202, await first.text()
    event_id = (await first.json())["event_id"]
    rec = await redis.hgetall(f"hub:ev:{event_id}")
    assert rec[b"delivery_id"] == b"01EV0ACK0000000000000001"
    kept = json.loads(rec[b"headers"])
    assert SIGNATURE_HEADER not in kept and kept["X-Webhook-Subscription"] == "PSUB001"
    again = await pd.post("/webhooks/pagerduty", data=body, headers=headers)
    assert await again.json() == {"event_id": event_id, "status": "duplicate"}
    assert await redis.zcard(ARQ_QUEUE) == 1


def test_acknowledged_is_a_page_ack_keyed_by_the_incident_key() -> None:
    (ev,) = normalise(webhook())
    assert ev.kind == Kind.PAGE_ACKNOWLEDGED
    assert ev.fingerprint == "datadog:12345678:host:web-01"  # the dedup key the hub paged with
    assert ev.severity == Severity.SEV1
    assert ev.services == ["checkout"]
    assert ev.title == "High CPU on web-01" and ev.status == "acknowledged"
    assert ev.links[0].href == "https://acme.pagerduty.com/incidents/Q2K1T0NZ7ZABCD"
    assert ev.attributes["agent"] == "Maria Lopez" and ev.attributes["incident_number"] == 1482
    assert ev.attributes["incident_id"] == "Q2K1T0NZ7ZABCD" and ev.attributes["urgency"] == "high"
    assert ev.occurred_at is not None and ev.occurred_at.isoformat() == "2024-06-17T08:16:40.123000+00:00"


def test_resolved_is_a_page_resolve_with_the_same_fingerprint() -> None:
    (ack,) = normalise(webhook())
    (res,) = normalise(webhook("incident.resolved", "01EV0RES", status="resolved", resolve_reason=None))
    assert res.kind == Kind.PAGE_RESOLVED and res.fingerprint == ack.fingerprint


def test_without_incident_key_the_fingerprint_is_the_pagerduty_incident() -> None:
    (ev,) = normalise(webhook(incident_key=None))
    assert ev.fingerprint == "pagerduty:Q2K1T0NZ7ZABCD"
    data = webhook()
    del data["event"]["data"]["incident_key"]
    assert normalise(data)[0].fingerprint == "pagerduty:Q2K1T0NZ7ZABCD"


@pytest.mark.parametrize(("priority", "options", "expected"), [
    (ref("priority", "P", "P2"), None, Severity.SEV2), (ref("priority", "P", "P5"), None, Severity.SEV4),
    (None, None, None), (None, {"default_severity": "SEV2"}, Severity.SEV2),
    (ref("priority", "P", "Sev-A"), {"severity_map": {"sev-a": "SEV1"}}, Severity.SEV1),
])
def test_priority_to_severity(priority: Any, options: Any, expected: Severity | None) -> None:
    assert normalise(webhook(priority=priority), options)[0].severity == expected


@pytest.mark.parametrize("event_type", ["incident.triggered", "incident.escalated", "incident.annotated",
                                        "incident.priority_updated", "service.updated"])
def test_other_event_types_give_no_events(event_type: str) -> None:
    assert normalise(webhook(event_type)) == []


def test_ping_is_accepted_with_no_events() -> None:
    ping = {"event": {"id": "01PING", "event_type": "pagey.ping", "resource_type": "pagey",
                      "occurred_at": "2024-06-17T08:00:00Z", "agent": None, "client": None,
                      "data": {"message": "Hello from your friend Pagey!", "type": "ping"}}}
    assert normalise(ping) == []


def test_a_body_key_named_like_an_internal_field_changes_nothing() -> None:
    (ev,) = normalise({**webhook(), "incident": {"id": "spoofed", "incident_key": "spoofed"}})
    assert ev.fingerprint == "datadog:12345678:host:web-01"
    assert normalise({**webhook("pagey.ping"), "incident": 5}) == []


def test_lenient_variants() -> None:
    (ev,) = normalise(webhook(number="1482", service=None, assignees=None, priority=None, extra={"k": 1}))
    assert ev.attributes["incident_number"] == 1482 and ev.services == [] and ev.attributes["assignees"] == []


async def test_rotation_accepts_either_secret_and_a_list_of_signatures(pd: TestClient) -> None:
    body, headers = signed(webhook(event_id="rot-1"), OLD_SECRET)
    assert (await pd.post("/webhooks/pagerduty", data=body, headers=headers)).status == 202
    body, headers = signed(webhook(event_id="rot-2"), "some-other-secret", SECRET)  # two v1 entries
    assert (await pd.post("/webhooks/pagerduty", data=body, headers=headers)).status == 202


@pytest.mark.parametrize(("header", "code"), [
    (None, "missing_signature"), ("v1=" + "0" * 64, "bad_signature"), ("v2=abc", "bad_signature"),
    ("sha256=abc", "bad_signature"), (",,,", "bad_signature"), ("v1=", "bad_signature"),
])
async def test_bad_signatures_are_401_and_not_stored(pd: TestClient, redis: Any, header: str | None,
                                                     code: str) -> None:
    body, headers = signed(webhook())
    if header is None:
        del headers[SIGNATURE_HEADER]
    else:
        headers[SIGNATURE_HEADER] = header
    resp = await pd.post("/webhooks/pagerduty", data=body, headers=headers)
    assert resp.status == 401
    data = await resp.json()
    assert data["error"] == code and SIGNATURE_HEADER in data["detail"]
    assert await redis.keys("hub:ev:*") == []


async def test_tampered_body_is_401(pd: TestClient) -> None:
    body, headers = signed(webhook())
    resp = await pd.post("/webhooks/pagerduty", data=body.replace(b"acknowledged", b"resolved"), headers=headers)
    assert resp.status == 401


@pytest.mark.parametrize(("data", "mentions"), [
    ({"event": {"event_type": "incident.resolved"}}, "event.id"),
    ({"event": {"id": "1"}}, "event.event_type"),
    ({"events": []}, "event"),
    ({"event": {"id": "1", "event_type": "incident.resolved", "data": {"title": "x"}}}, "event.data.id"),
    ({"event": {"id": "1", "event_type": "incident.acknowledged", "data": None}}, "event.data"),
    ({"event": {"id": "1", "event_type": "incident.acknowledged", "data": [1]}}, "event.data"),
])
async def test_signed_wrong_shapes_are_400(pd: TestClient, redis: Any, data: dict, mentions: str) -> None:
    body, headers = signed(data)
    resp = await pd.post("/webhooks/pagerduty", data=body, headers=headers)
    assert resp.status == 400
    out = await resp.json()
    assert out["error"] == "invalid_payload" and mentions in out["detail"]
    assert await redis.keys("hub:ev:*") == []


async def test_unconfigured_is_401_naming_the_variable(client: TestClient) -> None:
    body, headers = signed(webhook())
    resp = await client.post("/webhooks/pagerduty", data=body, headers=headers)
    assert resp.status == 401 and "PAGERDUTY_WEBHOOK_SECRET" in (await resp.json())["detail"]


def test_sign_request_round_trips(redis_url: str) -> None:
    settings = make_settings(redis_url, pagerduty_webhook_secret=SECRET)
    body = json.dumps(webhook()).encode()
    assert source.verify(body, source.sign_request(body, settings), settings).startswith("hmac-sha256")
