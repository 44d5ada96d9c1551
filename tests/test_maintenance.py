"""Maintenance windows: from the rules file and the admin API, alerts held back and evaluated
again when the window ends (real ingress, Redis, worker and fake upstreams)."""

from __future__ import annotations

import copy
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from hub.core import metrics
from hub.ingress.app import create_app
from hub.rules import RulesError, load_rules
from hub.rules.maintenance import Cron, CronError, MaintenanceWindow
from hub.storage import keys
from hub.worker.app import release_held
from tests.conftest import FIXTURES, make_settings, wait_for
from tests.test_workflows_e2e import Hub

ADMIN = "ops:maintenance-admin-token"
AUTH = {"Authorization": "Bearer maintenance-admin-token"}
AM_TOKEN = "am-token-for-maintenance"


def alert(fingerprint: str, service: str = "reports", status: str = "firing") -> dict[str, Any]:
    """One Alertmanager alert of `service`, critical, in a real webhook body."""
    data = copy.deepcopy(json.loads((FIXTURES / "alertmanager_firing.json").read_bytes()))
    one = data["alerts"][0]
    one.update(status=status, fingerprint=fingerprint)
    one["labels"] = {"alertname": "DiskFull", "service": service, "severity": "critical"}
    if status == "resolved":
        one["endsAt"] = "2024-06-17T09:00:00Z"
    data.update(status=status, alerts=[one], groupKey=f"{{}}:{{alertname=\"DiskFull\",fp=\"{fingerprint}\"}}")
    data["commonLabels"] = dict(one["labels"])
    data["groupLabels"] = {"alertname": "DiskFull"}
    return data


def rules_file(tmp_path: Path, windows: str) -> Path:
    path = tmp_path / "hub.yaml"
    path.write_text("version: 1\ncatalog:\n  services:\n    reports: {team: data}\n    checkout: {team: payments}\n"
                    "  teams:\n    data: {}\n    payments: {}\n"
                    # one alert's own page (its fingerprint as the key): not its notification group's
                    "  sources:\n    alertmanager: {grouping: per_alert}\n" + windows)
    return path


def iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


async def send_alert(hub: Hub, fingerprint: str, **kw: Any) -> dict[str, Any]:
    return await hub.send("alertmanager", alert(fingerprint, **kw),
                          headers={"Authorization": f"Bearer {AM_TOKEN}", "Content-Type": "application/json"})


async def sweep_held(hub: Hub) -> int:
    """What the worker's sweeper does for held alerts (each sweep, and at start)."""
    worker = hub._workers[0][0]
    return await release_held(worker.ctx)


def settings_for(upstreams: Any, redis_url: str, path: Path) -> Any:
    return upstreams.settings(redis_url, hub_config=path, alertmanager_webhook_token=AM_TOKEN,
                              hub_admin_token=ADMIN)


# -- the file's windows: shape and timing ---------------------------------------------------------

def test_a_recurring_window_stays_at_local_time_across_dst() -> None:
    w = MaintenanceWindow.model_validate({"name": "nightly", "match": {"services": ["reports"]},
                                          "every": "0 2 * * *", "for": "90m", "timezone": "Europe/Berlin"})
    # winter (CET, UTC+1): 02:00 local is 01:00 UTC
    assert w.open_at(datetime(2026, 1, 15, 1, 30, tzinfo=UTC)) is not None
    assert w.open_at(datetime(2026, 1, 15, 0, 30, tzinfo=UTC)) is None
    # summer (CEST, UTC+2): 02:00 local is 00:00 UTC
    start, end = w.open_at(datetime(2026, 7, 15, 0, 30, tzinfo=UTC)) or (None, None)
    assert start == datetime(2026, 7, 15, 0, 0, tzinfo=UTC) and end == datetime(2026, 7, 15, 1, 30, tzinfo=UTC)
    assert w.open_at(datetime(2026, 7, 15, 1, 45, tzinfo=UTC)) is None
    # the night the clocks go forward 02:00 local does not exist: no window that night
    assert w.open_at(datetime(2026, 3, 29, 0, 30, tzinfo=UTC)) is None
    assert w.open_at(datetime(2026, 3, 29, 1, 30, tzinfo=UTC)) is None
    # the night the clocks go back 02:00 local happens twice (00:00 and 01:00 UTC): one window, from the first
    assert w.open_at(datetime(2026, 10, 25, 0, 30, tzinfo=UTC)) == (
        datetime(2026, 10, 25, 0, 0, tzinfo=UTC), datetime(2026, 10, 25, 1, 30, tzinfo=UTC))
    assert w.open_at(datetime(2026, 10, 25, 1, 45, tzinfo=UTC)) is None
    # and the day after the clocks went forward, at the new offset
    assert w.next_open(datetime(2026, 3, 29, 3, 0, tzinfo=UTC)) == (
        datetime(2026, 3, 30, 0, 0, tzinfo=UTC), datetime(2026, 3, 30, 1, 30, tzinfo=UTC))


