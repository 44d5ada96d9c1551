"""Workflows end to end: signed webhooks → real ingress → Redis → real worker → fake upstreams.

Each test runs the built-in defaults (or a rules file from tests/data/rules) and asserts the
exact outbound requests, and their order as the event's timeline records them.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import time
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from hub.core.registry import sources
from hub.core.settings import Settings
from hub.ingress.app import create_app
from hub.storage import alert_groups
from hub.storage.event_store import FINAL_STATES, Store
from hub.storage.incidents import IncidentStore
from hub.worker.app import close_worker
from tests.conftest import (
    FIXTURES,
    GRAFANA_SECRET,
    INCIDENTIO_SECRET,
    fixture_request,
    github_deploy,
    make_settings,
    wait_for,
)
from tests.fakes import incidentio as fake_incidentio
from tests.fakes import jira as fake_jira
from tests.fakes import opsgenie as fake_opsgenie
from tests.fakes import statuspage as fake_statuspage

RULES = Path(__file__).parent / "data" / "rules"
ROUTING_KEY = "R0UT1NGKEY0123456789abcdefABCDEF"
DATADOG_TOKEN = "datadog-test-token-123"
PAGERDUTY_SECRET = "pd-webhook-secret-for-workflows"
INCIDENT_ID = "01J0ZKW6305FATZYDS3AR0RGXJ"
INCIDENT_KEY = f"incidentio:{INCIDENT_ID}"


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


class Upstreams:
    """Every fake upstream the defaults may call, started on loopback."""

    def __init__(self) -> None:
        from tests.fakes.incidentio import FakeIncidentIO
        from tests.fakes.jira import FakeJira
        from tests.fakes.opsgenie import FakeOpsGenie
        from tests.fakes.pagerduty import FakePagerDuty
        from tests.fakes.slack import FakeSlack
        from tests.fakes.statuspage import FakeStatuspage

        self.slack, self.pagerduty, self.statuspage = FakeSlack(), FakePagerDuty(), FakeStatuspage()
        self.jira, self.incidentio, self.opsgenie = FakeJira(), FakeIncidentIO(), FakeOpsGenie()

    @property
    def all(self) -> list[Any]:
        return [self.slack, self.pagerduty, self.statuspage, self.jira, self.incidentio, self.opsgenie]

    async def start(self) -> Upstreams:
        for fake in self.all:
            await fake.start()
        return self

    async def close(self) -> None:
        for fake in self.all:
            await fake.close()

    def settings(self, redis_url: str, **overrides: Any) -> Settings:
        base: dict[str, Any] = dict(
            slack_webhook_url=self.slack.webhook_url, pagerduty_routing_key=ROUTING_KEY,
            pagerduty_events_url=self.pagerduty.events_url, statuspage_api_key=fake_statuspage.API_KEY,
            statuspage_page_id=fake_statuspage.PAGE_ID, statuspage_api_url=self.statuspage.url,
            jira_url=self.jira.url, jira_email=fake_jira.EMAIL, jira_api_token=fake_jira.TOKEN, jira_project="OPS",
            incidentio_api_key=fake_incidentio.API_KEY, incidentio_api_url=self.incidentio.url,
            incidentio_webhook_secret=INCIDENTIO_SECRET, grafana_webhook_secret=GRAFANA_SECRET,
            datadog_webhook_token=DATADOG_TOKEN, pagerduty_webhook_secret=PAGERDUTY_SECRET,
            opsgenie_api_key=fake_opsgenie.API_KEY, opsgenie_api_url=self.opsgenie.url)
        base.update(overrides)
        return make_settings(redis_url, **base)

    def seed_incident(self, incident_id: str = INCIDENT_ID) -> None:
        """An incident.io incident the fake knows (timeline items need one)."""
        self.incidentio.incidents[incident_id] = {"id": incident_id, "name": "seeded", "summary": ""}


class Hub:
    """The real web app and worker(s) on one Redis, for one test."""

    def __init__(self, settings: Settings, redis: Any, workers: int = 1) -> None:
        self.settings = settings
        self.redis = redis
        self.store = Store(redis, settings)
        self.incidents = IncidentStore(redis, settings.hub_retention)
        self.workers = workers
        self._client: TestClient | None = None
        self._workers: list[tuple[Any, asyncio.Task[None]]] = []

    async def __aenter__(self) -> Hub:
        from hub.worker.app import make_worker

        self._client = TestClient(TestServer(create_app(self.settings)))
        await self._client.__aenter__()
        for _ in range(self.workers):
            worker = make_worker(self.settings, handle_signals=False, poll_delay=0.02)
            self._workers.append((worker, asyncio.create_task(worker.async_run())))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for worker, task in self._workers:
            # arq's poll loop can swallow a cancellation that lands inside a Redis call: insist.
            while not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=1)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            await close_worker(worker)
        assert self._client is not None
        await self._client.__aexit__(*exc)

    async def post(self, source: str, body: bytes | dict[str, Any], headers: dict[str, str] | None = None,
                   extra: dict[str, str] | None = None) -> str:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        hdrs = headers if headers is not None else sources()[source].sign_request(raw, self.settings)
        assert self._client is not None
        resp = await self._client.post(f"/webhooks/{source}", data=raw, headers={**hdrs, **(extra or {})})
        data = await resp.json()
        assert resp.status == 202, data
        return data["event_id"]

    async def final(self, event_id: str, timeout: float = 15) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            rec = await self.store.get(event_id)
            return rec if rec and rec["state"] in FINAL_STATES else None
        return await wait_for(check, timeout=timeout)

    async def send(self, source: str, body: bytes | dict[str, Any], **kw: Any) -> dict[str, Any]:
        return await self.final(await self.post(source, body, **kw))

    async def done_actions(self, event_id: str) -> list[tuple[str, str]]:
        """(action name, final state) in the order the event's timeline recorded them."""
        out = []
        for entry in await self.store.timeline(event_id):
            if entry.get("type") == "action" and entry.get("state") in ("succeeded", "skipped", "dead"):
                out.append((entry["name"], entry["state"]))
        return out

    async def actions(self, event_id: str) -> dict[str, dict[str, Any]]:
        return await self.store.actions(event_id)


