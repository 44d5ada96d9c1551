"""Deploy quiet periods: a deploy of a service with `deploy_quiet` holds its alerts until that
long after success; a failure ends it at once; `deploy_quiet_max` caps it. Real Redis; the
worker's `Quiet` as the executor calls it, and end to end through the real worker."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hub.core.events import NormalisedEvent
from hub.rules import load_rules
from hub.storage import keys
from hub.storage.event_store import now_ms
from hub.worker.quiet import Quiet

RULES = """version: 1
catalog:
  deploy_quiet_max: 30m
  services:
    checkout: {team: payments, deploy_quiet: 10m, aliases: [checkout-repo]}
    reports: {team: data}
  teams:
    payments: {}
    data: {}
"""


def ev(kind: str, service: str = "checkout-repo", fp: str = "d1") -> NormalisedEvent:
    return NormalisedEvent(kind=kind, source="ci", fingerprint=fp, services=[service], attributes={"sha": "abc123"})


def alert(service: str = "checkout", fp: str = "a1") -> NormalisedEvent:
    return NormalisedEvent(kind="alert.firing", source="monitor", fingerprint=fp, services=[service])


async def window(redis: Any, service: str = "checkout") -> dict[str, Any] | None:
    raw = await redis.hget(keys.MAINTENANCE_WINDOWS, f"deploy:{service}")
    return json.loads(raw) if raw else None


def quiet_for(tmp_path: Path, redis: Any) -> Quiet:
    path = tmp_path / "hub.yaml"
    path.write_text(RULES)
    rules = load_rules(path)
    return Quiet(redis, lambda: rules)


async def test_success_holds_alerts_for_the_quiet_period_then_not(tmp_path: Path, redis: Any) -> None:
    quiet = quiet_for(tmp_path, redis)
    await quiet.deploys({"id": "ev_a"}, [ev("deploy.started")])
    w = await window(redis)
    assert w is not None and w["end"] - w["start"] == 30 * 60 * 1000  # until deploy_quiet_max at most
    held, _ = await quiet.decide({"id": "ev_b"}, [alert(), alert("reports", "a2")])
    assert list(held) == [0] and held[0]["name"] == "deploy of checkout"

    await quiet.deploys({"id": "ev_c"}, [ev("deploy.succeeded")])
    w = await window(redis)
    assert w is not None and abs(w["end"] - (now_ms() + 10 * 60 * 1000)) < 5_000
    held, _ = await quiet.decide({"id": "ev_d"}, [alert()])
    assert list(held) == [0]
    timeline = [json.loads(e) for e in await redis.lrange(keys.event_timeline("ev_c"), 0, -1)]
    assert timeline[-1]["type"] == "deploy_quiet" and timeline[-1]["kind"] == "deploy.succeeded"


async def test_a_failure_ends_the_quiet_period_at_once(tmp_path: Path, redis: Any) -> None:
    quiet = quiet_for(tmp_path, redis)
    await quiet.deploys({"id": "ev_a"}, [ev("deploy.started")])
    held, _ = await quiet.decide({"id": "ev_b"}, [alert()])
    assert held
    # the held alert is due when the period ends: a failure makes it due now
    from hub.storage.batch import Batch
    p = Batch()
    quiet.commit_into(p, {"id": "ev_b"}, keys.event("ev_b"), [alert()], held)
    await p.execute(redis)
    await quiet.deploys({"id": "ev_c"}, [ev("deploy.failed")])
    assert (await window(redis))["end"] <= now_ms()
    assert (await redis.zscore(keys.QUIET_DUE, "a1")) <= now_ms()
    held, _ = await quiet.decide({"id": "ev_d"}, [alert()])
    assert held == {}
    released: list[str] = []

    async def replay(event_id: str) -> None:
        released.append(event_id)
    assert await quiet.release_due(replay) == 1 and released == ["ev_b"]


async def test_no_status_ever_the_period_ends_at_the_max(tmp_path: Path, redis: Any) -> None:
    quiet = quiet_for(tmp_path, redis)
    await quiet.deploys({"id": "ev_a"}, [ev("deploy.started")])
    w = await window(redis)
    assert w is not None
    # a success long after the start cannot stretch it past deploy_quiet_max from the start
    w.update(start=now_ms() - 25 * 60 * 1000, end=now_ms() + 5 * 60 * 1000)
    await redis.hset(keys.MAINTENANCE_WINDOWS, "deploy:checkout", json.dumps(w))
    await quiet.deploys({"id": "ev_b"}, [ev("deploy.succeeded")])
    w2 = await window(redis)
    assert w2 is not None and w2["end"] == w["start"] + 30 * 60 * 1000


async def test_services_without_deploy_quiet_and_failures_without_a_start_do_nothing(
        tmp_path: Path, redis: Any) -> None:
    quiet = quiet_for(tmp_path, redis)
    await quiet.deploys({"id": "ev_a"}, [ev("deploy.started", "reports"), ev("deploy.failed")])
    assert await redis.hlen(keys.MAINTENANCE_WINDOWS) == 0


async def test_end_to_end_a_deploy_holds_an_alert_and_its_failure_pages_it(
        tmp_path: Path, redis_url: str, redis: Any, upstreams: Any) -> None:
    from tests.conftest import github_deploy, wait_for
    from tests.test_maintenance import send_alert, settings_for, sweep_held
    from tests.test_workflows_e2e import Hub

    path = tmp_path / "hub.yaml"
    path.write_text("version: 1\ncatalog:\n  services:\n    reports: {team: data, deploy_quiet: 10m, "
                    "aliases: [Hello-World]}\n  teams:\n    data: {}\n"
                    "  sources:\n    alertmanager: {grouping: per_alert}\n")  # the alert's own page key
    async with Hub(settings_for(upstreams, redis_url, path), redis) as hub:
        body, headers = github_deploy("github_deployment.json", delivery="dq-start")
        started = await hub.send("github", body, headers=headers)
        assert any(e["type"] == "deploy_quiet" for e in await hub.store.timeline(started["id"]))
        held = await send_alert(hub, "fp-deploy-1")
        assert held["reason"] == "suppressed by maintenance window deploy of reports"
        assert upstreams.pagerduty.calls("/v2/enqueue") == []

        body, headers = github_deploy("github_deployment_status_failure.json", delivery="dq-fail")
        await hub.send("github", body, headers=headers)
        assert await sweep_held(hub) <= 1  # the worker's own sweep (every 30 s) may have released it first

        async def paged() -> Any:
            calls = [c.json() for c in upstreams.pagerduty.calls("/v2/enqueue")]
            return [c for c in calls if c["dedup_key"] == "fp-deploy-1"] or None
        (page,) = await wait_for(paged)
        assert page["event_action"] == "trigger"