def test_cron_fields() -> None:
    c = Cron.parse("*/15 22-23 * * 1-5")
    assert c.fires(datetime(2026, 12, 7, 22, 45))  # a Monday
    assert not c.fires(datetime(2026, 12, 6, 22, 45))  # a Sunday
    assert not c.fires(datetime(2026, 12, 7, 22, 40))
    for bad in ("* * * *", "61 * * * *", "a * * * *", "*/0 * * * *"):
        with pytest.raises(CronError):
            Cron.parse(bad)


@pytest.mark.parametrize("window", [
    "  - {name: x, match: {}, start: 2026-12-05T22:00:00Z, end: 2026-12-05T23:00:00Z}",  # matches everything
    "  - {name: x, match: {services: [a]}, start: 2026-12-05T22:00:00Z}",  # no end
    "  - {name: x, match: {services: [a]}, start: 2026-12-05T23:00:00Z, end: 2026-12-05T22:00:00Z}",
    "  - {name: x, match: {services: [a]}, every: '0 2 * * *'}",  # no `for`
    "  - {name: x, match: {services: [a]}, every: '0 2 * * *', for: 2d}",
    "  - {name: x, match: {services: [a]}, every: '0 2 * * *', for: 1h, timezone: Mars/Olympus}",
    "  - {name: x, match: {services: [a]}, every: '0 2 * *', for: 1h}",
    "  - {name: x, match: {services: [a]}, every: '0 2 * * *', for: 1h, start: 2026-12-05T22:00:00Z}",
    "  - {name: x, match: {services: [a]}, every: '0 2 * * *', for: 1h}\n"
    "  - {name: x, match: {services: [b]}, every: '0 3 * * *', for: 1h}",  # same name twice
])
def test_bad_windows_are_refused_at_load(tmp_path: Path, window: str) -> None:
    with pytest.raises(RulesError):
        load_rules(rules_file(tmp_path, "maintenance:\n" + window + "\n"))


# -- end to end -----------------------------------------------------------------------------------

async def test_a_window_from_the_file_holds_an_alert_and_releases_it_when_it_ends(
        tmp_path: Path, redis_url: str, redis: Any, upstreams: Any) -> None:
    now = datetime.now(UTC)
    path = rules_file(tmp_path, f"maintenance:\n  - name: db-upgrade\n    match: {{services: [reports]}}\n"
                                f"    start: {iso(now - timedelta(minutes=5))}\n"
                                f"    end: {iso(now + timedelta(minutes=30))}\n")
    before = metrics.ALERTS_SUPPRESSED.labels("alertmanager")._value.get()
    async with Hub(settings_for(upstreams, redis_url, path), redis) as hub:
        held = await send_alert(hub, "fp-file-1")
        assert held["state"] == "done" and held["reason"] == "suppressed by maintenance window db-upgrade"
        timeline = await hub.store.timeline(held["id"])
        assert [e["window"] for e in timeline if e["type"] == "suppressed"] == ["db-upgrade"]
        # another service's alert is not held
        other = await send_alert(hub, "fp-file-other", service="checkout")
        assert upstreams.pagerduty.calls("/v2/enqueue") and "reason" not in other
        pages_before = len(upstreams.pagerduty.calls("/v2/enqueue"))
        assert await hub.actions(held["id"]) == {}
        assert upstreams.slack.requests == [] or all("DiskFull" not in r.text for r in upstreams.slack.requests)
        assert metrics.ALERTS_SUPPRESSED.labels("alertmanager")._value.get() == before + 1

        # still open: a sweep leaves it held
        assert await sweep_held(hub) == 0
        assert len(upstreams.pagerduty.calls("/v2/enqueue")) == pages_before

        # the window ends (the rules file no longer has it open): the still-firing alert pages
        await redis.zadd(keys.QUIET_DUE, {"fp-file-1": 0})
        path.write_text(path.read_text().replace(iso(now + timedelta(minutes=30)), iso(now - timedelta(minutes=1))))
        hub._workers[0][0].ctx["live"].replace(load_rules(path))
        assert await sweep_held(hub) <= 1  # the worker's own sweep (every 30 s) may have released it first

        async def paged() -> Any:
            calls = [c.json() for c in upstreams.pagerduty.calls("/v2/enqueue")]
            return [c for c in calls if c["dedup_key"] == "fp-file-1"] or None
        (page,) = await wait_for(paged)
        assert page["event_action"] == "trigger"
        again = await hub.final(held["id"])
        assert "reason" not in again or "suppressed" not in again.get("reason", "")
        assert await redis.hlen(keys.QUIET_HELD) == 0


