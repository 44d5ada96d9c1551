"""How long one large Alertmanager group takes to reach a final state (issue 18, fan-out).

One worker (the production defaults: 60 s job timeout, 120 s sweep grace, the connectors'
default rate limits) against fake PagerDuty and incident.io on loopback. The group is
recorded as the ingress records it, then timed until its event is final. Prints the time,
the pages the fake PagerDuty opened, and what the event's timeline says about the runs
(sweeper requeues, fan-out chunks). Not a test: nothing here asserts a time.

    python -m bench.fanout [--alerts 300] [--job-timeout 60] [--per-job 50] [--rate-limits default|off]
                           [--latency 0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.inproc import ADMIN_TOKEN, ROUTING_KEY, WEBHOOK_TOKEN, running_worker
from hub.core.settings import Settings
from hub.storage.connection import connect
from hub.storage.embedded_redis import EmbeddedRedis
from hub.storage.event_store import FINAL_STATES, Store

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "inbound" / "alertmanager_firing.json"


def group(n: int) -> bytes:
    """An Alertmanager group of `n` firing critical alerts, each its own fingerprint."""
    data = json.loads(FIXTURE.read_bytes())
    template = data["alerts"][0]
    alerts = []
    for i in range(n):
        alert = json.loads(json.dumps(template))
        alert["fingerprint"] = f"{0xB0000000 + i:016x}"
        alert["labels"] = {**alert["labels"], "pod": f"api-{i}", "severity": "critical"}
        alerts.append(alert)
    data["alerts"] = alerts
    return json.dumps(data).encode()


async def run(alerts: int, job_timeout: float, per_job: int | None, rate_limits: str,
              latency: float = 0.0) -> dict[str, Any]:
    from tests.fakes import incidentio as fake_incidentio
    from tests.fakes.incidentio import FakeIncidentIO
    from tests.fakes.pagerduty import FakePagerDuty

    tmp = Path(tempfile.mkdtemp(prefix="hub-fanout-"))
    server = EmbeddedRedis(tmp / "redis", appendonly=False).start()
    pd, inc = await FakePagerDuty().start(), await FakeIncidentIO().start()
    if latency:
        async def slow() -> None:
            await asyncio.sleep(latency)
        pd.on_request = inc.on_request = slow
    values: dict[str, Any] = {
        "redis_url": server.url, "hub_admin_token": ADMIN_TOKEN, "alertmanager_webhook_token": WEBHOOK_TOKEN,
        "hub_job_timeout": job_timeout, "pagerduty_routing_key": ROUTING_KEY,
        "pagerduty_events_url": pd.events_url, "incidentio_api_key": fake_incidentio.API_KEY,
        "incidentio_api_url": inc.url,
    }
    if per_job is not None and "hub_max_alerts_per_job" in Settings.model_fields:
        values["hub_max_alerts_per_job"] = per_job
    settings = Settings(_env_file=None, **values)  # type: ignore[call-arg]
    if rate_limits == "off":
        import os

        os.environ.update({"PAGERDUTY_RATE_LIMIT": "0", "INCIDENTIO_RATE_LIMIT": "0"})
    redis = connect(server.url)
    store = Store(redis, settings)
    try:
        async with running_worker(settings):
            started = time.monotonic()
            event_id = (await store.ingest("alertmanager", f"bench-{alerts}", group(alerts), {}, "application/json",
                                           "token")).event_id
            state = None
            while state not in FINAL_STATES:
                await asyncio.sleep(0.5)
                state = (await store.get(event_id) or {}).get("state")
            elapsed = time.monotonic() - started
            timeline = await store.timeline(event_id)
            actions = await store.actions(event_id)
            return {
                "alerts": alerts, "state": state, "seconds": round(elapsed, 1), "pages_opened": len(pd.created),
                "pagerduty_requests": len(pd.requests), "actions": dict(Counter(a["state"] for a in actions.values())),
                "sweeper_requeues": sum(1 for e in timeline if e.get("type") == "requeued"),
                "chunks": sum(1 for e in timeline if e.get("type") == "chunk"),
                "job_timeout": job_timeout, "rate_limits": rate_limits, "latency": latency,
            }
    finally:
        await redis.aclose()
        await pd.close()
        await inc.close()
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alerts", type=int, default=300)
    ap.add_argument("--job-timeout", type=float, default=60)
    ap.add_argument("--per-job", type=int, default=None, help="HUB_MAX_ALERTS_PER_JOB (when the hub has it)")
    ap.add_argument("--rate-limits", choices=("default", "off"), default="default")
    ap.add_argument("--latency", type=float, default=0.0, help="seconds each fake upstream takes to answer")
    args = ap.parse_args()
    print(json.dumps(asyncio.run(run(args.alerts, args.job_timeout, args.per_job, args.rate_limits, args.latency))))


if __name__ == "__main__":
    main()
