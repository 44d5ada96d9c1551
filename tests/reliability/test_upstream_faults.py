"""Every outside system misbehaves: 500s, 429s with Retry-After, stalls past the client's
timeout (the request still completes on the server, as a real one would), connection resets.

Every action is delivered exactly once (idempotency keys, the creation ledger's look-up after
an ambiguous attempt), or dead-lettered with its reason (a dead page also pages through the
other pager: the fallback); `incident-hub replay --failed` then delivers the dead ones, once,
and a second replay finds nothing to do (nor pages through the fallback again).

The connectors' retry policies are class constants (no setting shrinks them), so the fault
counts are kept small: one round of the four faults per connector, interleaved with normal
answers. Dead letters come from answers that end an action at once (a 4xx) and, for Slack
(6 attempts, 1 s base backoff), from running out of attempts.
"""

from __future__ import annotations

import json
import time

import pytest

from connectors.base import stable_ref
from tests.fakes.base import Fault
from tests.reliability import payloads as P
from tests.reliability.harness import RULES, Sender, dead_letters, repeats, wait_final

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

CLIENT_TIMEOUT = {"jira": 15.0}  # the connectors' `timeout`; 10 s for the others


def transient(connector: str) -> list[Fault]:
    """500, 429 + Retry-After, a stall past the client timeout, a reset: one each, to whichever
    requests come next (every fault causes a retry, so all four are always reached)."""
    stall = CLIENT_TIMEOUT.get(connector, 10.0) + 1
    return [Fault(status=500, body="upstream exploded"), Fault(status=429, retry_after="1", body="slow down"),
            Fault(stall=stall), Fault(reset=True)]


def workload() -> tuple[list[P.Webhook], dict[str, P.Webhook]]:
    """(healthy, doomed): the doomed webhooks each carry one action an upstream will refuse."""
    healthy = [P.datadog_alert(n) for n in range(3)]
    healthy += [P.grafana_alert(n, labels={"service": "og-svc"}) for n in range(2)]  # pages through OpsGenie
    healthy += [P.incident_declared(n) for n in range(2)]  # SEV1: PagerDuty, Slack, Statuspage
    healthy += [P.followup(n, incident=0) for n in range(2)]
    healthy += [P.deploy_failed("faults")]
    doomed = {
        "pagerduty": P.datadog_alert(100),
        "incidentio": P.datadog_alert(101, tag=" doomed-incidentio"),
        "opsgenie": P.grafana_alert(11, labels={"service": "og-svc"}),
        "statuspage": P.incident_declared(50),
        "jira": P.followup(50, incident=50),
        "slack": P.incident_declared(51, "Major"),  # SEV2: page and Slack, no Statuspage
    }
    return healthy, doomed


def doom(upstreams, doomed: dict[str, P.Webhook]) -> dict[str, int]:
    """Target one action per connector with answers that end it; returns the faults per connector."""
    rules = {
        "pagerduty": ("POST", "/v2/enqueue", doomed["pagerduty"].keys[0],
                      [Fault(status=400, body='{"status":"invalid event","errors":["rejected by test"]}')]),
        "incidentio": ("POST", "/v2/incidents", "doomed-incidentio",
                       [Fault(status=422, body='{"type":"validation_error","errors":[{"code":"rejected"}]}')]),
        "opsgenie": ("POST", "/v2/alerts", doomed["opsgenie"].keys[0],
                     [Fault(status=422, body='{"message":"rejected by test"}')]),
        "statuspage": ("POST", "/v1/pages/", stable_ref(doomed["statuspage"].keys[0]),  # public names repeat
                       [Fault(status=422, body='{"error":"rejected by test"}')]),
        "jira": ("POST", "/rest/api/2/issue", "Follow-up 50 ",
                 [Fault(status=400, body='{"errorMessages":["rejected by test"],"errors":{}}')]),
        "slack": ("POST", "/services/", "INC-9051:", [Fault(status=500, body="internal_error")] * 6),
    }
    for name, (method, path, marker, faults) in rules.items():
        upstreams.all[name].target(method, path, faults, marker=marker)
    return {name: len(rule[3]) for name, rule in rules.items()}


def delivered(upstreams) -> dict[str, list[str]]:
    """What each outside system holds, as identities (repeats would be doubles)."""
    og_alerts = [alias for alias, alerts in upstreams.opsgenie.alerts.items() for _ in alerts]
    return {
        "pagerduty": [a.dedup_key for a in upstreams.pagerduty.created],
        "opsgenie": og_alerts,
        "incidentio": [i["name"] for i in upstreams.incidentio.incidents.values()],
        "statuspage": [i["metadata"]["incident_hub"]["ref"] for i in upstreams.statuspage.incidents.values()],
        "jira": [upstreams.jira.issues[k]["fields"]["summary"] for k in upstreams.jira.created],
        "slack": list(upstreams.slack.delivered),
    }