def incident_payload(event_type: str, *, severity: str | None = None, status: tuple[str, str] | None = None,
                     previous: tuple[str, str] | None = None, services_field: str | None = None,
                     postmortem: bool = False) -> dict[str, Any]:
    """An incident.io webhook from the fixtures, with severity/status changed where asked (and
    without the fixtures' post-mortem document unless `postmortem`: with one, no Jira post-mortem)."""
    source = {"incident_created_v2": "incidentio_incident_created.json",
              "incident_status_updated_v2": "incidentio_incident_status_updated.json",
              "incident_updated_v2": "incidentio_incident_updated.json"}[event_type]
    data = copy.deepcopy(load(source))
    body = data[f"public_incident.{event_type}"]
    incident = body.get("incident", body)
    if not postmortem:
        incident.pop("postmortem_document_url", None)
    if severity:
        rank = {"Critical": 3, "Major": 2, "Minor": 1}[severity]
        incident["severity"] = {**incident["severity"], "name": severity, "rank": rank}
    if status:
        new = {"id": f"st_{status[0].lower()}", "name": status[0], "category": status[1], "rank": 2}
        incident["incident_status"] = new
        if "new_status" in body:
            body["new_status"] = new
    if previous and "previous_status" in body:
        body["previous_status"] = {"id": f"st_{previous[0].lower()}", "name": previous[0], "category": previous[1],
                                   "rank": 1}
    return data


# ---------------------------------------------------------------------------------------------


