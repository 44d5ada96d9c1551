"""An outage storm (issue 12): what the hub sends on-call when one service goes down.

300 alerts in one Alertmanager group (the group grows over ~10 s, notified once a second, as
Alertmanager resends a group when alerts join) and 150 distinct Datadog P1 monitors on the
same service (15 a second), then every alert resolves (one group notification, 150
recoveries). One worker with the connectors' real default rate limits, against the fake
PagerDuty, incident.io, Slack and Statuspage on loopback; the service opted in to Statuspage.
Deliveries are recorded as the ingress records them. Not a test: nothing here asserts.

Prints: PagerDuty pages (triggers, distinct dedup keys), incident.io incidents, notes and
edits, Slack messages (webhook posts and Web API posts) and Web API edits, Statuspage
incidents, seconds until every event is final, pages and hub incidents left open after
everything resolved. (The fakes never answer 429: the hub's own limiter paces
the calls at the real limits.)

    python -m bench.storm --mode before   # grouping: per_alert, no correlation (as before issue 12)
    python -m bench.storm --mode after    # the built-in group handling + grouping: {by: [service]}
    python -m bench.storm --slack api     # Slack through the Web API (a bot token: the living message)
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.inproc import ADMIN_TOKEN, ROUTING_KEY, WEBHOOK_TOKEN, running_worker
from hub.core.registry import connector_classes
from hub.core.settings import Settings
from hub.storage.connection import connect
from hub.storage.embedded_redis import EmbeddedRedis
from hub.storage.event_store import FINAL_STATES, Store
from hub.storage.incidents import INDEX, IncidentStore
from hub.storage.ratelimit import parse_rate

ROOT = Path(__file__).resolve().parents[1]
INBOUND = ROOT / "tests" / "fixtures" / "inbound"
DEFAULTS = ROOT / "hub" / "rules" / "defaults.yaml"


def rules(mode: str, tmp: Path) -> Path:
    """The built-in rules with `checkout` opted in to Statuspage; per mode, grouping or not."""
    text = DEFAULTS.read_text().replace("\n  services: {}\n", "\n  services: {checkout: {statuspage: true}}\n")
    if mode == "before":
        text = text.replace("\n  sources: {}\n", "\n  sources: {alertmanager: {grouping: per_alert}}\n")
    else:
        text += "\ngrouping:\n  by: [service]\n  window: 5m\n"
    path = tmp / "hub.yaml"
    path.write_text(text)
    return path


def am_group(n: int, status: str) -> bytes:
    data = json.loads((INBOUND / "alertmanager_firing.json").read_bytes())
    template = data["alerts"][0]
    alerts = []
    for i in range(n):
        alert = copy.deepcopy(template)
        alert.update(fingerprint=f"{0xC0000000 + i:016x}", status=status,
                     endsAt="2024-06-17T09:00:00Z" if status == "resolved" else "0001-01-01T00:00:00Z")
        alert["labels"] = {**alert["labels"], "pod": f"checkout-db-{i}", "service": "checkout",
                           "severity": "critical"}
        alerts.append(alert)
    data.update(alerts=alerts, status=status, groupKey='{}:{alertname="KubePodCrashLooping", service="checkout"}')
    return json.dumps(data).encode()


def dd_alert(i: int, transition: str) -> bytes:
    name = "datadog_alert_triggered.json" if transition == "Triggered" else "datadog_alert_recovered.json"
    body = json.loads((INBOUND / name).read_bytes())
    body.update(id=f"{7800000000000000000 + i * 2 + (transition != 'Triggered')}", alert_id=str(50000000 + i),
                alert_scope=f"host:db-{i}", hostname=f"db-{i}",
                title=f"[{transition}] [P1] checkout check {i}", alert_priority="P1",
                tags=f"env:prod,host:db-{i},service:checkout")
    return json.dumps(body).encode()


def interval(connector: str) -> float:
    """Seconds between calls at the connector's default limit (the worker runs with them)."""
    rate = parse_rate(connector_classes()[connector].default_rate_limit)
    assert rate is not None, f"{connector} has no default rate limit"
    return rate


def pace_report(started: float, elapsed: float, arrived: float, calls: dict[str, list[float]]) -> dict[str, Any]:
    """How close to the rate limits the storm was drained.

    No hub could be final before the last webhook arrived, nor before a rate-limited upstream
    has taken its calls one interval apart from the start of the storm: the larger of the two
    is the unavoidable time (`unavoidable_s`) for the calls this run made (`at_limit_s` per upstream).
    """
    per: dict[str, Any] = {}
    bound = arrived
    for name, times in calls.items():
        if not times:
            continue
        times = sorted(t - started for t in times)
        every = interval(name)
        floor = (len(times) - 1) * every
        bound = max(bound, floor)
        per[name] = {"calls": len(times), "first_s": round(times[0], 1), "last_s": round(times[-1], 1),
                     "at_limit_s": round(floor, 1)}
    return {"arrived_s": round(arrived, 1), "unavoidable_s": round(bound, 1),
            "ratio_to_unavoidable": round(elapsed / bound, 2), "upstreams": per}


