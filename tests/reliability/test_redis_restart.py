"""Redis restarted (SIGTERM, then started on the same port and data dir) with events queued
and timers armed: nothing acknowledged is lost and every timer still fires, once.

Rules: `rules/timers.yaml` (a SEV1 reminder after 4 s, an escalation after 8 s). The restart
falls between the incidents being declared and their timers being due.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from hub.storage.incidents import IncidentStore
from tests.reliability import payloads as P
from tests.reliability.harness import RULES, Sender, held_locks, latencies, repeats, spread, wait_final

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

INCIDENTS = 10
LOAD = 300
L2_KEY = "RELIABILITYL2KEY0000000000000000"
DOWN_S = 3.0


async def test_redis_restart_keeps_queued_events_and_armed_timers(make_cluster, upstreams, figures) -> None:
    cluster = await make_cluster({**upstreams.env(), "HUB_CONFIG": str(RULES / "timers.yaml"), "PD_KEY_L2": L2_KEY,
                                  "HUB_JOB_TIMEOUT": "5", "HUB_SWEEP_GRACE": "5"}, workers=2).start()
    redis = cluster.redis_client
    incidents = IncidentStore(redis, 86400)
    declared = [P.incident_declared(n) for n in range(INCIDENTS)]
    keys = [h.keys[0] for h in declared]
    load = [P.datadog_alert(n) if n % 2 else P.deploy_failed(n) for n in range(LOAD)]

    async with Sender(cluster.url, concurrency=32) as sender:
        first = await sender.post_all(declared)
        assert [s.status for s in first] == [202] * INCIDENTS
        await wait_final(redis, [s.event_id for s in first], timeout=30, cluster=cluster)
        armed = {k: len(await incidents.timers(k)) for k in keys}
        assert armed == dict.fromkeys(keys, 2)  # reminder and escalation, not yet due
        second = await sender.post_all(load)
    acked = [s.event_id for s in first + second if s.status == 202]
    assert len(acked) == INCIDENTS + LOAD

    queue = [m.decode() for m in await redis.zrange("arq:queue", 0, -1)]
    queued_events = sum(1 for m in queue if m.startswith("ev_"))
    queued_timers = sum(1 for m in queue if m.startswith("timer:"))
    stopped = time.monotonic()
    await cluster.stop_redis()  # SIGTERM: Redis writes the AOF out and exits
    await asyncio.sleep(DOWN_S)
    await cluster.start_redis()
    restarted = time.monotonic()
    redis = cluster.redis_client
    locks = await held_locks(redis)  # taken by jobs Redis vanished under: they lapse, nobody can release them

    states = await wait_final(redis, acked, timeout=150, cluster=cluster)
    all_final = time.monotonic()
    took = await latencies(redis, acked)
    escalations = {f"{k}:escalation-1" for k in keys}

    async def timers_fired() -> bool:
        opened = {a.dedup_key for a in upstreams.pagerduty.created}
        reminders = [t for t in upstreams.slack.delivered if t.startswith("reminder")]
        return escalations <= opened and len(reminders) >= INCIDENTS

    deadline = time.monotonic() + 60
    while not await timers_fired():
        assert time.monotonic() < deadline, f"timers did not fire after the restart\n{cluster.logs()}"
        await asyncio.sleep(0.5)
    await asyncio.sleep(2)  # a late duplicate would show up here
    fired = time.monotonic()

    pd_created = [a.dedup_key for a in upstreams.pagerduty.created]
    slack = upstreams.slack.delivered
    reminders = [t for t in slack if t.startswith("reminder")]
    notices = [t for t in slack if t.startswith("escalated")]
    deploys = [t for t in slack if t.startswith("deploy failed")]
    figures.update(
        events_acked=len(acked), queued_events_at_stop=queued_events, armed_timers_at_stop=queued_timers,
        redis_down_s=round(restarted - stopped, 1), lost=sum(1 for s in states.values() if s != "done"),
        duplicated=len(repeats(pd_created)) + len(repeats(reminders)) + len(repeats(notices)),
        slack_deploy_notices_repeated=repeats(deploys),
        incident_locks_left_by_the_restart=len(locks), their_lease_left_s=round(max(locks, default=0) / 1000, 1),
        seconds_received_to_final=spread(took.values()),
        escalations_fired=len(escalations & set(pd_created)), reminders_fired=len(reminders),
        seconds_restart_to_all_final=round(all_final - restarted, 1),
        seconds_restart_to_timers_fired=round(fired - 2 - restarted, 1))

    assert queued_events > 0, "the load was drained before Redis stopped: nothing was queued"
    assert queued_timers == 2 * INCIDENTS
    assert set(states.values()) == {"done"}
    assert repeats(pd_created) == {}
    assert set(pd_created) == set(keys) | escalations | {k for h in load for k in h.keys}
    assert sorted(reminders) == sorted(f"reminder 1: INC-{9000 + n}: Checkout outage {n} is still open"
                                       for n in range(INCIDENTS))
    assert len(notices) == INCIDENTS and repeats(notices) == {}
    # Slack has no idempotency key: a message whose 200 came back as Redis went away cannot be
    # recorded, so it may be posted again (reported above). None may be missing.
    assert len(set(deploys)) == LOAD // 2
    for key in keys:  # the escalation fired and was struck off; the reminder armed its next occurrence
        left = await incidents.timers(key)
        assert [(t["group"], t["occurrence"]) for t in left.values()] == [("reminder", 2)]
