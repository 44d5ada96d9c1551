"""incident.io: Standard Webhooks verification, every event type, status categories, severity, services."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from multidict import CIMultiDict

from connectors.incidentio import source
from hub.core.events import Kind, Severity
from hub.ingress.app import create_app
from hub.ingress.verify import AuthError, sign_standard_webhook, verify_standard_webhook
from hub.storage.event_store import ARQ_QUEUE, Store
from tests.conftest import INCIDENTIO_SECRET, fixture_request, make_settings, wait_for

CREATED = "incidentio_incident_created.json"
UPDATED = "incidentio_incident_updated.json"
STATUS = "incidentio_incident_status_updated.json"
FOLLOWUP = "incidentio_followup_created.json"
FIXTURES = (CREATED, UPDATED, STATUS, FOLLOWUP)
INCIDENT_ID = "01J0ZKW6305FATZYDS3AR0RGXJ"
TEN_YEARS = 10 * 365 * 86400


def payload(name: str) -> dict[str, Any]:
    return json.loads(fixture_request(name)[0])


def normalise(data: dict[str, Any], options: dict[str, Any] | None = None) -> list:
    return source.normalise(source.parse(json.dumps(data).encode(), {}, "application/json"), {}, options)


def signed(data: dict[str, Any] | bytes, msg_id: str = "msg_test", at: float | None = None,
           secret: str = INCIDENTIO_SECRET, prefix: str = "webhook-") -> tuple[bytes, dict[str, str]]:
    body = data if isinstance(data, bytes) else json.dumps(data).encode()
    ts = int(time.time() if at is None else at)
    return body, {"Content-Type": "application/json", f"{prefix}id": msg_id, f"{prefix}timestamp": str(ts),
                  f"{prefix}signature": sign_standard_webhook(secret, msg_id, ts, body)}


def status_update(prev: str, new: str) -> dict[str, Any]:
    data = payload(STATUS)
    inner = data["public_incident.incident_status_updated_v2"]
    inner["previous_status"].update(category=prev, name=prev.title())
    inner["new_status"].update(category=new, name=new.title())
    inner["incident"]["incident_status"].update(category=new, name=new.title())
    return data


def with_incident(name: str, **changes: Any) -> dict[str, Any]:
    data = payload(name)
    data[data["event_type"]].update(changes)
    return data


@pytest.fixture
async def inc(redis_url: str) -> AsyncIterator[TestClient]:
    settings = make_settings(redis_url, incidentio_webhook_secret=INCIDENTIO_SECRET)
    async with TestClient(TestServer(create_app(settings))) as c:
        yield c


@pytest.fixture
async def inc_fixed_clock(redis_url: str) -> AsyncIterator[TestClient]:
    """The fixtures carry fixed 2024 timestamps: verify them with a tolerance that covers them."""
    settings = make_settings(redis_url, incidentio_webhook_secret=INCIDENTIO_SECRET,
                             hub_timestamp_tolerance=TEN_YEARS)
    async with TestClient(TestServer(create_app(settings))) as c:
        yield c


def test_standard_webhooks_vector_from_contracts() -> None:
    body = b'{"event_type":"ping","data":{"success":true}}'
    headers = {"webhook-id": "msg_loFOjxBNrRLzqYUf", "webhook-timestamp": "1731705121",
               "webhook-signature": "v1,rAvfW3dJ/X/qxhsaXPOyyCGmRKsaKWcsNccKXlIktD0="}
    secret = "whsec_plJ3nmyCDGBKInavdOK15jsl"
    assert verify_standard_webhook([secret], headers, body, 300, now=1731705121) == "msg_loFOjxBNrRLzqYUf"
    assert sign_standard_webhook(secret, "msg_loFOjxBNrRLzqYUf", 1731705121, body) == headers["webhook-signature"]
    with pytest.raises(AuthError):
        verify_standard_webhook([secret], headers, body.replace(b"true", b"false"), 300, now=1731705121)


@pytest.mark.parametrize("name", FIXTURES)
async def test_fixture_verifies_with_recorded_headers_and_redelivery_is_a_duplicate(
        inc_fixed_clock: TestClient, redis: Any, name: str) -> None:
    body, headers = fixture_request(name)
    resp = await inc_fixed_clock.post("/webhooks/incidentio", data=body, headers=headers)
    assert resp.status == 202, await resp.text()
    event_id = (await resp.json())["event_id"]
    rec = await redis.hgetall(f"hub:ev:{event_id}")
    assert rec[b"delivery_id"] == headers["webhook-id"].encode()
    kept = json.loads(rec[b"headers"])
    assert kept["webhook-id"] == headers["webhook-id"] and "webhook-signature" not in kept
    again = await inc_fixed_clock.post("/webhooks/incidentio", data=body, headers=headers)
    assert await again.json() == {"event_id": event_id, "status": "duplicate"}
    assert await redis.zcard(ARQ_QUEUE) == 1
    # the worker's path: stored bytes and kept headers are enough to normalise
    evs = source.normalise(source.parse(rec[b"body"], CIMultiDict(kept), rec[b"content_type"].decode()), kept, {})
    assert len(evs) == 1


async def test_fixture_timestamps_are_refused_under_the_default_tolerance(inc: TestClient, redis: Any) -> None:
    body, headers = fixture_request(CREATED)
    resp = await inc.post("/webhooks/incidentio", data=body, headers=headers)
    assert resp.status == 401 and (await resp.json())["error"] == "stale_timestamp"
    assert await redis.keys("hub:ev:*") == []


@pytest.mark.parametrize(("offset", "status"), [(0, 202), (-290, 202), (290, 202), (-310, 401), (310, 401)])
async def test_five_minute_tolerance(inc: TestClient, redis: Any, offset: int, status: int) -> None:
    body, headers = signed(payload(CREATED), msg_id=f"msg_{offset}", at=time.time() + offset)
    resp = await inc.post("/webhooks/incidentio", data=body, headers=headers)
    assert resp.status == status
    if status == 401:
        assert (await resp.json())["error"] == "stale_timestamp"
        assert await redis.keys("hub:ev:*") == []


async def test_svix_header_names_are_accepted_and_give_the_delivery_id(inc: TestClient, redis: Any) -> None:
    body, headers = signed(payload(FOLLOWUP), msg_id="msg_svix_1", prefix="svix-")
    resp = await inc.post("/webhooks/incidentio", data=body, headers=headers)
    assert resp.status == 202
    rec = await redis.hgetall(f"hub:ev:{(await resp.json())['event_id']}")
    assert rec[b"delivery_id"] == b"msg_svix_1"


async def test_secret_rotation(redis_url: str) -> None:
    new_secret = "whsec_" + "bmV3LXNlY3JldC1mb3ItdGVzdHM="
    settings = make_settings(redis_url, incidentio_webhook_secret=f"{new_secret},{INCIDENTIO_SECRET}")
    async with TestClient(TestServer(create_app(settings))) as c:
        for i, secret in enumerate((new_secret, INCIDENTIO_SECRET)):
            body, headers = signed(payload(CREATED), msg_id=f"msg_rot_{i}", secret=secret)
            assert (await c.post("/webhooks/incidentio", data=body, headers=headers)).status == 202
        # the sender signs with both while it rotates: a space-separated list, any v1 may match
        body, headers = signed(payload(UPDATED), msg_id="msg_rot_both", secret=new_secret)
        _, old = signed(body, msg_id="msg_rot_both", secret="whsec_cmV0aXJlZA==",
                        at=int(headers["webhook-timestamp"]))
        headers["webhook-signature"] = f"v1a,ignored {old['webhook-signature']} {headers['webhook-signature']}"
        assert (await c.post("/webhooks/incidentio", data=body, headers=headers)).status == 202
        body, headers = signed(payload(CREATED), msg_id="msg_rot_x", secret="whsec_cmV0aXJlZA==")
        assert (await c.post("/webhooks/incidentio", data=body, headers=headers)).status == 401


@pytest.mark.parametrize(("drop", "code"), [("webhook-signature", "missing_signature"),
                                            ("webhook-id", "missing_signature"),
                                            ("webhook-timestamp", "missing_timestamp")])
async def test_missing_headers_are_401(inc: TestClient, redis: Any, drop: str, code: str) -> None:
    body, headers = signed(payload(CREATED))
    del headers[drop]
    resp = await inc.post("/webhooks/incidentio", data=body, headers=headers)
    assert resp.status == 401 and (await resp.json())["error"] == code
    assert await redis.keys("hub:ev:*") == []


def test_created_fixture_is_a_declared_major_incident() -> None:
    (ev,) = normalise(payload(CREATED))
    assert ev.kind == Kind.INCIDENT_DECLARED
    assert ev.fingerprint == f"incidentio:{INCIDENT_ID}"
    assert ev.severity == Severity.SEV2
    assert ev.title == "INC-1482: Checkout API returning 5xx errors"
    assert ev.summary.startswith("Elevated 5xx rate on the checkout API")
    assert ev.status == "Investigating"
    assert ev.attributes["status_category"] == "live"
    assert ev.attributes["incident_id"] == INCIDENT_ID and ev.attributes["reference"] == "INC-1482"
    assert ev.attributes["mode"] == "standard" and ev.attributes["retrospective"] is False
    assert ev.services == []  # only an "Affected Team" field
    assert ev.links[0].href == "https://app.incident.io/acme/incidents/1482"
    assert ev.occurred_at is not None and ev.occurred_at.isoformat() == "2024-06-17T08:15:02.118492+00:00"


def test_updated_fixture_keeps_the_fingerprint_and_shows_the_closed_status() -> None:
    (ev,) = normalise(payload(UPDATED))
    assert ev.kind == Kind.INCIDENT_UPDATED
    assert ev.fingerprint == f"incidentio:{INCIDENT_ID}"
    assert ev.status == "Closed" and ev.attributes["status_category"] == "closed"
    assert ev.attributes["external_issue"] == {"name": "OPS-2291", "provider": "jira",
                                               "url": "https://acme.atlassian.net/browse/OPS-2291"}
    assert {"post-mortem", "OPS-2291"} <= {link.text for link in ev.links}


def test_status_fixture_live_to_closed_is_resolved() -> None:
    (ev,) = normalise(payload(STATUS))
    assert ev.kind == Kind.INCIDENT_RESOLVED
    assert ev.fingerprint == f"incidentio:{INCIDENT_ID}"
    assert ev.status == "Closed"
    assert ev.attributes["previous_status"] == "Investigating"
    assert ev.attributes["resolution"] == "resolved" and ev.attributes["postmortem_expected"] is True
    assert ev.attributes["message"].startswith("Fix deployed")


@pytest.mark.parametrize(("prev", "new", "kind", "resolution", "postmortem"), [
    ("live", "closed", Kind.INCIDENT_RESOLVED, "resolved", True),
    ("live", "learning", Kind.INCIDENT_RESOLVED, "resolved", True),
    ("learning", "closed", Kind.INCIDENT_STATUS_CHANGED, None, None),  # resolved once, not twice
    ("triage", "declined", Kind.INCIDENT_RESOLVED, "declined", False),
    ("live", "canceled", Kind.INCIDENT_RESOLVED, "canceled", False),
    ("live", "merged", Kind.INCIDENT_RESOLVED, "merged", False),
    ("triage", "live", Kind.INCIDENT_STATUS_CHANGED, None, None),
    ("live", "paused", Kind.INCIDENT_STATUS_CHANGED, None, None),
    ("closed", "live", Kind.INCIDENT_STATUS_CHANGED, None, None),  # reopened
])
def test_status_categories(prev: str, new: str, kind: Kind, resolution: str | None, postmortem: bool | None) -> None:
    (ev,) = normalise(status_update(prev, new))
    assert ev.kind == kind
    assert ev.attributes.get("resolution") == resolution
    assert ev.attributes.get("postmortem_expected") == postmortem
    assert ev.attributes["status_category"] == new and ev.attributes["previous_status_category"] == prev
    assert ev.attributes["left_triage"] is (prev == "triage" and new != "triage")


def test_followup_carries_its_incident() -> None:
    (ev,) = normalise(payload(FOLLOWUP))
    assert ev.kind == Kind.FOLLOWUP_CREATED
    assert ev.fingerprint == "incidentio:followup:01J0ZMP4FQJAWK0K68G769HJDN"
    assert ev.attributes["incident_id"] == INCIDENT_ID
    assert ev.attributes["followup_id"] == "01J0ZMP4FQJAWK0K68G769HJDN"
    assert ev.title == "Add circuit breaker to payment provider client"
    assert ev.attributes["priority"] == "High" and ev.attributes["assignee"] == "Maria Lopez"
    assert ev.attributes["labels"] == ["reliability"] and ev.status == "outstanding"


def test_followup_v1_is_handled_too() -> None:
    data = payload(FOLLOWUP)
    data = {"event_type": "public_incident.follow_up_created_v1",
            "public_incident.follow_up_created_v1": data["public_incident.follow_up_created_v2"]}
    (ev,) = normalise(data)
    assert ev.kind == Kind.FOLLOWUP_CREATED and ev.attributes["incident_id"] == INCIDENT_ID


@pytest.mark.parametrize(("event_type", "kind", "fingerprint"), [
    ("private_incident.incident_created_v2", Kind.INCIDENT_DECLARED, "incidentio:01PRIVATE"),
    ("private_incident.incident_updated_v2", Kind.INCIDENT_UPDATED, "incidentio:01PRIVATE"),
    ("private_incident.incident_status_updated_v2", Kind.INCIDENT_STATUS_CHANGED, "incidentio:01PRIVATE"),
    ("private_incident.follow_up_created_v2", Kind.FOLLOWUP_CREATED, "incidentio:followup:01PRIVATE"),
])
def test_private_events_need_a_lookup(event_type: str, kind: Kind, fingerprint: str) -> None:
    (ev,) = normalise({"event_type": event_type, event_type: {"id": "01PRIVATE"}})
    assert ev.kind == kind and ev.fingerprint == fingerprint
    assert ev.attributes["needs_lookup"] is True and ev.severity is None


@pytest.mark.parametrize("event_type", ["public_incident.postmortem_document_status_updated_v1",
                                        "schedule.shift_change_v1", "private_incident.membership_granted_v1",
                                        "public_incident.follow_up_updated_v2", "something.new_v9"])
def test_other_event_types_parse_to_no_events(event_type: str) -> None:
    assert normalise({"event_type": event_type, event_type: {"anything": [1, 2]}}) == []


async def test_unknown_event_type_is_accepted_and_finishes_done(redis_url: str, redis: Any,
                                                                running_worker: Any) -> None:
    settings = make_settings(redis_url, incidentio_webhook_secret=INCIDENTIO_SECRET)
    body, headers = signed({"event_type": "schedule.created_v1", "schedule.created_v1": {"id": "S1"}})
    async with TestClient(TestServer(create_app(settings))) as c, running_worker(settings):
        resp = await c.post("/webhooks/incidentio", data=body, headers=headers)
        assert resp.status == 202
        event_id = (await resp.json())["event_id"]
        store = Store(redis, settings)

        async def done() -> dict[str, Any] | None:
            rec = await store.get(event_id)
            return rec if rec and rec["state"] == "done" else None

        rec = await wait_for(done, timeout=30)
    assert rec["events"] == []


@pytest.mark.parametrize(("severity", "options", "expected"), [
    ({"name": "Critical", "rank": 3}, None, Severity.SEV1),
    ({"name": "Major", "rank": 2}, None, Severity.SEV2),
    ({"name": "Minor", "rank": 1}, None, Severity.SEV3),
    ({"name": "Trivial", "rank": 0}, None, Severity.SEV4),
    ({"name": "critical", "rank": "3"}, None, Severity.SEV1),
    ({"name": "Sev 0", "rank": 5}, {"severity_top_rank": 5}, Severity.SEV1),
    ({"name": "Sev 1", "rank": 4}, {"severity_top_rank": 5}, Severity.SEV2),
    ({"name": "Sev 4", "rank": 1}, {"severity_top_rank": 5}, Severity.SEV4),
    ({"name": "Major", "rank": 2}, {"severity_map": {"major": "SEV1"}}, Severity.SEV1),
    ({"name": "Unnamed"}, None, None),
    (None, None, None),
    (None, {"default_severity": "SEV3"}, Severity.SEV3),
])
def test_severity_by_name_then_rank(severity: dict | None, options: dict | None, expected: Severity | None) -> None:
    (ev,) = normalise(with_incident(CREATED, severity=severity), options)
    assert ev.severity == expected


def test_services_come_from_the_configured_custom_field() -> None:
    data = payload(CREATED)
    entries = data["public_incident.incident_created_v2"]["custom_field_entries"]
    entries.append({"custom_field": {"id": "CF2", "name": "Affected services", "field_type": "multi_select"},
                    "values": [{"value_catalog_entry": {"id": "E1", "name": "checkout-api"}},
                               {"value_option": {"id": "O1", "value": "payments"}},
                               {"value_text": "ledger, checkout-api"}]})
    (ev,) = normalise(data)
    assert ev.services == ["checkout-api", "payments", "ledger"]
    (ev,) = normalise(data, {"services_field": "affected team"})
    assert ev.services == ["Payments"]


def test_a_body_key_named_like_an_internal_field_changes_nothing() -> None:
    assert normalise({"event_type": "schedule.created_v1", "payload": 5}) == []
    data = {**payload(CREATED), "payload": {"id": "spoofed"}}
    assert normalise(data)[0].fingerprint == f"incidentio:{INCIDENT_ID}"


def test_lenient_variants() -> None:
    data = with_incident(CREATED, custom_field_entries=None, severity={"name": "Major", "rank": "2", "extra": 1},
                         incident_status=None, summary=None, new_field={"x": [1]}, reference=1482)
    (ev,) = normalise(data)
    assert ev.severity == Severity.SEV2 and ev.status is None and ev.summary == ""
    assert ev.title == "1482: Checkout API returning 5xx errors"


def test_retrospective_incidents_are_marked() -> None:
    (ev,) = normalise(with_incident(CREATED, mode="retrospective"))
    assert ev.kind == Kind.INCIDENT_DECLARED and ev.attributes["retrospective"] is True


@pytest.mark.parametrize(("data", "mentions"), [
    ({"event_type": "public_incident.incident_created_v2"}, "public_incident.incident_created_v2"),
    ({"event_type": "public_incident.incident_created_v2", "public_incident.incident_created_v2": {"name": "x"}},
     "public_incident.incident_created_v2.id"),
    ({"event_type": "public_incident.incident_status_updated_v2",
      "public_incident.incident_status_updated_v2": {"new_status": {}}}, "incident"),
    ({"event_type": "public_incident.follow_up_created_v2",
      "public_incident.follow_up_created_v2": {"id": "F1"}}, "incident_id"),
    ({"event_type": "private_incident.incident_created_v2", "private_incident.incident_created_v2": {}}, "id"),
    ({"payload": {}}, "event_type"),
    ({"event_type": ["x"]}, "event_type"),
])
async def test_signed_wrong_shapes_are_400(inc: TestClient, redis: Any, data: dict, mentions: str) -> None:
    body, headers = signed(data)
    resp = await inc.post("/webhooks/incidentio", data=body, headers=headers)
    assert resp.status == 400
    out = await resp.json()
    assert out["error"] == "invalid_payload" and mentions in out["detail"]
    assert await redis.keys("hub:ev:*") == []


def test_recorded_headers_never_include_the_signature() -> None:
    assert not any("signature" in h.lower() for h in source.recorded_headers)


def test_sign_request_round_trips(redis_url: str) -> None:
    settings = make_settings(redis_url, incidentio_webhook_secret=INCIDENTIO_SECRET)
    body = json.dumps(copy.deepcopy(payload(CREATED))).encode()
    headers = source.sign_request(body, settings)
    assert source.verify(body, headers, settings).startswith("standard-webhooks")
    assert headers["webhook-id"] != source.sign_request(body, settings)["webhook-id"]  # a new message each time
