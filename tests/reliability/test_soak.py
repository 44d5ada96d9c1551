"""Soak: a steady stream across every source for a long time (`make soak`; not in CI).

The web process's and each worker's resident memory is sampled every 30 s (first, last, max
reported), and Redis's key count must stay flat once the retention has passed: the hub runs
with a short `HUB_RETENTION` (and dedup window) so expiry and index trimming are exercised.

Knobs: `RELIABILITY_SOAK_SECONDS` (default 900), `RELIABILITY_SOAK_RATE` (webhooks/s,
default 10), `RELIABILITY_SOAK_RETENTION` (seconds, default 60), `RELIABILITY_SOAK_SAMPLE_S`
(default 30).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter
from typing import Any

import pytest

from tests.reliability import payloads as P
from tests.reliability.harness import Cluster, Sender, event_states, repeats, spread, wait_final

SECONDS = float(os.environ.get("RELIABILITY_SOAK_SECONDS", "900"))
RATE = float(os.environ.get("RELIABILITY_SOAK_RATE", "10"))
RETENTION = float(os.environ.get("RELIABILITY_SOAK_RETENTION", "60"))
SAMPLE_S = float(os.environ.get("RELIABILITY_SOAK_SAMPLE_S", "30"))
RSS_GROWTH_MB = 50

pytestmark = [pytest.mark.soak, pytest.mark.timeout(int(SECONDS) + 900)]


def stream(i: int) -> list[P.Webhook]:
    """The i-th slice of a steady mix: alerts firing and recovering, incidents opening and
    closing with follow-ups, failed deploys. Everything is distinct, so everything acts."""
    n = i
    return [
        P.datadog_alert(n, "P1" if n % 2 else "P2"),
        P.grafana_alert(n, "critical"),
        P.alertmanager_group(n, "high"),
        P.datadog_alert(n, "P1" if n % 2 else "P2", transition="Recovered"),
        P.incident_declared(n, "Critical" if n % 3 == 0 else "Major"),
        P.followup(n, incident=n),
        P.grafana_alert(n, "critical", status="resolved"),
        P.incident_resolved(n, "Critical" if n % 3 == 0 else "Major"),
        P.deploy_failed(f"soak-{n}"),
    ]


async def key_census(redis: Any) -> dict[str, Any]:
    """Keys by family (prefix up to the second colon), the keys that never expire (with their
    sizes: an index that is never trimmed would show here) and each family's longest TTL."""
    families: Counter[str] = Counter()
    immortal: dict[str, tuple[str, int]] = {}
    longest: dict[str, float] = {}
    async for raw in redis.scan_iter(count=2000):
        key = raw.decode()
        family = ":".join(key.split(":")[:2])
        families[family] += 1
        ttl = await redis.pttl(raw)
        if ttl == -1:
            kind = (await redis.type(raw)).decode()
            size = await redis.zcard(raw) if kind == "zset" else await redis.memory_usage(raw) or 0
            immortal[key] = (kind, size)  # members of a zset, else bytes
        else:
            longest[family] = max(longest.get(family, 0), round(ttl / 86_400_000, 2))
    return {"families": dict(families.most_common()), "without_ttl": immortal, "longest_ttl_days": longest}


async def count(redis: Any, pattern: str) -> int:
    return sum([1 async for _ in redis.scan_iter(match=pattern, count=2000)])


async def sample(cluster: Cluster, t0: float) -> dict[str, Any]:
    redis = cluster.redis_client
    info = await redis.info("memory")
    assert cluster.web is not None
    return {"t": round(time.monotonic() - t0), "keys": await redis.dbsize(),
            "ledger_keys": await count(redis, "hub:ledger:*"),
            "redis_used_mb": round(info["used_memory"] / 2**20, 1), "web_rss_mb": round(cluster.web.rss_kb() / 1024, 1),
            "workers_rss_mb": [round(w.rss_kb() / 1024, 1) for w in cluster.workers],
            "queued": await redis.zcard("arq:queue"), "pending": await redis.zcard("hub:pending"),
            "dead": await redis.zcard("hub:dead")}


