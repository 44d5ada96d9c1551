"""Timers end to end: escalation with seconds-long delays, acks, races, reminders, restarts, reload.

Rules come from tests/data/rules (escalation after 2 s at SEV1, reminders every second).
Waits are on conditions (an action record turning final), never on fixed sleeps.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import pytest

from hub.storage.event_store import ARQ_QUEUE, now_ms
from tests.conftest import wait_for
from tests.test_workflows_e2e import (
    INCIDENT_ID,
    INCIDENT_KEY,
    RULES,
    Hub,
    Upstreams,
    incident_payload,
)

L2_KEY = "L2KEY00000000000000000000000000A"


def pd_ack(incident_key: str, event_id: str = "01EVACK00000000000000001") -> dict[str, Any]:
    """A PagerDuty v3 `incident.acknowledged` webhook for the page with this dedup key."""
    return {"event": {
        "id": event_id, "event_type": "incident.acknowledged", "resource_type": "incident",
        "occurred_at": "2024-06-17T08:16:40.123Z", "agent": {"id": "PUSR001", "type": "user_reference",
                                                              "summary": "Maria Lopez"},
        "client": None,
        "data": {"id": "Q2K1T0NZ7ZABCD", "type": "incident", "number": 1482, "status": "acknowledged",
                 "incident_key": incident_key, "title": "Checkout API returning 5xx errors",
                 "html_url": "https://acme.pagerduty.com/incidents/Q2K1T0NZ7ZABCD", "urgency": "high",
                 "created_at": "2024-06-17T08:15:12Z",
                 "service": {"id": "PSVC001", "type": "service_reference", "summary": "checkout"}}}}


@pytest.fixture
def escalation(upstreams: Upstreams, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("PD_KEY_L2", L2_KEY)
    upstreams.seed_incident()
    return upstreams.settings(redis_url, hub_config=RULES / "escalation.yaml")


def escalation_records(actions: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {a["id"].rsplit(":", 1)[-1]: a for a in actions.values() if a.get("timer")}


async def test_escalation_fires_when_nobody_acknowledges(redis, upstreams, escalation) -> None:
    async with Hub(escalation, redis) as hub:
        declared = await hub.send("incidentio", incident_payload("incident_created_v2", severity="Critical"))
        timers = await hub.incidents.timers(INCIDENT_KEY)
        (spec,) = timers.values()
        assert spec["due_ms"] - declared["received_at"] == 2000

        async def escalated() -> Any:
            recs = escalation_records(await hub.actions(declared["id"]))
            done = recs and all(r["state"] == "succeeded" for r in recs.values())
            # the firing ends by unlisting the timer: leaving the Hub earlier would stop it midway
            return recs if done and not await hub.incidents.timers(INCIDENT_KEY) else None
        recs = await wait_for(escalated, timeout=10)
    assert sorted(recs) == ["escalate-note", "escalate-notify", "escalate-page"]
    pages = [r.json() for r in upstreams.pagerduty.calls("/v2/enqueue")]
    assert [(p["routing_key"], p["dedup_key"]) for p in pages] == [
        (escalation.pagerduty_routing_key, INCIDENT_KEY), (L2_KEY, f"{INCIDENT_KEY}:escalation-1")]
    assert pages[1]["payload"]["summary"].startswith("[SEV1] not acknowledged: INC-1482")
    (notice,) = upstreams.slack.requests
    assert notice.json()["text"] == "<@U024BE7LH> INC-1482: Checkout API returning 5xx errors not acknowledged: " \
                                    "paging payments secondary"
    (note,) = upstreams.incidentio.timeline.values()
    assert note["incident_id"] == INCIDENT_ID and "paged payments secondary" in note["description"]
    state = await hub.incidents.get(INCIDENT_KEY)
    assert state["escalation_level"] == 1 and state["escalated_at"] >= declared["received_at"] + 2000
    assert await hub.incidents.timers(INCIDENT_KEY) == {}
    assert await hub.incidents.resolve(f"{INCIDENT_KEY}:escalation-1") == INCIDENT_KEY  # its ack finds the incident
    assert "timer_fired" in [e["type"] for e in await hub.incidents.timeline(INCIDENT_KEY)]


async def test_escalation_does_not_fire_after_a_pagerduty_ack(redis, upstreams, escalation) -> None:
    async with Hub(escalation, redis) as hub:
        declared = await hub.send("incidentio", incident_payload("incident_created_v2", severity="Critical"))
        ack = await hub.send("pagerduty", pd_ack(INCIDENT_KEY))
        assert ack["events"][0]["kind"] == "page.acknowledged"

        async def settled() -> Any:
            recs = escalation_records(await hub.actions(declared["id"]))
            return recs if recs and all(r["state"] == "skipped" for r in recs.values()) else None
        recs = await wait_for(settled, timeout=10)
    assert {r["error"] for r in recs.values()} == {"not needed: acknowledged"}
    assert len(upstreams.pagerduty.calls("/v2/enqueue")) == 1  # the first page only
    assert upstreams.slack.requests == [] and upstreams.incidentio.timeline == {}
    state = await hub.incidents.get(INCIDENT_KEY)
    assert state["acknowledged_by"] == "pagerduty" and state["acknowledged_at"] >= declared["received_at"]
    assert state["escalation_level"] == 0


async def test_leaving_triage_counts_as_acknowledged(redis, upstreams, escalation) -> None:
    async with Hub(escalation, redis) as hub:
        declared = await hub.send("incidentio", incident_payload("incident_created_v2", severity="Critical",
                                                                 status=("Triage", "triage")))
        moved = await hub.send("incidentio", incident_payload(
            "incident_status_updated_v2", severity="Critical", status=("Investigating", "live"),
            previous=("Triage", "triage")))
        assert moved["events"][0]["attributes"]["left_triage"] is True

        async def settled() -> Any:
            recs = escalation_records(await hub.actions(declared["id"]))
            return recs if recs and all(r["state"] == "skipped" for r in recs.values()) else None
        await wait_for(settled, timeout=10)
    assert (await hub.incidents.get(INCIDENT_KEY))["acknowledged_by"] == "incidentio"
    assert len(upstreams.pagerduty.calls("/v2/enqueue")) == 1


async def test_escalation_fires_once_with_two_workers(redis, upstreams, escalation) -> None:
    async with Hub(escalation, redis, workers=2) as hub:
        declared = await hub.send("incidentio", incident_payload("incident_created_v2", severity="Critical"))

        async def escalated() -> Any:
            recs = escalation_records(await hub.actions(declared["id"]))
            return recs if recs and all(r["state"] == "succeeded" for r in recs.values()) else None
        await wait_for(escalated, timeout=10)
        await asyncio.sleep(0.3)  # give a second firing every chance to happen
    assert [p.json()["dedup_key"] for p in upstreams.pagerduty.calls("/v2/enqueue")] == [
        INCIDENT_KEY, f"{INCIDENT_KEY}:escalation-1"]
    assert len(upstreams.slack.requests) == 1 and len(upstreams.incidentio.timeline) == 1


async def test_concurrent_firings_of_one_timer_run_it_once(redis, upstreams, escalation) -> None:
    """Two workers handed the same due timer at once (arq retries, a sweeper): one performs it."""
    from hub.worker.app import shutdown, startup

    async with Hub(escalation, redis, workers=0) as hub:
        event_id = await hub.post("incidentio", incident_payload("incident_created_v2", severity="Critical"))
        ctxs = [{"settings": escalation, "redis": redis}, {"settings": escalation, "redis": redis}]
        for ctx in ctxs:
            await startup(ctx)
        try:
            await ctxs[0]["processor"].process(event_id)
            (spec_id, spec) = next(iter((await hub.incidents.timers(INCIDENT_KEY)).items()))
            job_spec = {k: v for k, v in spec.items() if k != "due_ms"}
            await redis.zrem(ARQ_QUEUE, spec_id)  # no worker loop here: fire by hand once it is due
            await asyncio.sleep(max(0.0, (spec["due_ms"] - now_ms()) / 1000) + 0.05)
            outcomes = await asyncio.gather(*(ctx["processor"].fire_timer(dict(job_spec)) for ctx in ctxs))
            for _ in range(50):  # the one that found the incident busy comes back, and finds it done
                retry = [i for i, (_, d) in enumerate(outcomes) if d is not None]
                if not retry:
                    break
                await asyncio.sleep(0.05)
                outcomes = [await ctxs[i]["processor"].fire_timer(dict(job_spec)) if i in retry else outcomes[i]
                            for i in range(2)]
        finally:
            for ctx in ctxs:
                await shutdown(ctx)
    assert sorted(o for o, _ in outcomes) == ["fired", "not listed (cancelled or already fired)"]
    assert [p.json()["dedup_key"] for p in upstreams.pagerduty.calls("/v2/enqueue")] == [
        INCIDENT_KEY, f"{INCIDENT_KEY}:escalation-1"]


async def test_raised_severity_brings_the_escalation_forward(redis, upstreams, escalation) -> None:
    async with Hub(escalation, redis) as hub:
        declared = await hub.send("incidentio", incident_payload("incident_created_v2"))  # SEV2: 60 s
        (timer_id,) = await hub.incidents.timers(INCIDENT_KEY)
        assert await redis.zscore(ARQ_QUEUE, timer_id) == declared["received_at"] + 60_000
        await hub.send("incidentio", incident_payload("incident_updated_v2", severity="Critical",
                                                      status=("Investigating", "live")))
        assert await redis.zscore(ARQ_QUEUE, timer_id) == declared["received_at"] + 2000

        async def escalated() -> Any:
            recs = escalation_records(await hub.actions(declared["id"]))
            return recs if recs and all(r["state"] == "succeeded" for r in recs.values()) else None
        await wait_for(escalated, timeout=10)
    assert upstreams.pagerduty.calls("/v2/enqueue")[-1].json()["payload"]["severity"] == "critical"
    assert "timer_moved" in [e["type"] for e in await hub.incidents.timeline(INCIDENT_KEY)]


async def test_lowered_severity_defers_the_escalation(redis, upstreams, escalation) -> None:
    """SEV1 → SEV2 before the SEV1 deadline: at the SEV1 deadline the timer re-checks and waits for SEV2's."""
    async with Hub(escalation, redis) as hub:
        declared = await hub.send("incidentio", incident_payload("incident_created_v2", severity="Critical"))
        (timer_id,) = await hub.incidents.timers(INCIDENT_KEY)
        await hub.send("incidentio", incident_payload("incident_updated_v2", severity="Major",
                                                      status=("Investigating", "live")))

        async def deferred() -> Any:
            score = await redis.zscore(ARQ_QUEUE, timer_id)
            return score if score and score > declared["received_at"] + 30_000 else None
        score = await wait_for(deferred, timeout=10)
    assert abs(score - (declared["received_at"] + 60_000)) < 1500
    assert len(upstreams.pagerduty.calls("/v2/enqueue")) == 1
    recs = escalation_records(await hub.actions(declared["id"]))
    assert {r["state"] for r in recs.values()} == {"pending"}