async def test_incident_created_status_changed_resolved(redis_url, redis, upstreams) -> None:
    """SEV1 lifecycle: page + Slack + Statuspage (the service opted in; public wording only); status
    change updates Statuspage; resolve closes it all."""
    settings = upstreams.settings(redis_url, hub_config=RULES / "public.yaml")
    async with Hub(settings, redis) as hub:
        created = await hub.send("incidentio", incident_payload("incident_created_v2", severity="Critical"))
        assert created["state"] == "done"
        assert await hub.done_actions(created["id"]) == [
            ("pagerduty.trigger", "succeeded"), ("slack.notify", "succeeded"), ("statuspage.open", "succeeded")]
        (page,) = upstreams.pagerduty.calls("/v2/enqueue")
        assert page.json()["event_action"] == "trigger"
        assert page.json()["dedup_key"] == INCIDENT_KEY
        assert page.json()["routing_key"] == ROUTING_KEY
        assert page.json()["payload"]["severity"] == "critical"
        assert page.json()["payload"]["summary"] == "[SEV1] INC-1482: Checkout API returning 5xx errors"
        (sp_create,) = upstreams.statuspage.calls(method="POST")
        assert sp_create.json()["incident"]["status"] == "investigating"
        assert sp_create.json()["incident"]["name"] == "Degraded performance of Checkout"
        assert sp_create.json()["incident"]["body"] == "We are investigating degraded performance of Checkout."
        assert sp_create.json()["incident"]["components"] == {"cmp_checkout": "major_outage"}
        assert upstreams.slack.requests[0].json()["text"].endswith(":rotating_light: INC-1482: Checkout API "
                                                                   "returning 5xx errors")
        state = await hub.incidents.get(INCIDENT_KEY)
        assert state["severity"] == "SEV1" and state["page_dedup_key"] == INCIDENT_KEY
        sp_id = upstreams.statuspage.created[0]
        assert state["statuspage_incident_id"] == sp_id
        timers = await hub.incidents.timers(INCIDENT_KEY)
        assert sorted(t["group"] for t in timers.values()) == ["escalate", "escalate-again", "reminder"]

        changed = await hub.send("incidentio", incident_payload(
            "incident_status_updated_v2", severity="Critical", status=("Monitoring", "live"),
            previous=("Investigating", "live")))
        assert changed["events"][0]["kind"] == "incident.status_changed"
        assert await hub.done_actions(changed["id"]) == [("statuspage.update", "succeeded"),
                                                         ("slack.notify", "succeeded")]
        patch = upstreams.statuspage.calls(f"/v1/pages/{fake_statuspage.PAGE_ID}/incidents/{sp_id}", "PATCH")[-1]
        assert patch.json()["incident"]["status"] == "monitoring"
        assert patch.json()["incident"]["body"] == "A fix for Checkout is in place and we are monitoring the " \
                                                   "results."  # the catalog's words, not the internal update
        assert upstreams.statuspage.incidents[sp_id]["status"] == "monitoring"

        before = len(upstreams.slack.requests)
        resolved = await hub.send("incidentio", incident_payload("incident_status_updated_v2", severity="Critical"))
        assert resolved["events"][0]["kind"] == "incident.resolved"
        assert await hub.done_actions(resolved["id"]) == [
            ("hub.cancel_timers", "succeeded"), ("statuspage.resolve", "succeeded"),
            ("pagerduty.resolve", "succeeded"), ("slack.notify", "succeeded"), ("jira.create_issue", "succeeded")]
    resolve = upstreams.pagerduty.calls("/v2/enqueue")[-1].json()
    assert resolve == {"routing_key": ROUTING_KEY, "dedup_key": INCIDENT_KEY, "event_action": "resolve"}
    assert upstreams.statuspage.incidents[sp_id]["status"] == "resolved"
    assert len(upstreams.slack.requests) == before + 1
    assert upstreams.slack.requests[-1].json()["text"].startswith(":red_circle: *SEV1* :white_check_mark: Resolved "
                                                                  "after ")
    (issue_key,) = upstreams.jira.created
    fields = upstreams.jira.issues[issue_key]["fields"]
    assert fields["summary"] == "Post-mortem: INC-1482: Checkout API returning 5xx errors"
    assert fields["project"] == {"key": "OPS"} and fields["duedate"]
    state = await hub.incidents.get(INCIDENT_KEY)
    assert state["resolved_at"] and state["jira_keys"] == [issue_key]
    assert await hub.incidents.timers(INCIDENT_KEY) == {}
    timeline = [e["type"] for e in await hub.incidents.timeline(INCIDENT_KEY)]
    assert timeline.count("timer_cancelled") == 3 and "resolved" in timeline
    # the cancelled timers' actions are final on the event that armed them
    armed = await hub.actions(created["id"])
    pending = [a for a in armed.values() if a.get("timer")]
    assert pending and all(a["state"] == "skipped" and a["error"].startswith("cancelled") for a in pending)