def first_last_max(samples: list[dict[str, Any]], pick: Any) -> dict[str, float]:
    values = [pick(s) for s in samples]
    return {"first": values[0], "last": values[-1], "max": max(values)}


async def test_soak_memory_and_keys_stay_flat(make_cluster, upstreams, figures) -> None:
    cluster = await make_cluster({**upstreams.env(), "HUB_RETENTION": f"{RETENTION:g}s",
                                  "HUB_DEDUP_WINDOW": f"{RETENTION:g}s", "HUB_JOB_TIMEOUT": "20"},
                                 workers=2).start()
    t0 = time.monotonic()
    samples: list[dict[str, Any]] = []
    stop = asyncio.Event()

    async def sampler() -> None:
        while not stop.is_set():
            samples.append(await sample(cluster, t0))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SAMPLE_S)

    sent_ids: list[str] = []
    statuses: Counter[int] = Counter()
    sampling = asyncio.create_task(sampler())
    async with Sender(cluster.url, concurrency=8) as sender:
        i = 0
        while time.monotonic() - t0 < SECONDS:
            batch = stream(i)
            due = t0 + i * len(batch) / RATE
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            for sent in await sender.post_all(batch, rate=RATE):
                statuses[sent.status] += 1
                if sent.event_id:
                    sent_ids.append(sent.event_id)
            i += 1
    # Events older than the retention have expired by design; the recent ones must all finish.
    recent = sent_ids[-int(RATE * RETENTION / 2):]
    await wait_final(cluster.redis_client, recent, timeout=180, cluster=cluster)
    stop.set()
    await sampling
    samples.append(await sample(cluster, t0))
    census = await key_census(cluster.redis_client)
    states = Counter((await event_states(cluster.redis_client, recent)).values())

    steady = [s for s in samples if s["t"] >= 2 * RETENTION + SAMPLE_S]
    # The creation ledger (Statuspage incidents and Jira issues the hub made) is kept for 180
    # days whatever HUB_RETENTION says, so that a late redelivery still finds what was created:
    # it grows by design, one key per creation, and is reported rather than counted as flat.
    for s in samples:
        s["keys_without_ledger"] = s["keys"] - s["ledger_keys"]
    pd_created = [a.dedup_key for a in upstreams.pagerduty.created]
    figures.update(
        seconds=round(time.monotonic() - t0), rate_per_s=RATE, webhooks=sum(statuses.values()),
        statuses=dict(statuses), retention_s=RETENTION, recent_states=dict(states),
        web_rss_mb=first_last_max(samples, lambda s: s["web_rss_mb"]),
        workers_rss_mb=[first_last_max(samples, lambda s, i=i: s["workers_rss_mb"][i])
                        for i in range(len(cluster.workers))],
        redis_keys=first_last_max(samples, lambda s: s["keys"]),
        redis_keys_without_ledger_steady=spread(s["keys_without_ledger"] for s in steady),
        ledger_keys=first_last_max(samples, lambda s: s["ledger_keys"]), redis_used_mb=first_last_max(
            samples, lambda s: s["redis_used_mb"]),
        dead_letters=samples[-1]["dead"], pagerduty_duplicates=len(repeats(pd_created)), key_census=census,
        samples=samples)

    assert statuses == {202: sum(statuses.values())}
    assert set(states) == {"done"}
    assert repeats(pd_created) == {}
    web = figures["web_rss_mb"]
    assert web["last"] - web["first"] < RSS_GROWTH_MB
    for worker in figures["workers_rss_mb"]:
        assert worker["last"] - worker["first"] < RSS_GROWTH_MB
    if len(steady) >= 3:  # flat beyond retention: the last third no higher than the first third of the steady part
        third = max(1, len(steady) // 3)
        early = max(s["keys_without_ledger"] for s in steady[:third])
        late = max(s["keys_without_ledger"] for s in steady[-third:])
        assert late <= early * 1.2, (early, late, census)
    for key, (kind, size) in census["without_ttl"].items():  # indexes are trimmed to the retention
        assert kind != "zset" or size < 10 * RATE * RETENTION, (key, size)
