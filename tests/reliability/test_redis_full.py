"""Redis full: `maxmemory` reached with `noeviction` (deploy/redis.conf's policy).

The ingress must answer 503 with Retry-After — nothing recorded, the sender retries — never
a 500; the workers must survive the refused writes. Once the operator makes room (here
`CONFIG SET maxmemory 0`), the refused webhooks are sent again and everything completes,
each alert paged once.
"""

from __future__ import annotations

import time

import pytest

from tests.reliability import payloads as P
from tests.reliability.harness import Sender, event_states, repeats, wait_final

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

MAXMEMORY = "8mb"
RATE = 60.0


async def test_redis_full_answers_503_and_recovers_when_room_is_made(make_cluster, upstreams, figures) -> None:
    cluster = await make_cluster({**upstreams.env(), "HUB_JOB_TIMEOUT": "5", "HUB_SWEEP_GRACE": "5"}, workers=2,
                                 redis_args=("--maxmemory", MAXMEMORY, "--maxmemory-policy", "noeviction")).start()
    redis = cluster.redis_client
    pids = {"web": cluster.web.pid, **{w.name: w.pid for w in cluster.workers}}
    hooks = [P.datadog_alert(n) for n in range(1500)]
    answers = []
    async with Sender(cluster.url, concurrency=8) as sender:
        for start in range(0, len(hooks), 100):  # until Redis has been full for a while
            batch = hooks[start:start + 100]
            answers += list(zip(batch, await sender.post_all(batch, rate=RATE), strict=True))
            if sum(1 for _, s in answers if s.status == 503) >= 200:
                break
        full_at = time.monotonic()
        refused = [(h, s) for h, s in answers if s.status != 202]
        await redis.config_set("maxmemory", "0")  # the operator makes room
        retried = await sender.post_all([h for h, _ in refused])
    acked = [s.event_id for _, s in answers if s.status == 202]
    unrecorded = [i for i, st in (await event_states(redis, acked)).items() if st is None]
    ids = acked + [s.event_id for s in retried]
    states = await wait_final(redis, ids, timeout=200, cluster=cluster)
    recovered = time.monotonic()
    now_pids = {"web": cluster.web.pid, **{w.name: w.pid for w in cluster.workers}}
    pd_created = [a.dedup_key for a in upstreams.pagerduty.created]
    sent_hooks = [h for h, _ in answers]
    figures.update(
        maxmemory=MAXMEMORY, posted=len(answers), answered_202=len(acked), answered_503=len(refused),
        other_statuses=sorted({s.status for _, s in refused if s.status != 503}),
        resent=len(retried), acked_but_unrecorded=len(unrecorded),
        lost=sum(1 for st in states.values() if st != "done"), duplicated=len(repeats(pd_created)),
        processes_restarted=sorted(k for k in pids if pids[k] != now_pids[k] or not cluster.web.alive),
        seconds_room_made_to_all_final=round(recovered - full_at, 1))

    assert refused, "Redis never filled up"
    assert all(s.retry_later for _, s in refused), {s.status: s.body for _, s in refused if not s.retry_later}
    assert [s.status for s in retried] == [202] * len(retried)
    assert unrecorded == []
    assert now_pids == pids and all(p.alive for p in [cluster.web, *cluster.workers])
    assert set(states.values()) == {"done"}
    assert repeats(pd_created) == {}
    assert set(pd_created) == {h.keys[0] for h in sent_hooks}