async def test_upstream_faults_deliver_once_or_dead_letter_then_replay_once(make_cluster, upstreams,
                                                                            figures) -> None:
    healthy, doomed = workload()
    for name, fake in upstreams.all.items():
        fake.faults.extend(transient(name))
    doomed_faults = doom(upstreams, doomed)
    cluster = await make_cluster({**upstreams.env(), "HUB_CONFIG": str(RULES / "faults.yaml"),
                                  "HUB_JOB_TIMEOUT": "60", "HUB_SWEEP_GRACE": "30"}, workers=2).start()
    redis = cluster.redis_client
    started = time.monotonic()
    async with Sender(cluster.url) as sender:
        sent = await sender.post_all([*healthy, *doomed.values()])
    assert [s.status for s in sent] == [202] * len(sent)
    ids = [s.event_id for s in sent]
    by_hook = dict(zip([h.label for h in [*healthy, *doomed.values()]], ids, strict=True))

    states = await wait_final(redis, ids, timeout=200, cluster=cluster)
    settled = time.monotonic()
    first = delivered(upstreams)
    letters = await dead_letters(redis)
    status, listed = await cluster.admin("GET", "/admin/dead-letters?limit=50")  # what the operator sees
    assert status == 200, listed
    reasons = {row["connector"]: row["error"] for row in listed["dead_letters"]}
    responses = {row["connector"]: row["last_response"] for row in listed["dead_letters"]}
    transient_injected = {name: sum(n for kind, n in fake.injected.items()) - doomed_faults[name]
                          for name, fake in upstreams.all.items()}

    replay = cluster.cli("replay", "--failed", "--json")
    assert replay.returncode == 0, replay.stderr
    replayed = json.loads(replay.stdout)
    after = await wait_final(redis, ids, timeout=120, cluster=cluster)
    replay_done = time.monotonic()
    again = cluster.cli("replay", "--failed", "--json")
    final = delivered(upstreams)
    figures.update(
        events=len(ids), faults_injected=upstreams.faults_injected(),
        transient_faults_per_connector=transient_injected, dead_lettered=reasons,
        states_before_replay={s: list(states.values()).count(s) for s in set(states.values())},
        seconds_to_settle=round(settled - started, 1), replayed_events=replayed.get("total"),
        seconds_replay_to_done=round(replay_done - settled, 1),
        lost=sum(1 for s in after.values() if s != "done"),
        duplicated={k: repeats(v) for k, v in final.items() if k != "slack" and repeats(v)},
        slack_repeated_messages=repeats(final["slack"]))

    # Before the replay: every healthy action exactly once, each doomed one dead with its reason.
    assert {by_hook[h.label]: states[by_hook[h.label]] for h in healthy} == dict.fromkeys(
        [by_hook[h.label] for h in healthy], "done")
    # the follow-up's one action is the Jira issue: all its actions dead makes the event dead
    assert {n: states[by_hook[h.label]] for n, h in doomed.items()} == {
        **dict.fromkeys(doomed, "partially_failed"), "jira": "dead"}
    assert sorted(reasons) == sorted(doomed) and len(letters) == len(listed["dead_letters"]) == len(doomed)
    assert "rejected by test" in responses["pagerduty"]  # the upstream's answer is kept as evidence
    assert reasons["slack"].startswith("out of attempts (6): HTTP 500")
    for name in ("pagerduty", "incidentio", "opsgenie", "statuspage", "jira"):
        assert reasons[name].startswith(("HTTP 400", "HTTP 422")), (name, reasons[name])
    assert transient_injected == dict.fromkeys(upstreams.all, 4)  # each connector met all four faults
    assert doomed["pagerduty"].keys[0] not in first["pagerduty"]
    assert stable_ref(doomed["statuspage"].keys[0]) not in first["statuspage"]
    # each dead page went out through the other pager at once (the fallback pager), keyed like the page
    assert doomed["pagerduty"].keys[0] in first["opsgenie"] and doomed["opsgenie"].keys[0] in first["pagerduty"]
    assert "Follow-up 50 of incident 50" not in first["jira"]

    # After the replay: the dead ones delivered, once; nothing else sent twice; nothing left to replay.
    assert replayed["total"] == len(doomed)
    assert set(after.values()) == {"done"}
    assert await dead_letters(redis) == []
    for name in ("pagerduty", "opsgenie", "incidentio", "statuspage", "jira"):
        assert repeats(final[name]) == {}, (name, final[name])
        assert len(final[name]) == len(first[name]) + 1, (name, first[name], final[name])
    hooks = [*healthy, *doomed.values()]
    assert set(final["pagerduty"]) == {P.incident_key(e) for h in hooks for e in h.events
                                       if e.kind == "incident.declared" or h.source == "datadog"} | {
        doomed["opsgenie"].keys[0]}  # the fallback for the dead OpsGenie page
    # a Grafana alert pages under its notification group's incident key (issue 12)
    assert set(final["opsgenie"]) == {P.incident_key(e) for h in hooks for e in h.events if h.source == "grafana"} | {
        doomed["pagerduty"].keys[0]}  # the fallback for the dead PagerDuty page
    assert len(set(final["slack"])) == len(set(first["slack"])) + 1  # Slack: nothing missing
    assert json.loads(again.stdout)["total"] == 0