async def test_no_postmortem_ticket_when_the_incident_already_has_a_postmortem(redis_url, redis,
                                                                               upstreams) -> None:
    settings = upstreams.settings(redis_url)
    async with Hub(settings, redis) as hub:
        await hub.send("incidentio", incident_payload("incident_created_v2"))
        resolved = await hub.send("incidentio", incident_payload("incident_status_updated_v2", postmortem=True))
    assert resolved["events"][0]["kind"] == "incident.resolved"
    assert "jira.create_issue" not in [name for name, _ in await hub.done_actions(resolved["id"])]
    assert upstreams.jira.created == []
    state = await hub.incidents.get(INCIDENT_KEY)
    assert {"href": "https://docs.google.com/document/d/1a2B3c4D5e6F7g8H9i0J", "text": "post-mortem"} in state["links"]


async def test_an_event_that_causes_no_action_says_why(redis_url, redis, upstreams) -> None:
    settings = upstreams.settings(redis_url)
    body, headers = fixture_request("github_workflow_run_completed.json")  # a run of an unnamed (not deploy) workflow
    minor = copy.deepcopy(load("datadog_alert_triggered.json"))
    minor["alert_priority"] = "P4"
    auth = {"Authorization": f"Bearer {DATADOG_TOKEN}", "Content-Type": "application/json"}
    async with Hub(settings, redis) as hub:
        run = await hub.send("github", body, headers=headers)
        alert = await hub.send("datadog", minor, headers=auth)
        alert_again = await hub.send("datadog", {**minor, "id": "another-delivery"}, headers=auth)
    assert run["state"] == "done" and run["events"] == []
    assert run["reason"].startswith("no events: workflow '' is not a deploy workflow")
    assert (await hub.store.timeline(run["id"]))[-1]["reason"] == run["reason"]
    assert alert["reason"] == ("no workflow matched: alert.firing SEV4: the conditions of statuspage-open, "
                               "alert-page did not hold")
    assert alert_again["reason"].startswith("no workflow matched")


async def test_sev2_declared_twice_pages_once_and_updates_do_not_repage(redis_url, redis, upstreams) -> None:
    settings = upstreams.settings(redis_url)
    async with Hub(settings, redis) as hub:
        first = await hub.send("incidentio", incident_payload("incident_created_v2"))
        again = await hub.send("incidentio", incident_payload("incident_created_v2"))  # another delivery id
        update = await hub.send("incidentio", incident_payload("incident_updated_v2", status=("Fixing", "live")))
    assert await hub.done_actions(first["id"]) == [("pagerduty.trigger", "succeeded"), ("slack.notify", "succeeded")]
    assert await hub.done_actions(again["id"]) == []
    (skipped,) = [e for e in await hub.store.timeline(again["id"]) if e["type"] == "already_done"]
    assert skipped["actions"][f"{INCIDENT_KEY}#1:page"] == first["id"]
    assert [a for a, _ in await hub.done_actions(update["id"])] == ["slack.notify"]  # status changed: no Statuspage
    assert len(upstreams.pagerduty.calls("/v2/enqueue")) == 1
    assert upstreams.statuspage.requests == []


async def test_followup_created_twice_makes_one_jira_issue(redis_url, redis, upstreams) -> None:
    settings = upstreams.settings(redis_url)
    body = (FIXTURES / "incidentio_followup_created.json").read_bytes()
    async with Hub(settings, redis) as hub:
        first = await hub.send("incidentio", body)
        second = await hub.send("incidentio", body)  # re-signed: a new webhook-id, so not a duplicate delivery
    assert first["delivery_id"] != second["delivery_id"]
    assert await hub.done_actions(first["id"]) == [("jira.create_issue", "succeeded")]
    assert await hub.done_actions(second["id"]) == []
    (issue_key,) = upstreams.jira.created
    fields = upstreams.jira.issues[issue_key]["fields"]
    assert fields["summary"] == "Add circuit breaker to payment provider client"
    assert INCIDENT_ID in fields["description"]
    # the follow-up's priority and assignee (Maria Lopez, found in Jira by her email)
    assert fields["priority"] == {"name": "High"} and fields["assignee"] == {"name": "mlopez"}
    assert len(upstreams.jira.calls("/rest/api/2/issue", "POST")) == 1


