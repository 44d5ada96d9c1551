"""A large Alertmanager group worked in chunk jobs while its workers are SIGKILLed mid-chunk.

One signed group of 200 critical alerts (10 chunks of 20 at `HUB_MAX_ALERTS_PER_JOB=20`),
every outside call taking 100 ms, so each chunk's 40 calls outlast the 3 s job timeout and
runs stop at their time budget. Each worker process is killed once while chunks are in
flight (and started again). Afterwards the event is `done`, every alert opened exactly one
PagerDuty alert and one incident.io incident, and no chunk is left unfinished.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from hub.worker.chunks import chunk_key, results_key
from tests.grouping_rules import PER_ALERT_RULES
from tests.reliability import payloads as P
from tests.reliability.harness import Sender, repeats, wait_final

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

ALERTS = 200
PER_JOB = 20
LATENCY = 0.1


def big_group(n: int) -> P.Webhook:
    data = P.fixture("alertmanager_firing.json")
    template = data["alerts"][0]
    data["alerts"] = [P._alert(template, f"{0xC4000000 + i:016x}", "FanOutStorm", "critical", "firing",
                               {"pod": f"storm-{i}"}) for i in range(n)]
    data["groupKey"] = '{}:{alertname="FanOutStorm"}'
    data["groupLabels"] = {"alertname": "FanOutStorm"}
    return P.signed("alertmanager", data, f"alertmanager group of {n}")


async def chunk_states(redis: Any, event_id: str, count: int) -> list[str | None]:
    out = []
    for k in range(count):
        raw = await redis.hget(chunk_key(event_id, k), "state")
        out.append(raw.decode() if raw else None)
    return out


async def test_killed_workers_mid_chunk_lose_nothing_and_double_nothing(make_cluster, upstreams, figures) -> None:
    hook = big_group(ALERTS)
    expected = {e.fingerprint for e in hook.events}  # with `grouping: per_alert`, each alert's incident key
    assert len(expected) == ALERTS
    upstreams.slow_down(LATENCY)
    cluster = await make_cluster({**upstreams.env(), "HUB_JOB_TIMEOUT": "3", "HUB_SWEEP_GRACE": "5",
                                  "HUB_MAX_ALERTS_PER_JOB": str(PER_JOB),
                                  "HUB_CONFIG": str(PER_ALERT_RULES)}, workers=2).start()  # a page per alert
    redis = cluster.redis_client
    started = time.monotonic()
    async with Sender(cluster.url) as sender:
        sent = await sender.post(hook.source, hook.body, hook.headers)
    assert sent.status == 202, sent.body
    event_id = sent.event_id
    assert event_id is not None

    kills: list[dict[str, Any]] = []
    for index in range(len(cluster.workers)):
        while True:  # a chunk is mid-way: some of its alerts paged, not all
            states = await chunk_states(redis, event_id, ALERTS // PER_JOB)
            paged = len(upstreams.pagerduty.created)
            if "processing" in states and 0 < paged < ALERTS and await cluster.worker_beating(index):
                break
            assert time.monotonic() - started < 60, f"no chunk in flight: {states}"
            await asyncio.sleep(0.05)
        pid = await asyncio.to_thread(cluster.kill_worker, index)
        kills.append({"at_s": round(time.monotonic() - started, 2), "worker": index, "pid": pid,
                      "paged_before": paged, "chunks": states})
        await asyncio.sleep(1.0)

    await wait_final(redis, [event_id], timeout=180, cluster=cluster)
    took = round(time.monotonic() - started, 1)
    state = (await redis.hget(f"hub:ev:{event_id}", "state")).decode()
    chunks = int(await redis.hget(f"hub:ev:{event_id}", "chunks"))
    finished = {k.decode(): v.decode() for k, v in (await redis.hgetall(results_key(event_id))).items()}
    pd_created = [a.dedup_key for a in upstreams.pagerduty.created]
    incidents = len(upstreams.incidentio.created)
    duplicated = {"pagerduty": repeats(pd_created)}
    figures.update(alerts=ALERTS, chunks=chunks, kills=kills, state=state, seconds_to_final=took,
                   lost=len(expected - set(pd_created)), duplicated=sum(len(v) for v in duplicated.values()),
                   pagerduty_alerts_opened=len(pd_created), pagerduty_requests=len(upstreams.pagerduty.requests),
                   incidentio_incidents=incidents, incidentio_requests=len(upstreams.incidentio.requests))

    assert len(kills) == 2
    assert state == "done", finished
    assert chunks == ALERTS // PER_JOB and set(finished.values()) == {"done"} and len(finished) == chunks
    assert duplicated == {"pagerduty": {}}
    assert set(pd_created) == expected  # every alert paged, once
    assert incidents == ALERTS
