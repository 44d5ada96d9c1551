"""Heartbeats end to end: pings over HTTP, missed → an incident through the workflows, the next
ping resolves it; pause; a Watchdog alert as the ping; restarts. Real ingress, Redis, worker,
fake upstreams; the missed check is called with a chosen time (the worker's cron calls it
every 5 s with the clock)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from hub.core import metrics
from hub.ingress.app import create_app
from hub.rules import RulesError, load_rules
from hub.storage import keys
from hub.storage.event_store import now_ms, state_idx
from hub.worker.heartbeats import Heartbeats
from tests.conftest import FIXTURES, make_settings, wait_for
from tests.test_workflows_e2e import Hub

TOKEN = "hb-secret-token-1"
ADMIN = "ops:hb-admin-token"
AUTH = {"Authorization": "Bearer hb-admin-token"}
AM_TOKEN = "am-token-for-heartbeats"
RULES = """version: 1
catalog:
  services:
    monitoring: {team: sre}
  teams:
    sre: {}
heartbeats:
  nightly-job: {interval: 10s, grace: 2s, service: monitoring, severity: SEV2, token: env:HB_TEST_TOKEN}
  alertmanager-watchdog:
    interval: 1m
    grace: 2m
    service: monitoring
    severity: SEV2
    token: env:HB_TEST_TOKEN
    alertname: Watchdog
"""


@pytest.fixture
def rules_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HB_TEST_TOKEN", TOKEN)
    path = tmp_path / "hub.yaml"
    path.write_text(RULES)
    return path


def settings_for(upstreams: Any, redis_url: str, path: Path) -> Any:
    return upstreams.settings(redis_url, hub_config=path, alertmanager_webhook_token=AM_TOKEN,
                              hub_admin_token=ADMIN)


class Beats:
    """The worker's `Heartbeats`, once the worker has started."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    async def get(self) -> Heartbeats:
        ctx = self.hub._workers[0][0].ctx
        await wait_for(lambda: _ready(ctx))
        return ctx["processor"].quiet.heartbeats

    async def check(self, at_ms: int | None = None) -> int:
        return await (await self.get()).check(at_ms)

    async def record(self) -> int:
        return await (await self.get()).record()

    async def state(self, name: str) -> dict[str, Any]:
        return await (await self.get()).state.state(name)

    async def claim_missed(self, name: str, at_ms: int) -> bool:
        return await (await self.get()).state.claim_missed(name, at_ms)


async def _ready(ctx: dict[str, Any]) -> bool:
    return "processor" in ctx


def beats(hub: Hub) -> Beats:
    return Beats(hub)


def client(hub: Hub) -> TestClient:
    assert hub._client is not None
    return hub._client


def watchdog_body(status: str = "firing") -> bytes:
    """Alertmanager's always-firing Watchdog, as its webhook sends it."""
    data = copy.deepcopy(json.loads((FIXTURES / "alertmanager_firing.json").read_bytes()))
    one = data["alerts"][0]
    one.update(status=status, fingerprint="e3b0c44298fc1c14")
    one["labels"] = {"alertname": "Watchdog", "prometheus": "monitoring/k8s", "severity": "none"}
    one["annotations"] = {"summary": "An alert that should always be firing to certify that Alertmanager "
                                     "is working properly."}
    data.update(status=status, alerts=[one], groupKey='{}:{alertname="Watchdog"}',
                commonLabels=dict(one["labels"]), groupLabels={"alertname": "Watchdog"})
    return json.dumps(data).encode()


async def idle(redis: Any) -> bool:
    return not (await redis.zcard(state_idx("accepted")) or await redis.zcard(state_idx("processing")))


async def pages(upstreams: Any, key: str) -> list[dict[str, Any]]:
    return [c.json() for c in upstreams.pagerduty.calls("/v2/enqueue") if c.json().get("dedup_key") == key]


async def test_missed_pages_and_the_next_ping_resolves(rules_path: Path, redis_url: str, redis: Any,
                                                       upstreams: Any) -> None:
    before = metrics.HEARTBEATS_MISSED.labels("nightly-job")._value.get()
    async with Hub(settings_for(upstreams, redis_url, rules_path), redis) as hub:
        resp = await client(hub).post("/heartbeats/nightly-job", headers={"Authorization": f"Bearer {TOKEN}"})
        body = await resp.json()
        assert resp.status == 200 and body["name"] == "nightly-job" and body["next_due"].endswith("Z")
        pinged = now_ms()
        assert await beats(hub).check(pinged + 5_000) == 0  # within the interval
        assert await beats(hub).check(pinged + 11_000) == 0  # within the grace
        assert await beats(hub).check(pinged + 12_500) == 1
        assert await beats(hub).check(pinged + 30_000) == 0  # missed once, not again and again
        assert metrics.HEARTBEATS_MISSED.labels("nightly-job")._value.get() == before + 1

        async def triggered() -> Any:
            return await pages(upstreams, "heartbeat:nightly-job") or None
        (page,) = await wait_for(triggered)
        assert page["event_action"] == "trigger" and "Heartbeat nightly-job missed" in page["payload"]["summary"]
        state = await hub.incidents.get("heartbeat:nightly-job")
        assert state and not state.get("resolved_at") and state["services"] == ["monitoring"]

        resp = await client(hub).get(f"/heartbeats/nightly-job?token={TOKEN}")  # a pinger without headers
        assert resp.status == 200
        await beats(hub).check()

        async def resolved() -> Any:
            calls = await pages(upstreams, "heartbeat:nightly-job")
            return calls if len(calls) == 2 else None
        calls = await wait_for(resolved)
        assert calls[1]["event_action"] == "resolve"
        assert (await hub.incidents.get("heartbeat:nightly-job"))["resolved_at"]