async def test_datadog_triggered_then_recovered_then_flapping(redis_url, redis, upstreams) -> None:
    settings = upstreams.settings(redis_url)
    triggered = load("datadog_alert_triggered.json")
    recovered = load("datadog_alert_recovered.json")
    auth = {"Authorization": f"Bearer {DATADOG_TOKEN}", "Content-Type": "application/json"}
    async with Hub(settings, redis) as hub:
        fired = await hub.send("datadog", triggered, headers=auth)
        fp = fired["events"][0]["fingerprint"]
        assert fp == "datadog:12345678:host:web-01"
        assert await hub.done_actions(fired["id"]) == [("pagerduty.trigger", "succeeded"),
                                                       ("incidentio.create_incident", "succeeded")]
        (trigger,) = upstreams.pagerduty.calls("/v2/enqueue")
        assert trigger.json()["dedup_key"] == fp and trigger.json()["payload"]["severity"] == "critical"
        (inc_create,) = upstreams.incidentio.calls("/v2/incidents", "POST")
        assert inc_create.json()["name"] == "High CPU on web-01"
        inc_id = upstreams.incidentio.created[0]
        assert await hub.incidents.resolve(f"incidentio:{inc_id}") == fp  # its webhooks join this incident

        rec = await hub.send("datadog", recovered, headers=auth)
        # the page and the incident.io incident the hub opened for the alert are resolved
        assert await hub.done_actions(rec["id"]) == [("pagerduty.resolve", "succeeded"),
                                                     ("incidentio.update", "succeeded")]
        assert upstreams.incidentio.incidents[inc_id]["incident_status"]["category"] == "closed"
        assert upstreams.pagerduty.calls("/v2/enqueue")[-1].json() == {
            "routing_key": ROUTING_KEY, "dedup_key": fp, "event_action": "resolve"}

        flap = {**triggered, "id": "7845839165284399999"}  # the monitor fires again: a new Datadog event
        again = await hub.send("datadog", flap, headers=auth)
        assert await hub.done_actions(again["id"]) == [("pagerduty.trigger", "succeeded"),
                                                       ("incidentio.create_incident", "succeeded")]
        state = await hub.incidents.get(fp)
    assert state["episode"] == 2 and state["resolved_at"] is None
    assert [a.dedup_key for a in upstreams.pagerduty.created] == [fp, fp]  # PagerDuty opened a second alert
    assert len(upstreams.incidentio.created) == 2
    ids = {a["id"] for a in (await hub.actions(fired["id"])).values()}
    assert ids == {f"{fp}#1:page", f"{fp}#1:alert-page:open-incident"}  # `identity: page` is shared