async def test_reminders_repeat_until_resolved_then_stop(redis, redis_url, upstreams) -> None:
    settings = upstreams.settings(redis_url, hub_config=RULES / "reminders.yaml")
    async with Hub(settings, redis) as hub:
        declared = await hub.send("incidentio", incident_payload("incident_created_v2", severity="Critical"))
        await wait_for(lambda: _count(upstreams, 2), timeout=10)
        resolved = await hub.send("incidentio", incident_payload("incident_status_updated_v2", severity="Critical"))
        sent = len(upstreams.slack.requests)
        await asyncio.sleep(1.5)  # past the next reminder's due time
    assert len(upstreams.slack.requests) == sent
    texts = [r.json()["text"] for r in upstreams.slack.requests]
    assert texts[:2] == ["reminder 1: INC-1482: Checkout API returning 5xx errors is still open",
                         "reminder 2: INC-1482: Checkout API returning 5xx errors is still open"]
    assert await hub.incidents.timers(INCIDENT_KEY) == {}
    (cancel,) = (await hub.actions(resolved["id"])).values()
    assert cancel["name"] == "hub.cancel_timers" and cancel["result"] == {"cancelled": 1}
    reminders = sorted(a["id"] for a in (await hub.actions(declared["id"])).values())
    assert reminders[0].endswith(":remind:reminder#1") and reminders[1].endswith(":remind:reminder#2")
    timeline = [e for e in await hub.incidents.timeline(INCIDENT_KEY) if e["type"] == "timer_cancelled"]
    assert len(timeline) == 1 and "incident-resolved" in timeline[0]["reason"]