async def test_a_window_from_the_api_holds_an_alert_and_deleting_it_pages(
        tmp_path: Path, redis_url: str, redis: Any, upstreams: Any) -> None:
    path = rules_file(tmp_path, "")
    async with Hub(settings_for(upstreams, redis_url, path), redis) as hub:
        client = hub._client
        assert client is not None
        resp = await client.post("/admin/maintenance", json={"match": {"services": ["reports"]}, "duration": "30m",
                                                             "reason": "disk swap"}, headers=AUTH)
        window = await resp.json()
        assert resp.status == 201, window
        assert window["id"].startswith("mw_") and window["end"] - window["start"] == 30 * 60 * 1000

        listed = await (await client.get("/admin/maintenance", headers=AUTH)).json()
        assert [w["id"] for w in listed["windows"]] == [window["id"]] and listed["windows"][0]["active"]

        held = await send_alert(hub, "fp-api-1")
        assert held["reason"] == f"suppressed by maintenance window {window['id']}"
        assert upstreams.pagerduty.calls("/v2/enqueue") == []

        resp = await client.delete(f"/admin/maintenance/{window['id']}", headers=AUTH)
        ended = await resp.json()
        assert resp.status == 200 and ended["held"] == 1
        assert (await client.delete(f"/admin/maintenance/{window['id']}", headers=AUTH)).status == 404
        assert await sweep_held(hub) <= 1  # the worker's own sweep (every 30 s) may have released it first

        async def paged() -> Any:
            return upstreams.pagerduty.calls("/v2/enqueue") or None
        (page,) = await wait_for(paged)
        assert page.json()["dedup_key"] == "fp-api-1" and page.json()["event_action"] == "trigger"

        entries = [e["action"] for e in (await (await client.get("/admin/audit", headers=AUTH)).json())["audit"]]
        assert entries[:2] == ["maintenance.end", "maintenance.start"]


async def test_an_alert_that_resolved_during_the_window_stays_quiet(
        tmp_path: Path, redis_url: str, redis: Any, upstreams: Any) -> None:
    path = rules_file(tmp_path, "")
    async with Hub(settings_for(upstreams, redis_url, path), redis) as hub:
        client = hub._client
        assert client is not None
        resp = await client.post("/admin/maintenance", json={"match": {"labels": {"alertname": "DiskFull"}},
                                                             "duration": 600}, headers=AUTH)
        window = await resp.json()
        await send_alert(hub, "fp-resolved-1")
        resolved = await send_alert(hub, "fp-resolved-1", status="resolved")
        assert "suppressed" in resolved["reason"]
        assert await redis.hlen(keys.QUIET_HELD) == 0
        await client.delete(f"/admin/maintenance/{window['id']}", headers=AUTH)
        assert await sweep_held(hub) == 0
        assert upstreams.pagerduty.calls("/v2/enqueue") == []


async def test_a_window_that_ended_while_no_worker_ran_is_released_at_start(
        tmp_path: Path, redis_url: str, redis: Any, upstreams: Any) -> None:
    now = datetime.now(UTC)
    end = now + timedelta(seconds=3)
    path = rules_file(tmp_path, f"maintenance:\n  - name: short\n    match: {{teams: [data]}}\n"
                                f"    start: {iso(now - timedelta(minutes=1))}\n    end: {iso(end)}\n")
    settings = settings_for(upstreams, redis_url, path)
    async with Hub(settings, redis) as hub:
        held = await send_alert(hub, "fp-down-1")
        assert held["reason"] == "suppressed by maintenance window short"
    # no worker while the window ends
    while datetime.now(UTC) < end:
        time.sleep(0.2)
    async with Hub(settings, redis) as hub:  # the sweeper runs at start

        async def paged() -> Any:
            return upstreams.pagerduty.calls("/v2/enqueue") or None
        (page,) = await wait_for(paged, timeout=15)
        assert page.json()["dedup_key"] == "fp-down-1"
        timeline = await hub.store.timeline(held["id"])
        assert any(e["type"] == "window_ended" for e in timeline)


async def test_a_declared_incident_is_never_suppressed(tmp_path: Path, redis_url: str, redis: Any) -> None:
    from hub.core.events import NormalisedEvent
    from hub.rules import load_rules as load
    from hub.worker.quiet import Quiet

    path = rules_file(tmp_path, "maintenance:\n  - name: all-sources\n    match: {services: [checkout]}\n"
                                "    every: '* * * * *'\n    for: 1h\n")
    quiet = Quiet(redis, lambda: load(path))
    events = [NormalisedEvent(kind="incident.declared", source="people", fingerprint="p:1", services=["checkout"]),
              NormalisedEvent(kind="alert.firing", source="monitor", fingerprint="m:1", services=["checkout"])]
    held, fresh = await quiet.decide({"id": "ev_x"}, events)
    assert fresh and list(held) == [1]


