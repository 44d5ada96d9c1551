"""Redis down for 10 s while a sender keeps posting.

During the outage the ingress answers 503 with Retry-After and acks nothing it could not
record; once Redis is back the ingress recovers by itself and the workers reconnect without
being restarted (same pids). Every 202 names an event that exists and completes; the
webhooks refused with 503 are sent again, as a sender does, and complete too — each alert
paged exactly once.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.reliability import payloads as P
from tests.reliability.harness import Sender, Sent, event_states, latencies, repeats, spread, wait_final

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

RATE = 30.0
BEFORE_S, DOWN_S, AFTER_S = 4.0, 10.0, 6.0


async def test_redis_outage_under_load_acks_only_what_it_recorded(make_cluster, upstreams, figures) -> None:
    cluster = await make_cluster({**upstreams.env(), "HUB_JOB_TIMEOUT": "5", "HUB_SWEEP_GRACE": "5"},
                                 workers=2).start()
    pids = {"web": cluster.web.pid, **{w.name: w.pid for w in cluster.workers}}
    total = int(RATE * (BEFORE_S + DOWN_S + AFTER_S))
    hooks = [P.datadog_alert(n) for n in range(total)]
    started = time.monotonic()
    marks: dict[str, float] = {}
    answered: list[tuple[float, P.Webhook, Sent]] = []

    async def outage() -> None:
        await asyncio.sleep(BEFORE_S)
        marks["stopped"] = time.monotonic() - started
        await cluster.stop_redis()
        await asyncio.sleep(DOWN_S - (time.monotonic() - started - marks["stopped"]))
        await cluster.start_redis()
        marks["restarted"] = time.monotonic() - started

    async with Sender(cluster.url, concurrency=16) as sender:
        async def post(i: int, hook: P.Webhook) -> None:
            await asyncio.sleep(max(0.0, started + i / RATE - time.monotonic()))
            sent = await sender.post(hook.source, hook.body, hook.headers)
            answered.append((time.monotonic() - started, hook, sent))

        await asyncio.gather(outage(), *(post(i, h) for i, h in enumerate(hooks)))
        refused = [(t, h, s) for t, h, s in answered if s.status != 202]
        retried = await sender.post_all([h for _, h, _ in refused])  # the sender's own retry, same delivery
    assert all(s.retry_later for _, _, s in refused), {s.status: s.body for _, _, s in refused if not s.retry_later}
    assert [s.status for s in retried] == [202] * len(retried), {s.status for s in retried}

    acked = [s.event_id for _, _, s in answered if s.status == 202]
    states_now = await event_states(cluster.redis_client, acked)
    unrecorded = [i for i, s in states_now.items() if s is None]
    recovered_at = min(t for t, _, s in answered if s.status == 202 and t > marks["restarted"])
    late_503 = [t for t, _, _ in refused if t > recovered_at]
    ids = acked + [s.event_id for s in retried]
    states = await wait_final(cluster.redis_client, ids, timeout=150, cluster=cluster)
    done_at = time.monotonic() - started
    took = await latencies(cluster.redis_client, ids)
    now_pids = {"web": cluster.web.pid, **{w.name: w.pid for w in cluster.workers}}
    alive = all(p.alive for p in [cluster.web, *cluster.workers])
    pd_created = [a.dedup_key for a in upstreams.pagerduty.created]
    figures.update(
        posted=len(answered), answered_202=len(acked), answered_503_with_retry_after=len(refused),
        resent_after_outage=len(retried), duplicate_on_resend=sum(s.body["status"] == "duplicate" for s in retried),
        redis_down_s=round(marks["restarted"] - marks["stopped"], 1),
        seconds_restart_to_first_202=round(recovered_at - marks["restarted"], 2),
        acked_but_unrecorded=len(unrecorded), lost=sum(1 for s in states.values() if s != "done"),
        duplicated=len(repeats(pd_created)), processes_restarted=sorted(k for k in pids if pids[k] != now_pids[k]),
        seconds_received_to_final=spread(took.values()),
        seconds_restart_to_all_final=round(done_at - marks["restarted"], 1))

    assert refused, "no request fell into the outage"
    assert unrecorded == []  # every 202 named an event that was really written down
    assert late_503 == []  # the ingress recovered by itself, for good
    assert now_pids == pids and alive  # nobody had to restart anything
    assert set(states.values()) == {"done"}
    assert repeats(pd_created) == {}
    assert set(pd_created) == {h.keys[0] for h in hooks}
