"""Operator CLI through `hub.cli.main.main([...])` against the real Redis: events, dead-letters, replay, purge."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from hub.cli.main import main
from hub.operators.replay import make_planner
from hub.storage.batch import Batch
from hub.storage.connection import connect
from hub.storage.event_store import ARQ_QUEUE, DEAD, Store, now_ms
from tests.conftest import fixture_request, make_settings
from tests.test_admin import action, seed_event, seed_many


@pytest.fixture
def cli_env(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.delenv("HUB_ADMIN_TOKEN", raising=False)
    return redis_url


def in_store(redis_url: str, fn: Callable[[Store], Awaitable[Any]]) -> Any:
    async def go() -> Any:
        redis = connect(redis_url)
        try:
            return await fn(Store(redis, make_settings(redis_url)))
        finally:
            await redis.aclose()
    return asyncio.run(go())


def cli_json(capsys: pytest.CaptureFixture[str], *argv: str, code: int = 0) -> Any:
    assert main(list(argv)) == code
    return json.loads(capsys.readouterr().out)


async def dead_deploy_event(store: Store) -> tuple[str, str]:
    """The failed-deploy fixture, ingested and then dead-lettered on its planned Slack action."""
    body, headers = fixture_request("github_deployment_status_failure.json")
    kept = {k: v for k, v in headers.items() if k.startswith("X-GitHub") or k == "User-Agent"}
    res = await store.ingest("github", headers["X-GitHub-Delivery"], body, kept, "application/json", "test")
    rec = await store.get(res.event_id)
    _, planned = await make_planner(store, make_settings("")).plan(rec)  # the built-in rules, whatever the store's
    (p,) = planned
    await store.transition(res.event_id, rec["received_at"], "accepted", "dead")
    await store.save_action(res.event_id, {**action(aid=p.id), "name": p.name, "idempotency_key": p.idempotency_key})
    return res.event_id, p.id


def test_events_list_and_show(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    base = now_ms() - 60_000
    done = in_store(cli_env, lambda s: seed_event(s.redis, state="done", actions=[], received_ms=base))
    dead = in_store(cli_env, lambda s: seed_event(s.redis, state="dead", source="grafana",
                                                   kinds=("alert.firing",), received_ms=base + 10))
    out = cli_json(capsys, "events", "list", "--json")
    assert [e["id"] for e in out["events"]] == [dead, done] and out["next_cursor"] is None
    out = cli_json(capsys, "events", "list", "--status", "dead", "--source", "grafana", "--json")
    assert [e["id"] for e in out["events"]] == [dead]
    out = cli_json(capsys, "events", "list", "--limit", "1", "--json")
    assert [e["id"] for e in out["events"]] == [dead] and out["next_cursor"]
    out = cli_json(capsys, "events", "list", "--limit", "1", "--cursor", out["next_cursor"], "--json")
    assert [e["id"] for e in out["events"]] == [done]

    shown = cli_json(capsys, "events", "show", dead, "--json")
    assert shown["id"] == dead and shown["actions"][0]["state"] == "dead" and shown["timeline"][0]["type"] == "received"

    assert main(["events", "show", dead]) == 0
    text = capsys.readouterr().out
    assert dead in text and "slack.notify" in text and "HTTP 404" in text and "received" in text
    assert main(["events", "list"]) == 0
    assert dead in capsys.readouterr().out

    assert main(["events", "show", "ev_000000000000deadbeef"]) == 1
    assert "no event" in capsys.readouterr().err
    assert main(["events", "list", "--since", "last tuesday"]) == 2
    assert "not a time" in capsys.readouterr().err


def test_dead_letters_listing(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    eid = in_store(cli_env, lambda s: seed_event(s.redis, state="dead"))
    out = cli_json(capsys, "dead-letters", "--json")
    assert out["total"] == 1
    (d,) = out["dead_letters"]
    assert d["id"] == f"{eid}/deploy-failed.notify:fp" and d["error"] == "HTTP 404: channel_not_found"
    assert cli_json(capsys, "dead-letters", "--connector", "pagerduty", "--json")["dead_letters"] == []
    assert main(["dead-letters"]) == 0
    text = capsys.readouterr().out
    assert "channel_not_found" in text
    assert f"{eid}/deploy-failed.notify:fp" in text  # the id its own purge hint asks for, whole
    assert main(["purge", f"{eid}/deploy-failed.notify:fp", "--json"]) == 0


def test_replay_dry_run_by_id_then_for_real(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    event_id, action_id = in_store(cli_env, dead_deploy_event)
    out = cli_json(capsys, "replay", event_id, "--dry-run", "--json")
    assert out["dry_run"] is True and out["total"] == 1 and out["would_run"] == 1
    (plan,) = out["plans"]
    assert [(a["id"], a["would"]) for a in plan["actions"]] == [(action_id, "run")]
    assert in_store(cli_env, lambda s: s.redis.zcard(DEAD)) == 1  # nothing changed

    out = cli_json(capsys, "replay", event_id, "--json")
    assert out["replayed"] == 1 and out["results"][0]["reset"] == [action_id]
    rec = in_store(cli_env, lambda s: s.get(event_id))
    assert rec["state"] == "accepted"
    audit = in_store(cli_env, lambda s: s.redis.xrange("hub:audit"))
    assert audit[-1][1][b"who"].startswith(b"cli") and audit[-1][1][b"action"] == b"replay.bulk"

    assert main(["replay", event_id]) == 1  # now in flight: refused, reported, non-zero exit
    assert "still accepted" in capsys.readouterr().out


def test_replay_failed_with_filters_and_progress(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    old = now_ms() - 3 * 3600_000
    in_store(cli_env, lambda s: seed_many(s.redis, 40, state="dead", source="github"))
    in_store(cli_env, lambda s: seed_many(s.redis, 5, state="dead", source="grafana"))
    in_store(cli_env, lambda s: seed_many(s.redis, 7, start_ms=old, state="partially_failed", source="github"))
    out = cli_json(capsys, "replay", "--failed", "--source", "github", "--since", "1h", "--json")
    assert out["total"] == 40 and out["replayed"] == 40
    assert main(["replay", "--failed", "--source", "github"]) == 0  # the 7 older ones, with a bar and a table
    captured = capsys.readouterr()
    assert "7/7" in captured.err  # the progress bar (stderr)
    assert "replayed" in captured.out and " 7 " in captured.out
    assert in_store(cli_env, lambda s: s.redis.zcard(DEAD)) == 5
    assert in_store(cli_env, lambda s: s.redis.zcard(ARQ_QUEUE)) == 47
    assert main(["replay"]) == 2
    assert main(["replay", "--since", "soon", "--failed"]) == 2


def test_purge(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    a = in_store(cli_env, lambda s: seed_event(s.redis, state="dead", received_ms=now_ms() - 9 * 86400_000))
    b = in_store(cli_env, lambda s: seed_event(s.redis, state="dead", actions=[action(aid="x"), action(aid="y")]))
    c = in_store(cli_env, lambda s: seed_event(s.redis, state="dead"))

    out = cli_json(capsys, "purge", "--all", "--older-than", "7d", "--dry-run", "--json")
    assert out["purged"] == [f"{a}/deploy-failed.notify:fp"] and out["dry_run"] is True
    assert in_store(cli_env, lambda s: s.redis.zcard(DEAD)) == 4

    out = cli_json(capsys, "purge", "--all", "--older-than", "7d", "--json")
    assert out["purged"] == [f"{a}/deploy-failed.notify:fp"]
    out = cli_json(capsys, "purge", b, "--json")  # an event id: all of its dead letters
    assert sorted(out["purged"]) == [f"{b}/x", f"{b}/y"]
    out = cli_json(capsys, "purge", f"{c}/deploy-failed.notify:fp", f"{c}/nope", "--json", code=1)
    assert out["purged"] == [f"{c}/deploy-failed.notify:fp"] and list(out["not_found"]) == [f"{c}/nope"]
    assert in_store(cli_env, lambda s: s.redis.zcard(DEAD)) == 0
    timeline = in_store(cli_env, lambda s: s.timeline(c))
    assert timeline[-1]["type"] == "purged" and timeline[-1]["by"].startswith("cli")
    assert main(["purge"]) == 2
    assert main(["purge", "bad id!/x"]) == 2


def test_events_show_says_when_a_retrying_action_runs_next(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    retrying = {**action(state="retrying", status=503, error="HTTP 503"), "next_at": now_ms() + 90_000,
                "error": "HTTP 503"}
    eid = in_store(cli_env, lambda s: seed_event(s.redis, state="processing", actions=[retrying]))
    assert main(["events", "show", eid]) == 0
    out = capsys.readouterr().out
    assert "retrying" in out and "next retry" in out and "HTTP 503" in out


def test_bulk_dry_run_by_filter_lists_the_actions(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    event_id, action_id = in_store(cli_env, dead_deploy_event)
    assert main(["replay", "--failed", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would run" in out and event_id in out and "slack.notify" in out and "dead: " in out
    job = cli_json(capsys, "replay", "--failed", "--dry-run", "--json")
    (result,) = job["results"]
    assert result["actions"] == [{"id": action_id, "name": "slack.notify",
                                  "reason": "dead: HTTP 404: channel_not_found"}]


def test_events_list_shows_title_severity_and_service(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Parsed through the real worker path, so the row fields come from what the hub stored."""
    from hub.storage.event_store import row_summary

    assert row_summary([{"title": "", "severity": "SEV3", "services": ["a"]},
                        {"title": "Disk full", "severity": "SEV1", "services": ["b", "a"]}]) == {
        "title": "Disk full", "severity": "SEV1", "services": "a,b"}
    eid, _ = in_store(cli_env, dead_deploy_event)

    async def parse(store: Store) -> None:
        rec = await store.get(eid)
        events = make_planner(store).normalise(rec)
        batch = Batch()
        store.record_parsed_into(batch, eid, rec["received_at"], [e.model_dump(mode="json") for e in events])
        await batch.execute(store.redis)
    in_store(cli_env, parse)
    (row,) = cli_json(capsys, "events", "list", "--json")["events"]
    assert row["title"].startswith("Deploy of Codertocat/Hello-World@master to production failed")
    assert row["services"] == ["Hello-World"] and row["severity"] is None
    assert main(["events", "list"]) == 0
    assert "Deploy of" in capsys.readouterr().out


def test_events_show_names_a_timers_step_and_its_time(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    from hub.cli.common import when
    from hub.storage.event_store import dumps, timeline_key

    due = now_ms() + 300_000
    timer = "timer:incidentio:01J#1:page-on-call:escalate"
    scheduled = {**action(state="pending", attempts=0), "scheduled_for": due, "timer": timer}
    eid = in_store(cli_env, lambda s: seed_event(s.redis, state="done", actions=[scheduled]))
    in_store(cli_env, lambda s: s.redis.rpush(timeline_key(eid), dumps(
        {"at": now_ms(), "type": "timer", "timer": timer, "action": "x", "name": "pagerduty.trigger",
         "state": "scheduled", "due_at": due})))
    assert main(["events", "show", eid]) == 0
    out = capsys.readouterr().out
    assert f"scheduled for {when(due)} (timer step escalate)" in out
    assert f"escalate (page-on-call) scheduled: pagerduty.trigger, due {when(due)}" in out
    assert str(due) not in out  # no raw epoch milliseconds
