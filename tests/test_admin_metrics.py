"""Operator metrics on /metrics: dead letters, queue lag, replays, purges, escalations."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from hub.core import metrics
from hub.storage.event_store import ARQ_QUEUE, now_ms
from tests.test_admin import AUTH, seed_event


async def _scrape(client: TestClient) -> dict[str, float]:
    text = await (await client.get("/metrics")).text()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = s.name + ("{" + ",".join(f"{k}={v}" for k, v in sorted(s.labels.items())) + "}" if s.labels else "")
            out[key] = s.value
    return out


async def test_dead_letters_gauge_queue_lag_and_replay_counters(client: TestClient, redis: Any) -> None:
    before = await _scrape(client)
    assert before["hub_queue_lag_seconds"] == 0.0
    eid = await seed_event(redis, state="dead")
    other = await seed_event(redis, state="dead")
    await redis.zadd(ARQ_QUEUE, {"ev_waiting": now_ms() - 42_000, "ev_deferred": now_ms() + 600_000})
    m = await _scrape(client)
    assert m["hub_dead_letters"] == 2
    assert 41 <= m["hub_queue_lag_seconds"] < 60  # the due job, not the one deferred into the future

    assert (await client.post(f"/admin/events/{eid}/replay", headers=AUTH)).status == 202
    assert (await client.delete(f"/admin/dead-letters/{other}/deploy-failed.notify:fp", headers=AUTH)).status == 200
    after = await _scrape(client)
    key = "hub_replays_total{kind=normal,mode=event}"
    assert after[key] == before.get(key, 0) + 1
    assert after["hub_dead_letters_purged_total"] == before.get("hub_dead_letters_purged_total", 0) + 1
    assert after["hub_dead_letters"] == 0


def test_escalations_counter_is_there_for_the_rules_engine() -> None:
    start = metrics.ESCALATIONS_FIRED._value.get()
    metrics.ESCALATIONS_FIRED.inc()
    assert metrics.ESCALATIONS_FIRED._value.get() == start + 1
    assert b"hub_escalations_fired_total" in metrics.render()[0]
    assert metrics.queue_lag([], 100.0) == 0.0 and metrics.queue_lag([(b"x", 40_000.0)], 100.0) == 60.0


def test_grafana_dashboard_charts_only_metrics_that_exist() -> None:
    import json
    import re
    from pathlib import Path

    from prometheus_client import REGISTRY

    dash = json.loads((Path(__file__).parents[1] / "deploy" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    used = {re.sub(r"_(total|bucket)$", "", m) for e in exprs for m in re.findall(r"\bhub_[a-z_]+", e)}
    known = {f.name for f in REGISTRY.collect() if f.name.startswith("hub_")}
    assert used and used <= known, used - known
    assert {"hub_dead_letters", "hub_queue_lag_seconds", "hub_replays", "hub_escalations_fired"} <= used
