"""Workers SIGKILLed at random moments while 500 signed webhooks are in flight.

Two `incident-hub worker` processes against one Redis and every connector's fake; one of them
is killed (SIGKILL: no shutdown code runs) three times at random moments and started again.
Afterwards every accepted event is final, and the outside world saw each creation once:
one PagerDuty alert *opened* per dedup key, one incident.io incident per paging alert, one
Statuspage incident per SEV1 incident, one Jira issue per follow-up and per post-mortem.

`RELIABILITY_SEED` replays a run's kill moments (the seed is in the figures).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from typing import Any

import pytest

from hub.core.events import Severity
from hub.storage.event_store import FINAL_STATES
from hub.storage.incidents import IncidentStore
from tests.reliability import payloads as P
from tests.reliability.harness import RULES, Sender, event_states, latencies, repeats, spread, wait_final

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

KILLS = 3
RATE = 60.0  # webhooks per second: the batch stays in flight for several seconds
LATENCY = 0.1  # seconds each outside call takes, so a killed worker is always mid-call


def workload(rng: random.Random) -> tuple[list[P.Webhook], list[P.Webhook]]:
    """(opening, closing): alerts firing at SEV1/SEV2 from three sources, incidents declared,
    follow-ups and failed deploys; then recoveries and resolutions of some of them."""
    opening = [P.datadog_alert(n, "P1" if n % 2 else "P2") for n in range(100)]
    opening += [P.grafana_alert(n, "critical" if n % 2 else "error") for n in range(60)]
    opening += [P.alertmanager_group(n, "critical" if n % 2 else "high") for n in range(60)]
    opening += [P.incident_declared(n, "Critical" if n % 2 == 0 else "Major") for n in range(80)]
    opening += [P.followup(n, incident=n) for n in range(50)]
    opening += [P.deploy_failed(n) for n in range(40)]
    rng.shuffle(opening)
    closing = [P.datadog_alert(n, "P1" if n % 2 else "P2", transition="Recovered") for n in range(30)]
    closing += [P.grafana_alert(n, "critical" if n % 2 else "error", status="resolved") for n in range(20)]
    closing += [P.alertmanager_group(n, "critical" if n % 2 else "high", status="resolved") for n in range(20)]
    closing += [P.incident_resolved(n, "Critical" if n % 2 == 0 else "Major") for n in range(40)]
    rng.shuffle(closing)
    return opening, closing


async def cluster_timeline(redis: Any, event_id: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in await redis.lrange(f"hub:ev:{event_id}:timeline", 0, -1)]


def expectations(hooks: list[P.Webhook]) -> dict[str, Any]:
    """What the outside world must see once each, derived from the payloads' own normalisation."""
    paging = {P.incident_key(e) for h in hooks for e in h.events
              if e.kind in ("alert.firing", "incident.declared") and e.severity in (Severity.SEV1, Severity.SEV2)}
    alerts = {P.incident_key(e) for h in hooks for e in h.events
              if e.kind == "alert.firing" and e.severity in (Severity.SEV1, Severity.SEV2)}
    sev1 = {P.incident_key(e) for h in hooks for e in h.events
            if e.kind == "incident.declared" and e.severity == Severity.SEV1}
    followups = {e.fingerprint for h in hooks for e in h.events if e.kind == "followup.created"}
    resolved = {P.incident_key(e) for h in hooks for e in h.events
                if e.kind == "incident.resolved" and e.severity in (Severity.SEV1, Severity.SEV2)}
    declared = sum(1 for h in hooks for e in h.events if e.kind == "incident.declared")
    closed = sum(1 for h in hooks for e in h.events if e.kind == "incident.resolved")
    deploys = sum(1 for h in hooks for e in h.events if e.kind == "deploy.failed")
    return {"pagerduty": paging, "incidentio": alerts, "statuspage": sev1, "jira": len(followups) + len(resolved),
            "slack": declared + closed + deploys}