# -- admin input ---------------------------------------------------------------------------------

@pytest.mark.parametrize("body", [
    b"not json", b"[]", b'{"match": {}}', b'{"match": {"services": ["a"]}}',
    b'{"match": {"services": ["a"]}, "duration": "30m", "ends_at": "2030-01-01T00:00:00Z"}',
    b'{"match": {"services": ["a"]}, "duration": "forever"}', b'{"match": {"services": ["a"]}, "duration": -5}',
    b'{"match": {"services": ["a"]}, "duration": "30d"}', b'{"match": {"services": ["a"]}, "ends_at": "yesterday"}',
    b'{"match": {"services": ["a"]}, "ends_at": "2001-01-01T00:00:00Z"}',
    b'{"match": {"services": ["a"]}, "ends_at": "2030-01-01T00:00:00"}',
    b'{"match": {"services": "a", "nope": 1}, "duration": "1m"}', b'{"match": {"labels": {"a": 1}}, "duration": 1}',
    b'{"match": {"services": ["a"]}, "duration": "1m", "reason": ' + b'"' + b"x" * 600 + b'"}',
    b'{"match": {"services": ["\\ud800"]}, "duration": 1e400}',
])
async def test_bad_window_requests_are_400(redis_url: str, redis: Any, body: bytes) -> None:
    settings = make_settings(redis_url, hub_admin_token=ADMIN)
    async with TestClient(TestServer(create_app(settings))) as client:
        resp = await client.post("/admin/maintenance", data=body, headers={**AUTH, "Content-Type": "application/json"})
        assert resp.status == 400, await resp.text()
        assert (await resp.json())["error"] == "bad_request"


@pytest.mark.parametrize("window_id", ["mw_0000000000000000", "nope", "..%2F..", "mw_" + "f" * 300, "%00"])
async def test_ending_an_unknown_window_is_404(redis_url: str, redis: Any, window_id: str) -> None:
    settings = make_settings(redis_url, hub_admin_token=ADMIN)
    async with TestClient(TestServer(create_app(settings))) as client:
        resp = await client.delete(f"/admin/maintenance/{window_id}", headers=AUTH)
        assert resp.status == 404
        assert (await client.get("/admin/maintenance")).status == 401
        assert (await client.post("/admin/maintenance", headers={"Authorization": "Bearer wrong"})).status == 403


def test_simulate_says_a_window_would_suppress(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hub.cli.main import main

    now = datetime.now(UTC)
    path = rules_file(tmp_path, f"maintenance:\n  - name: db-upgrade\n    match: {{services: [reports]}}\n"
                                f"    start: {iso(now - timedelta(minutes=5))}\n"
                                f"    end: {iso(now + timedelta(minutes=30))}\n")
    body = tmp_path / "alert.json"
    body.write_text(json.dumps(alert("fp-sim")))
    assert main(["simulate", "alertmanager", str(body), "--config", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["held"]["0"].startswith("would be suppressed by maintenance window db-upgrade until ")
    assert main(["simulate", "alertmanager", str(body), "--config", str(path)]) == 0
    assert "would be suppressed by maintenance window db-upgrade" in capsys.readouterr().out


async def test_a_window_holds_a_missed_heartbeat_too(tmp_path: Path, redis: Any) -> None:
    from hub.core.events import NormalisedEvent
    from hub.rules import load_rules as load
    from hub.storage.batch import Batch
    from hub.worker.quiet import Quiet

    path = rules_file(tmp_path, "maintenance:\n  - name: monitoring-work\n    match: {services: [reports]}\n"
                                "    every: '* * * * *'\n    for: 1h\n")
    quiet = Quiet(redis, lambda: load(path))
    missed = NormalisedEvent(kind="heartbeat.missed", source="heartbeat", fingerprint="heartbeat:job",
                             services=["reports"])
    held, _ = await quiet.decide({"id": "ev_hb"}, [missed])
    assert list(held) == [0]
    p = Batch()
    quiet.commit_into(p, {"id": "ev_hb"}, keys.event("ev_hb"), [missed], held)
    await p.execute(redis)
    assert await redis.hexists(keys.QUIET_HELD, "heartbeat:job")
    recovered = missed.model_copy(update={"kind": "heartbeat.recovered"})
    held, _ = await quiet.decide({"id": "ev_hb2"}, [recovered])
    p = Batch()
    quiet.commit_into(p, {"id": "ev_hb2"}, keys.event("ev_hb2"), [recovered], held)
    await p.execute(redis)
    assert not await redis.hexists(keys.QUIET_HELD, "heartbeat:job")