async def test_a_paused_heartbeat_is_never_missed(rules_path: Path, redis_url: str, redis: Any,
                                                  upstreams: Any) -> None:
    async with Hub(settings_for(upstreams, redis_url, rules_path), redis) as hub:
        await client(hub).get(f"/heartbeats/nightly-job?token={TOKEN}")
        resp = await client(hub).post("/admin/heartbeats/nightly-job/pause", headers=AUTH)
        assert resp.status == 200 and (await resp.json())["paused"] is True
        assert await beats(hub).check(now_ms() + 120_000) == 0  # the watchdog is not due yet either
        listed = await (await client(hub).get("/admin/heartbeats", headers=AUTH)).json()
        (nightly,) = [b for b in listed["heartbeats"] if b["name"] == "nightly-job"]
        assert nightly["paused"] and nightly["due"] is None
        resp = await client(hub).post("/admin/heartbeats/nightly-job/resume", headers=AUTH)
        assert resp.status == 200
        resumed = now_ms()
        assert await beats(hub).check(resumed + 5_000) == 0
        assert await beats(hub).check(resumed + 13_000) == 1
        assert (await client(hub).post("/admin/heartbeats/nope/pause", headers=AUTH)).status == 404
        audit = (await (await client(hub).get("/admin/audit", headers=AUTH)).json())["audit"]
        assert [e["action"] for e in audit[:2]] == ["heartbeat.resume", "heartbeat.pause"]


async def test_a_watchdog_alert_is_a_ping_and_never_pages(rules_path: Path, redis_url: str, redis: Any,
                                                          upstreams: Any) -> None:
    async with Hub(settings_for(upstreams, redis_url, rules_path), redis) as hub:
        headers = {"Authorization": f"Bearer {AM_TOKEN}", "Content-Type": "application/json"}
        start = now_ms()
        first = await hub.send("alertmanager", watchdog_body(), headers=headers)
        assert first["reason"] == "a ping of heartbeat alertmanager-watchdog (never pages)"
        assert upstreams.pagerduty.calls("/v2/enqueue") == []
        state = await beats(hub).state("alertmanager-watchdog")
        assert state["last_ping"] >= start and state["due"] >= start + 180_000

        # Alertmanager stops: missed within interval + grace
        await beats(hub).check(state["last_ping"] + 179_000)
        assert (await beats(hub).state("alertmanager-watchdog"))["missed_at"] is None
        await wait_for(lambda: idle(redis))  # an alert not worked yet could be its ping: the check waits
        await beats(hub).check(state["last_ping"] + 181_000)
        assert (await beats(hub).state("alertmanager-watchdog"))["missed_at"]

        async def triggered() -> Any:
            return await pages(upstreams, "heartbeat:alertmanager-watchdog") or None
        (page,) = await wait_for(triggered)
        assert page["event_action"] == "trigger"

        # it comes back: the Watchdog's repeat notification resolves the incident
        again = json.loads(watchdog_body())
        again["alerts"][0]["startsAt"] = "2024-06-17T09:12:41.512Z"  # a new delivery
        await hub.send("alertmanager", json.dumps(again).encode(), headers=headers)
        await beats(hub).check()

        async def resolved() -> Any:
            calls = await pages(upstreams, "heartbeat:alertmanager-watchdog")
            return calls if len(calls) == 2 else None
        assert (await wait_for(resolved))[1]["event_action"] == "resolve"


async def test_a_restart_during_the_grace_period_neither_fires_nor_loses_it(
        rules_path: Path, redis_url: str, redis: Any, upstreams: Any) -> None:
    settings = settings_for(upstreams, redis_url, rules_path)
    async with Hub(settings, redis) as hub:
        await client(hub).post("/heartbeats/nightly-job", headers={"Authorization": f"Bearer {TOKEN}"})
        pinged = (await beats(hub).state("nightly-job"))["last_ping"]
    async with Hub(settings, redis) as hub:  # worker and web restarted within the grace
        assert await beats(hub).check(pinged + 11_000) == 0
        assert await beats(hub).check(pinged + 12_500) == 1