async def test_grafana_group_with_mixed_alerts(redis_url, redis, upstreams) -> None:
    """One group, three alerts: critical firing, warning firing, a resolve: one incident, paged once."""
    settings = upstreams.settings(redis_url)
    group = load("grafana_firing.json")
    critical = group["alerts"][0]
    warning = copy.deepcopy(critical)
    warning["labels"] = {**critical["labels"], "severity": "warning", "instance": "web-02:9100"}
    warning["fingerprint"] = "b0b0b0b0b0b0b0b0"
    gone = copy.deepcopy(critical)
    gone.update(status="resolved", fingerprint="c1c1c1c1c1c1c1c1", endsAt="2024-06-17T08:20:00Z")
    group["alerts"] = [critical, warning, gone]
    async with Hub(settings, redis) as hub:
        done = await hub.send("grafana", group)
    kinds = [(e["kind"], e["severity"], e["fingerprint"]) for e in done["events"]]
    assert kinds == [("alert.firing", "SEV1", "a3f1c2d4e5b60789"), ("alert.firing", "SEV3", "b0b0b0b0b0b0b0b0"),
                     ("alert.resolved", "SEV1", "c1c1c1c1c1c1c1c1")]
    assert await hub.done_actions(done["id"]) == [("pagerduty.trigger", "succeeded"),
                                                  ("incidentio.create_incident", "succeeded")]
    # the group is one incident (issue 12): one page, keyed by the group; the resolved alert does
    # not resolve it (the group is still firing) and the warning does not lower its severity
    (page,) = upstreams.pagerduty.calls("/v2/enqueue")
    key = page.json()["dedup_key"]
    assert key.startswith("grafana:group:")
    assert page.json()["payload"]["source"] == "grafana"
    state = await hub.incidents.get(key)
    assert state["page_dedup_key"] == key and state["resolved_at"] is None and state["severity"] == "SEV1"
    assert await hub.incidents.get("b0b0b0b0b0b0b0b0") is None  # no incident of its own
    members = await alert_groups.members(redis, key)
    assert {fp: m["status"] for fp, m in members.items()} == {
        "a3f1c2d4e5b60789": "firing", "b0b0b0b0b0b0b0b0": "firing", "c1c1c1c1c1c1c1c1": "resolved"}


async def test_failed_production_deploy_then_incident_links_the_deploy(redis_url, redis, upstreams,
                                                                      monkeypatch) -> None:
    monkeypatch.setenv("PD_KEY_PAYMENTS", "PAYMENTSKEY000000000000000000000")
    settings = upstreams.settings(redis_url, hub_config=RULES / "catalog.yaml")
    upstreams.seed_incident()
    body, headers = github_deploy(at=time.time() - 60)  # GitHub's own time of the deploy: a minute ago
    async with Hub(settings, redis) as hub:
        deploy = await hub.send("github", body, headers=headers)
        assert await hub.done_actions(deploy["id"]) == [("slack.notify", "succeeded")]
        failed = upstreams.slack.requests[0].json()
        # the catalog service and its owner, and a page a person can open (never api.github.com)
        assert "production failed: checkout-api, owned by payments" in failed["text"]
        assert "<https://github.com/Codertocat/Hello-World|repository>" in json.dumps(failed["blocks"])
        assert "api.github.com" not in json.dumps(failed)
        declared = await hub.send("incidentio", incident_payload("incident_created_v2"))
    assert declared["events"][0]["services"] == ["Payments"]
    assert await hub.done_actions(declared["id"]) == [
        ("pagerduty.trigger", "succeeded"), ("slack.notify", "succeeded"),   # page-on-call
        ("incidentio.add_note", "succeeded"), ("slack.notify", "succeeded")]  # recent-deploy
    (note,) = upstreams.incidentio.timeline.values()
    assert note["incident_id"] == INCIDENT_ID
    assert note["description"] == (
        "Deployed shortly before this incident: Codertocat/Hello-World@master (f95f852bd8fc) by Codertocat, failed: "
        "https://github.com/Codertocat/Hello-World")
    notice = upstreams.slack.requests[-1].json()
    assert "was deployed to production shortly before" in notice["text"]
    state = await hub.incidents.get(INCIDENT_KEY)
    assert state["services"] == ["Payments"]
    assert [d["environment"] for d in state["deploys"]] == ["production"]
    # the page went to the service's own routing key from the catalog (env reference)
    assert upstreams.pagerduty.calls("/v2/enqueue")[0].json()["routing_key"] == "PAYMENTSKEY000000000000000000000"


async def test_pages_through_opsgenie_when_pagerduty_is_not_set_up(redis_url, redis, upstreams) -> None:
    settings = upstreams.settings(redis_url, pagerduty_routing_key=None)
    async with Hub(settings, redis) as hub:
        declared = await hub.send("incidentio", incident_payload("incident_created_v2"))
        assert await hub.done_actions(declared["id"]) == [("opsgenie.create", "succeeded"),
                                                          ("slack.notify", "succeeded")]
        resolved = await hub.send("incidentio", incident_payload("incident_status_updated_v2"))
    assert [a for a, _ in await hub.done_actions(resolved["id"])] == [
        "hub.cancel_timers", "opsgenie.close", "slack.notify", "jira.create_issue"]
    create = upstreams.opsgenie.calls("/v2/alerts", "POST")[0].json()
    assert create["alias"] == INCIDENT_KEY and create["priority"] == "P2"
    assert create["message"] == "[SEV2] INC-1482: Checkout API returning 5xx errors"
    close = upstreams.opsgenie.requests[-1]
    assert close.path.endswith("/close") and close.query["identifierType"] == "alias"
    assert upstreams.pagerduty.requests == []