async def _count(upstreams: Upstreams, n: int) -> bool:
    return len(upstreams.slack.requests) >= n


async def test_timer_survives_worker_and_redis_restart(tmp_path, upstreams, monkeypatch) -> None:
    from hub.storage.connection import connect
    from hub.storage.embedded_redis import EmbeddedRedis

    monkeypatch.setenv("PD_KEY_L2", L2_KEY)
    upstreams.seed_incident()
    server = EmbeddedRedis(tmp_path / "redis", appendonly=True).start()  # its own Redis: this test restarts it
    settings = upstreams.settings(server.url, hub_config=RULES / "escalation.yaml")
    try:
        client = connect(server.url)
        try:
            async with Hub(settings, client, workers=0) as hub:  # accepted, no worker yet
                event_id = await hub.post("incidentio", incident_payload("incident_created_v2", severity="Critical"))
            async with Hub(settings, client) as hub:  # a worker processes it and arms the timer, then goes
                await hub.final(event_id)
                assert len(await hub.incidents.timers(INCIDENT_KEY)) == 1
        finally:
            await client.aclose()
        server.stop()  # SIGTERM: Redis writes its AOF
        server.start()
        client = connect(server.url)
        try:
            await wait_for(lambda: _loaded(client), timeout=10)
            async with Hub(settings, client) as hub:
                async def escalated() -> Any:
                    recs = escalation_records(await hub.actions(event_id))
                    return recs if recs and all(r["state"] == "succeeded" for r in recs.values()) else None
                await wait_for(escalated, timeout=15)
        finally:
            await client.aclose()
    finally:
        server.kill()
    assert [p.json()["dedup_key"] for p in upstreams.pagerduty.calls("/v2/enqueue")] == [
        INCIDENT_KEY, f"{INCIDENT_KEY}:escalation-1"]