async def test_sigkilled_workers_lose_nothing_and_double_nothing(make_cluster, upstreams, figures) -> None:
    seed = int(os.environ.get("RELIABILITY_SEED") or random.randrange(1 << 30))
    rng = random.Random(seed)
    opening, closing = workload(rng)
    expected = expectations(opening + closing)
    upstreams.slow_down(LATENCY)
    cluster = await make_cluster({**upstreams.env(), "HUB_CONFIG": str(RULES / "public.yaml"), "HUB_JOB_TIMEOUT": "3",
                                  "HUB_SWEEP_GRACE": "5"},
                                 workers=2).start()
    redis = cluster.redis_client
    send_seconds = (len(opening) + len(closing)) / RATE
    window = send_seconds / KILLS  # one kill in each third of the time webhooks keep arriving
    kill_at = [rng.uniform(i * window + 0.5, (i + 1) * window) for i in range(KILLS)]
    kills: list[dict[str, Any]] = []
    started = time.monotonic()

    async def killer() -> None:
        for at in kill_at:
            await asyncio.sleep(max(0.0, started + at - time.monotonic()))
            while True:  # a worker taking jobs (not one still starting) while events are in flight
                index = rng.randrange(len(cluster.workers))
                in_flight = await redis.zcard("hub:pending")
                if in_flight and await cluster.worker_beating(index):
                    break
                await asyncio.sleep(0.01)
            pid = await asyncio.to_thread(cluster.kill_worker, index)
            kills.append({"at_s": round(time.monotonic() - started, 2), "worker": index, "pid": pid,
                          "events_in_flight": in_flight})

    async with Sender(cluster.url, concurrency=16) as sender:
        kill_task = asyncio.create_task(killer())
        sent = await sender.post_all(opening, rate=RATE)
        sent += await sender.post_all(closing, rate=RATE)
        await kill_task
    assert [s.status for s in sent] == [202] * len(sent), {s.status: s.body for s in sent if s.status != 202}
    assert all(s.body["status"] == "accepted" for s in sent)
    ids = [s.event_id for s in sent]
    assert len(set(ids)) == len(ids) == 500

    states = await wait_final(redis, ids, timeout=300, cluster=cluster)
    finished = time.monotonic()
    states = await event_states(redis, ids)
    took = await latencies(redis, ids)
    lost = [i for i, s in states.items() if s not in FINAL_STATES]
    slowest = max(took, key=took.get)
    received = int(await redis.hget(f"hub:ev:{slowest}", "received_at"))
    slowest_story = [{"after_s": round((e["at"] - received) / 1000, 1),
                      **{k: e[k] for k in ("type", "state", "name", "by", "error", "waiting") if e.get(k)}}
                     for e in await cluster_timeline(redis, slowest)]

    pd_created = [a.dedup_key for a in upstreams.pagerduty.created]
    declared_keys = {P.incident_key(e) for h in opening for e in h.events if e.kind == "incident.declared"}
    recovered = {P.incident_key(e) for h in closing for e in h.events if e.kind in ("alert.resolved",
                                                                                 "incident.resolved")}
    sp_refs = [i["metadata"]["incident_hub"]["ref"] for i in upstreams.statuspage.incidents.values()]
    jira_labels = [next(label for label in upstreams.jira.issues[k]["fields"]["labels"]
                        if label.startswith("incident-hub-")) for k in upstreams.jira.created]
    duplicated = {"pagerduty": repeats(pd_created), "statuspage": repeats(sp_refs), "jira": repeats(jira_labels)}
    figures.update(
        seed=seed, events=len(ids), workers=2, kills=kills, lost=len(lost),
        duplicated=sum(len(v) for v in duplicated.values()),
        states={s: list(states.values()).count(s) for s in set(states.values())},
        pagerduty_alerts_opened=len(pd_created), pagerduty_requests=len(upstreams.pagerduty.requests),
        not_paged_as_recovered_first=len(expected["pagerduty"] - set(pd_created)),
        pages_left_open_after_recovery=sorted(key for (_route, key), a in upstreams.pagerduty.alerts.items()
                                              if key in recovered and a.status != "resolved"),
        not_paged=sorted(expected["pagerduty"] - set(pd_created)),
        incidentio_incidents=len(upstreams.incidentio.created), statuspage_incidents=len(sp_refs),
        jira_issues=len(jira_labels), slack_messages=len(upstreams.slack.delivered),
        slack_messages_expected=expected["slack"],
        seconds_received_to_final=spread(took.values()),
        events_rerun_after_a_kill=sum(1 for t in took.values() if t > 3 + 10),  # past arq's in-progress lease
        events_final_later_than_30s=sum(1 for t in took.values() if t > 30), slowest_event=slowest_story,
        seconds_to_all_final=round(finished - started, 1),
        seconds_after_last_kill=round(finished - started - kills[-1]["at_s"], 1))

    left_open = figures["pages_left_open_after_recovery"]
    stories = {}
    for key in left_open[:3]:  # what the hub recorded of a page left open, to tell why
        store = IncidentStore(redis, 86400)
        rec = await store.get(key) or {}
        stories[key] = {"incident": {k: rec.get(k) for k in ("episode", "declared_at", "resolved_at",
                                                               "page_dedup_key")},
                        "timeline": [{k: e.get(k) for k in ("at", "type", "event", "action", "state", "error")
                                      if e.get(k) is not None} for e in await store.timeline(key)][:30]}
    figures["left_open_stories"] = stories
    assert len(kills) == KILLS
    assert lost == []
    assert set(states.values()) == {"done"}, figures["states"]
    assert duplicated == {"pagerduty": {}, "statuspage": {}, "jira": {}}
    # Every paging alert and incident paged, once; except one whose recovery or resolution
    # the hub received (and worked, the opening event's worker having been killed) before it
    # worked the opening event: it was already over, so paging it would open a page nothing
    # resolves, and its public status page and announcement would open after the resolution.
    unpaged = expected["pagerduty"] - set(pd_created)
    assert set(pd_created) <= expected["pagerduty"]
    assert unpaged <= recovered, sorted(unpaged - recovered)
    for key in unpaged:
        incident = await IncidentStore(redis, 86400).get(key)
        assert incident is not None and incident["resolved_at"] is not None, (key, incident)
    # an incident.io or Statuspage incident the rerun of a killed event would open after the
    # recovery is not opened (nothing would ever close it); every other one is, once
    assert len(expected["incidentio"] - recovered) <= len(upstreams.incidentio.created) \
        <= len(expected["incidentio"] - unpaged)
    assert len(expected["statuspage"] - recovered) <= len(sp_refs) <= len(expected["statuspage"] - unpaged)
    unannounced = len(unpaged & declared_keys)  # their announcement is a step of the paging workflow
    assert len(upstreams.slack.delivered) >= expected["slack"] - unannounced  # Slack cannot deduplicate
    assert figures["pages_left_open_after_recovery"] == []  # a page the recovery overtook is closed too
    assert len(jira_labels) == expected["jira"]