async def test_incident_opened_for_an_alert_joins_the_alert_and_pages_once(redis_url, redis, upstreams) -> None:
    """Datadog SEV1 pages and opens an incident.io incident; that incident's webhook must not page again."""
    settings = upstreams.settings(redis_url)
    auth = {"Authorization": f"Bearer {DATADOG_TOKEN}", "Content-Type": "application/json"}
    async with Hub(settings, redis) as hub:
        fired = await hub.send("datadog", load("datadog_alert_triggered.json"), headers=auth)
        fp = fired["events"][0]["fingerprint"]
        inc_id = upstreams.incidentio.created[0]
        created = incident_payload("incident_created_v2", severity="Critical")
        created["public_incident.incident_created_v2"]["id"] = inc_id
        declared = await hub.send("incidentio", created)
    assert declared["events"][0]["fingerprint"] == f"incidentio:{inc_id}"
    # the incident.io incident is the alert's incident: the page is already done; no Statuspage, since
    # the service did not opt in to the public page
    assert await hub.done_actions(declared["id"]) == [("slack.notify", "succeeded")]
    assert len(upstreams.pagerduty.calls("/v2/enqueue")) == 1
    assert upstreams.statuspage.requests == []
    state = await hub.incidents.get(fp)
    assert state["incidentio_id"] == inc_id and state["statuspage_incident_id"] is None
    assert await hub.incidents.get(f"incidentio:{inc_id}") is None


async def test_sev1_alert_on_an_opted_in_service_public_wording_and_its_resolve_closes_everything(
        redis_url, redis, upstreams) -> None:
    """Statuspage says only the catalog's words; the alert's resolve resolves the Statuspage incident
    and the incident.io incident the hub opened, not only the page."""
    settings = upstreams.settings(redis_url, hub_config=RULES / "public.yaml")
    auth = {"Authorization": f"Bearer {DATADOG_TOKEN}", "Content-Type": "application/json"}
    triggered = load("datadog_alert_triggered.json")
    async with Hub(settings, redis) as hub:
        fired = await hub.send("datadog", triggered, headers=auth)
        assert fired["events"][0]["severity"] == "SEV1"
        assert sorted(n for n, _ in await hub.done_actions(fired["id"])) == [
            "incidentio.create_incident", "pagerduty.trigger", "statuspage.open"]
        (sp_create,) = upstreams.statuspage.calls(method="POST")
        incident = sp_create.json()["incident"]
        assert incident["name"] == "Degraded performance of Checkout"
        assert incident["body"] == "We are investigating degraded performance of Checkout."
        alert_words = {triggered["title"], fired["events"][0]["title"], fired["events"][0]["summary"]} - {""}
        assert not any(w in json.dumps(incident) for w in alert_words)
        inc_id = upstreams.incidentio.created[0]
        sp_id = upstreams.statuspage.created[0]

        recovered = await hub.send("datadog", load("datadog_alert_recovered.json"), headers=auth)
        assert await hub.done_actions(recovered["id"]) == [
            ("pagerduty.resolve", "succeeded"), ("statuspage.resolve", "succeeded"), ("incidentio.update", "succeeded")]
    assert upstreams.statuspage.incidents[sp_id]["status"] == "resolved"
    resolve = upstreams.statuspage.calls(f"/v1/pages/{fake_statuspage.PAGE_ID}/incidents/{sp_id}", "PATCH")[-1]
    assert resolve.json()["incident"]["body"] == "Checkout is operating normally again."
    assert upstreams.incidentio.incidents[inc_id]["incident_status"]["category"] == "closed"