async def _loaded(client: Any) -> bool:
    from redis.exceptions import BusyLoadingError

    try:
        return await client.ping()
    except BusyLoadingError:
        return False


async def test_sighup_reloads_rules_and_keeps_them_when_invalid(tmp_path, redis_url, caplog) -> None:
    from hub.worker.app import LiveRules, close_worker, load_worker_rules, make_worker, watch_sighup
    from tests.conftest import make_settings

    path = tmp_path / "hub.yaml"
    path.write_text((RULES / "reminders.yaml").read_text())
    settings = make_settings(redis_url, hub_config=path)
    live = LiveRules(load_worker_rules(settings))
    worker = make_worker(settings, handle_signals=False, live=live)
    first = live.rules
    assert [w.name for w in first.config.workflows] == ["remind", "incident-resolved"]
    loop = asyncio.get_running_loop()
    watch_sighup(settings, live)
    try:
        path.write_text(path.read_text().replace("name: remind", "name: remind-often"))
        signal.raise_signal(signal.SIGHUP)
        await wait_for(lambda: _is_not(live, first), timeout=5)
        reloaded = live.rules
        assert [w.name for w in reloaded.config.workflows] == ["remind-often", "incident-resolved"]

        path.write_text("workflows:\n  - name: broken\n    on: incident.declared\n    do: []\n")
        signal.raise_signal(signal.SIGHUP)
        await wait_for(lambda: _logged(caplog, "rules not reloaded"), timeout=5)
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        await close_worker(worker)
    assert live.rules is reloaded
    assert f"{path}:4:9" in caplog.text


async def _is_not(live: Any, rules: Any) -> bool:
    return live.rules is not rules


async def _logged(caplog: Any, text: str) -> bool:
    return text in caplog.text


def test_invalid_rules_refuse_to_start_the_worker(tmp_path, redis_url) -> None:
    from hub.worker.app import run_worker
    from tests.conftest import make_settings

    path = tmp_path / "hub.yaml"
    path.write_text("workflows:\n  - name: x\n    on: incident.declard\n    do: [{action: slack.notify}]\n")
    with pytest.raises(SystemExit) as e:
        run_worker(make_settings(redis_url, hub_config=path))
    assert "the rules file is invalid" in str(e.value) and f"{path}:3:9" in str(e.value)