async def run(mode: str, seconds: float, slack_mode: str = "webhook") -> dict[str, Any]:
    from tests.fakes import incidentio as fake_incidentio
    from tests.fakes import statuspage as fake_statuspage
    from tests.fakes.incidentio import FakeIncidentIO
    from tests.fakes.pagerduty import FakePagerDuty
    from tests.fakes.slack import BOT_TOKEN, FakeSlack, FakeSlackApi
    from tests.fakes.statuspage import FakeStatuspage

    tmp = Path(tempfile.mkdtemp(prefix="hub-storm-"))
    server = EmbeddedRedis(tmp / "redis", appendonly=False).start()
    pd, inc = await FakePagerDuty().start(), await FakeIncidentIO().start()
    slack, sp = await FakeSlack().start(), await FakeStatuspage().start()
    slack_api = await FakeSlackApi().start()
    api = {"slack_bot_token": BOT_TOKEN, "slack_api_url": slack_api.api_url, "slack_channel": "C0INCIDENT"} \
        if slack_mode == "api" else {}
    settings = Settings(_env_file=None, **{  # type: ignore[arg-type]
        "redis_url": server.url, "hub_admin_token": ADMIN_TOKEN, "alertmanager_webhook_token": WEBHOOK_TOKEN,
        "datadog_webhook_token": WEBHOOK_TOKEN, "hub_config": rules(mode, tmp),
        "pagerduty_routing_key": ROUTING_KEY, "pagerduty_events_url": pd.events_url,
        "incidentio_api_key": fake_incidentio.API_KEY, "incidentio_api_url": inc.url,
        "slack_webhook_url": slack.webhook_url, "statuspage_api_key": fake_statuspage.API_KEY,
        "statuspage_page_id": fake_statuspage.PAGE_ID, "statuspage_api_url": sp.url, **api})
    redis = connect(server.url)
    store = Store(redis, settings)
    ids: list[str] = []

    async def ingest(source: str, delivery: str, body: bytes) -> None:
        ids.append((await store.ingest(source, delivery, body, {}, "application/json", "token")).event_id)

    async def all_final() -> float:
        """The wall-clock time (epoch s) the last event became final, once all have."""
        while True:
            records = [await store.get(i) or {} for i in ids]
            if all(r.get("state") in FINAL_STATES for r in records):
                return max(int(r["updated_at"]) for r in records) / 1000
            await asyncio.sleep(0.25)
    try:
        async with running_worker(settings):
            started, started_epoch = time.monotonic(), time.time()
            ticks = 10
            for tick in range(ticks):  # the storm: the group grows, Datadog monitors fire
                await ingest("alertmanager", f"am-{tick}", am_group(30 * (tick + 1), "firing"))
                for i in range(15 * tick, 15 * (tick + 1)):
                    await ingest("datadog", f"dd-fire-{i}", dd_alert(i, "Triggered"))
                await asyncio.sleep(seconds / ticks)
            await ingest("alertmanager", "am-resolved", am_group(300, "resolved"))  # everything recovers
            for i in range(150):
                await ingest("datadog", f"dd-ok-{i}", dd_alert(i, "Recovered"))
            ingested_by = time.monotonic() - started
            elapsed = await all_final() - started_epoch
            await asyncio.sleep(2)  # anything a final event left behind
            pacing = pace_report(started, elapsed, ingested_by, {
                "pagerduty": [r.at for r in pd.requests],
                "incidentio": [r.at for r in inc.requests],
                "slack": [r.at for r in slack.requests] + [r.at for r in slack_api.requests
                                                           if r.path.startswith("/api/chat.")],
                "statuspage": [r.at for r in sp.requests if r.method != "GET"]})
            incidents = IncidentStore(redis, settings.hub_retention)
            keys = [k.decode() for k in await redis.zrange(INDEX, 0, -1)]
            states = await incidents.get_many(keys)
            triggers = [r for r in pd.requests if r.json().get("event_action") == "trigger"]
            return {
                "mode": mode, "slack": slack_mode, "events": len(ids), "pages": len(triggers),
                "page_dedup_keys": len({r.json()["dedup_key"] for r in triggers}),
                "incidentio_incidents": len(inc.created),
                "slack_messages": len(slack.requests) + len(slack_api.calls("/api/chat.postMessage")),
                "slack_edits": len(slack_api.calls("/api/chat.update")),
                "slack_api_calls": len(slack_api.requests),
                "incidentio_notes": len(inc.calls("/v2/incident_timeline_items", "POST")),
                "incidentio_updates": sum(1 for r in inc.requests if r.path.endswith("/actions/edit")),
                "statuspage_incidents": len(sp.created), "seconds_to_all_final": round(elapsed, 1),
                "pages_left_open": sum(1 for a in pd.alerts.values() if a.status != "resolved"),
                "hub_incidents": len(keys),
                "hub_incidents_left_open": sum(1 for s in states.values() if s and not s.get("resolved_at")),
                **pacing,
            }
    finally:
        await redis.aclose()
        for fake in (pd, inc, slack, sp, slack_api):
            await fake.close()
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=("before", "after"), default="after")
    ap.add_argument("--slack", choices=("webhook", "api"), default="webhook",
                    help="Slack through the incoming webhook, or the Web API (a bot token: one living message)")
    ap.add_argument("--seconds", type=float, default=10.0, help="how long the storm takes to arrive")
    args = ap.parse_args()
    print(json.dumps(asyncio.run(run(args.mode, args.seconds, args.slack))))


if __name__ == "__main__":
    main()