async def test_a_later_plan_of_an_event_repeats_what_it_decided_first(redis_url, redis, upstreams) -> None:
    """Pinned context: re-planning an old event (dry-run replay) gives the same actions, whatever happened since."""
    from hub.rules import load_rules
    from hub.storage.ratelimit import RateLimiter
    from hub.worker.actions import ActionRunner
    from hub.worker.processor import Processor

    settings = upstreams.settings(redis_url, hub_config=RULES / "public.yaml")
    async with Hub(settings, redis) as hub:
        await hub.send("incidentio", incident_payload("incident_created_v2", severity="Critical"))
        change = await hub.send("incidentio", incident_payload(
            "incident_status_updated_v2", severity="Critical", status=("Monitoring", "live"),
            previous=("Investigating", "live")))
        await hub.send("incidentio", incident_payload("incident_status_updated_v2", severity="Critical"))
    planner = Processor(hub.store, load_rules(RULES / "public.yaml"), ActionRunner(hub.store, {}, RateLimiter(redis)))
    _, planned = await planner.plan(await hub.store.get(change["id"]))
    ran = await hub.actions(change["id"])
    expected = [f"{change['id']}.0:incident-changed:statuspage-update", f"{change['id']}.0:incident-changed:notify"]
    assert [p.id for p in planned] == expected and sorted(ran) == sorted(expected)
    assert planned[0].params["status"] == "monitoring"


async def test_an_optional_team_key_that_is_unset_falls_back_on_the_record(redis_url, redis, upstreams, tmp_path,
                                                                          monkeypatch) -> None:
    """`env:NAME?` unset: the page goes to the global key, and both timelines say so and why."""
    monkeypatch.delenv("PD_KEY_OPTIONAL_TEAM", raising=False)
    rules = tmp_path / "hub.yaml"
    rules.write_text("version: 1\ncatalog:\n  services:\n    checkout-api: {aliases: [Payments], team: payments}\n"
                     "  teams:\n    payments: {pagerduty_routing_key: 'env:PD_KEY_OPTIONAL_TEAM?'}\n"
                     "  sources:\n    incidentio: {services_field: Affected Team}\n")
    settings = upstreams.settings(redis_url, hub_config=rules)
    async with Hub(settings, redis) as hub:
        declared = await hub.send("incidentio", incident_payload("incident_created_v2", severity="Critical"))
        (page,) = upstreams.pagerduty.calls("/v2/enqueue")
        assert page.json()["routing_key"] == ROUTING_KEY
        lines = [e for e in await hub.store.timeline(declared["id"]) if e["type"] == "fallback"]
        on_incident = [e for e in await hub.incidents.timeline(INCIDENT_KEY) if e["type"] == "fallback"]
    (line,) = lines
    assert line["name"] == "pagerduty.trigger"
    assert line["reason"].startswith("fell back to the global PAGERDUTY_ROUTING_KEY because team payments")
    assert "PD_KEY_OPTIONAL_TEAM" in line["reason"]
    assert [e["reason"] for e in on_incident] == [line["reason"]]


async def test_a_team_key_that_is_set_is_used_without_a_fallback_line(redis_url, redis, upstreams, tmp_path,
                                                                     monkeypatch) -> None:
    monkeypatch.setenv("PD_KEY_OPTIONAL_TEAM", "TEAMKEY0000000000000000000000001")
    rules = tmp_path / "hub.yaml"
    rules.write_text("version: 1\ncatalog:\n  services:\n    checkout-api: {aliases: [Payments], team: payments}\n"
                     "  teams:\n    payments: {pagerduty_routing_key: 'env:PD_KEY_OPTIONAL_TEAM?'}\n"
                     "  sources:\n    incidentio: {services_field: Affected Team}\n")
    settings = upstreams.settings(redis_url, hub_config=rules)
    async with Hub(settings, redis) as hub:
        declared = await hub.send("incidentio", incident_payload("incident_created_v2", severity="Critical"))
        timeline = await hub.store.timeline(declared["id"])
    assert upstreams.pagerduty.calls("/v2/enqueue")[0].json()["routing_key"] == "TEAMKEY0000000000000000000000001"
    assert "fallback" not in [e["type"] for e in timeline]