async def test_operator_ack_stops_the_escalation(redis, upstreams, escalation) -> None:
    async with Hub(escalation, redis) as hub:
        declared = await hub.send("incidentio", incident_payload("incident_created_v2", severity="Critical"))
        assert await hub.incidents.acknowledge(INCIDENT_KEY, by="operator:dana") is True
        assert await hub.incidents.acknowledge(INCIDENT_KEY) is False  # already acknowledged

        async def settled() -> Any:
            recs = escalation_records(await hub.actions(declared["id"]))
            return recs if recs and all(r["state"] == "skipped" for r in recs.values()) else None
        await wait_for(settled, timeout=10)
    assert len(upstreams.pagerduty.calls("/v2/enqueue")) == 1
    state = await hub.incidents.get(INCIDENT_KEY)
    assert state["acknowledged_by"] == "operator:dana"


async def test_a_timer_is_queued_once_and_never_again_after_it_ran(redis) -> None:
    from hub.worker import timers

    spec = {"timer": "timer:k#1:wf:step", "event_id": "ev_x", "workflow": "wf", "group": "step", "index": 0,
            "key": "k", "occurrence": 1, "anchor_ms": now_ms()}
    assert await timers.schedule(redis, spec, now_ms() + 60_000, 3600) is True
    assert await timers.schedule(redis, spec, now_ms() + 1_000, 3600) is False  # already queued: untouched
    assert await redis.zscore(ARQ_QUEUE, spec["timer"]) > now_ms() + 50_000
    assert await timers.move_earlier(redis, spec["timer"], now_ms() + 5_000) is True
    assert await timers.move_earlier(redis, spec["timer"], now_ms() + 30_000) is False  # never later
    assert await timers.unschedule(redis, spec["timer"]) is True
    await redis.set(timers.ARQ_RESULT_PREFIX + spec["timer"], b"{}")  # it ran: arq kept its result
    assert await timers.schedule(redis, spec, now_ms(), 3600) is False


async def test_a_delayed_action_gets_its_connector_deadline_from_when_it_fires(redis, redis_url, upstreams,
                                                                             monkeypatch) -> None:
    """Slack gives up on a message after its deadline; a reminder hours into an incident is not late."""
    from connectors.base import RetryPolicy
    from connectors.slack import Slack

    monkeypatch.setattr(Slack, "retry_policy", RetryPolicy(max_attempts=3, base_delay=0.05, deadline=0.5))
    settings = upstreams.settings(redis_url, hub_config=RULES / "reminders.yaml")
    async with Hub(settings, redis) as hub:
        declared = await hub.send("incidentio", incident_payload("incident_created_v2", severity="Critical"))

        async def first_reminder() -> Any:
            recs = [a for a in (await hub.actions(declared["id"])).values() if a["id"].endswith("#1")]
            return recs[0] if recs and recs[0]["state"] in ("succeeded", "dead") else None
        record = await wait_for(first_reminder, timeout=10)
    assert record["state"] == "succeeded", record.get("error")
    assert upstreams.slack.requests[0].json()["text"].startswith("reminder 1:")


async def test_a_firing_that_outlives_the_job_timeout_runs_again_and_finishes(redis, redis_url, upstreams,
                                                                              monkeypatch) -> None:
    """arq would count a timed-out job as finished (and a finished timer is never queued again)."""
    from tests.fakes.base import Fault

    upstreams.slack.faults.append(Fault(stall=4))  # the first reminder hangs past the 3 s job timeout
    settings = upstreams.settings(redis_url, hub_config=RULES / "reminders.yaml", hub_job_timeout=3)
    async with Hub(settings, redis) as hub:
        declared = await hub.send("incidentio", incident_payload("incident_created_v2", severity="Critical"))

        async def first_reminder() -> Any:
            recs = [a for a in (await hub.actions(declared["id"])).values() if a["id"].endswith("#1")]
            return recs[0] if recs and recs[0]["state"] == "succeeded" else None
        record = await wait_for(first_reminder, timeout=15)
    assert record["attempts"][-1]["status"] == 200
    assert [r.json()["text"][:10] for r in upstreams.slack.requests[:2]] == ["reminder 1", "reminder 1"]