async def test_no_heartbeat_is_missed_while_no_web_process_could_take_pings(
        rules_path: Path, redis_url: str, redis: Any, upstreams: Any) -> None:
    settings = settings_for(upstreams, redis_url, rules_path)
    async with Hub(settings, redis) as hub:
        await client(hub).get(f"/heartbeats/nightly-job?token={TOKEN}")
        pinged = (await beats(hub).state("nightly-job"))["last_ping"]
        await redis.delete(keys.HEARTBEATS_INGRESS)  # the web has been gone a while
        assert await beats(hub).check(pinged + 60_000) == 0
        assert (await beats(hub).state("nightly-job"))["missed_at"] is None


async def test_a_missed_event_decided_before_a_crash_is_recorded_once(
        rules_path: Path, redis_url: str, redis: Any, upstreams: Any) -> None:
    settings = settings_for(upstreams, redis_url, rules_path)
    async with Hub(settings, redis) as hub:
        await client(hub).get(f"/heartbeats/nightly-job?token={TOKEN}")
        pinged = (await beats(hub).state("nightly-job"))["last_ping"]
        # the claim happened, then the worker died before recording: the outbox still holds it
        assert await beats(hub).claim_missed("nightly-job", pinged + 13_000)
        assert await redis.zcard(keys.HEARTBEATS_OUTBOX) == 1
        await beats(hub).record()
        await beats(hub).record()  # and a second worker records it again: one event
        await redis.zadd(keys.HEARTBEATS_OUTBOX, {f"missed|nightly-job|{pinged + 12_000}": 1})
        await beats(hub).record()

        async def triggered() -> Any:
            return await pages(upstreams, "heartbeat:nightly-job") or None
        assert len(await wait_for(triggered)) == 1
        assert await redis.zcard(keys.HEARTBEATS_OUTBOX) == 0


# -- input ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("path", "headers", "status"), [
    ("/heartbeats/unknown", {"Authorization": f"Bearer {TOKEN}"}, 404),
    ("/heartbeats/nightly-job", {}, 401),
    ("/heartbeats/nightly-job", {"Authorization": "Bearer wrong"}, 401),
    ("/heartbeats/nightly-job", {"Authorization": f"Basic {TOKEN}"}, 401),
    ("/heartbeats/nightly-job?token=", {}, 401),
    ("/heartbeats/nightly-job?token=" + TOKEN[:-1], {}, 401),
    ("/heartbeats/nightly-job?token=%FF%FE", {}, 401),
    ("/heartbeats/%00", {}, 404),
    ("/heartbeats/" + "a" * 5000, {}, 404),
    ("/heartbeats/..%2F..%2Fadmin", {}, 404),
    ("/heartbeats/nightly-job", {"Authorization": "Bearer " + "x" * 4000}, 401),
])
async def test_bad_pings_are_refused(rules_path: Path, redis_url: str, redis: Any, path: str,
                                     headers: dict[str, str], status: int) -> None:
    settings = make_settings(redis_url, hub_config=rules_path)
    async with TestClient(TestServer(create_app(settings))) as c:
        for method in ("GET", "POST"):
            resp = await c.request(method, path, headers=headers)
            assert resp.status == status, await resp.text()
            assert "error" in await resp.json()


async def test_a_token_whose_variable_is_unset_refuses_pings(rules_path: Path, redis_url: str, redis: Any,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_settings(redis_url, hub_config=rules_path)
    async with TestClient(TestServer(create_app(settings))) as c:
        monkeypatch.delenv("HB_TEST_TOKEN")
        assert (await c.get("/heartbeats/nightly-job?token=")).status == 401
        assert (await c.get(f"/heartbeats/nightly-job?token={TOKEN}")).status == 401


@pytest.mark.parametrize("beat", [
    "{interval: 5s, service: m, token: env:X}", "{interval: 49h, service: m, token: env:X}",
    "{interval: 1m, grace: -1s, service: m, token: env:X}", "{interval: 1m, service: m}",
    "{interval: 1m, token: env:X}", "{interval: soon, service: m, token: env:X}",
])
def test_bad_heartbeats_are_refused_at_load(tmp_path: Path, beat: str) -> None:
    path = tmp_path / "hub.yaml"
    path.write_text(f"version: 1\nheartbeats:\n  x: {beat}\n")
    with pytest.raises(RulesError):
        load_rules(path)


def test_heartbeat_names_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "hub.yaml"
    path.write_text("version: 1\nheartbeats:\n  'Bad Name': {interval: 1m, service: m, token: env:X}\n")
    with pytest.raises(RulesError):
        load_rules(path)
