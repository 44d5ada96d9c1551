"""Redis memory per stored event, measured for sizing (docs/operations.md).

1000 Datadog alerts (the commonest webhook: one alert, a page and an incident.io incident
each) are accepted with no worker running, then processed; `INFO memory` is read before,
after acceptance and after processing, and `MEMORY USAGE` of every key belonging to one
event (its record, actions, timeline, dedup and queue entries, its incident's keys) is
summed. The bound asserted is generous; the figures are the point.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.reliability import payloads as P
from tests.reliability.harness import Sender, wait_final

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

N = 1000
KB_PER_EVENT_BOUND = 64


async def keys_of(redis: Any, *needles: str) -> dict[str, int]:
    """MEMORY USAGE of every key whose name contains one of `needles`."""
    out = {}
    async for raw in redis.scan_iter(count=5000):
        key = raw.decode()
        if any(n in key for n in needles):
            out[key] = int(await redis.memory_usage(raw, samples=0) or 0)
    return out


def generic(key: str, needles: tuple[str, ...]) -> str:
    for n in needles:
        key = key.replace(n, "{id}")
    return key


async def test_redis_memory_per_event(make_cluster, upstreams, figures) -> None:
    cluster = await make_cluster(upstreams.env(), workers=0).start()
    redis = cluster.redis_client
    base = (await redis.info("memory"))["used_memory"]
    hooks = [P.datadog_alert(n) for n in range(N)]
    sample_incident = P.incident_declared(1)
    async with Sender(cluster.url, concurrency=16) as sender:
        sent = await sender.post_all([*hooks, sample_incident])
    assert {s.status for s in sent} == {202}
    ids = [s.event_id for s in sent]
    accepted = (await redis.info("memory"))["used_memory"] - base
    alert_needles = (ids[0], hooks[0].keys[0])
    incident_needles = (ids[-1], sample_incident.keys[0])
    alert_accepted = await keys_of(redis, *alert_needles)

    cluster.start_worker()
    cluster.start_worker()
    await wait_final(redis, ids, timeout=150, cluster=cluster)
    processed = (await redis.info("memory"))["used_memory"] - base
    alert_done = await keys_of(redis, *alert_needles)
    incident_done = await keys_of(redis, *incident_needles)
    figures.update(
        events=len(ids), raw_body_bytes=len(hooks[0].body),
        info_used_memory_delta_per_1000_accepted_kb=round(accepted / len(ids) * 1000 / 1024),
        info_used_memory_delta_per_1000_done_kb=round(processed / len(ids) * 1000 / 1024),
        memory_usage_one_alert_accepted={generic(k, alert_needles): v for k, v in sorted(alert_accepted.items())},
        memory_usage_one_alert_done={generic(k, alert_needles): v for k, v in sorted(alert_done.items())},
        memory_usage_one_alert_done_total_kb=round(sum(alert_done.values()) / 1024, 1),
        memory_usage_one_incident_done={generic(k, incident_needles): v for k, v in sorted(incident_done.items())},
        memory_usage_one_incident_done_total_kb=round(sum(incident_done.values()) / 1024, 1))

    assert alert_accepted and alert_done
    assert processed / len(ids) < KB_PER_EVENT_BOUND * 1024
    assert sum(alert_done.values()) < KB_PER_EVENT_BOUND * 1024
