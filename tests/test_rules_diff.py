"""`incident-hub rules diff`: recorded traffic in a real Redis, planned against two rule sets.

Events are recorded through the real `Store.ingest` (what the ingress calls); the diff must
name exactly the events a rules change affects, and leave every key and value of Redis as it was.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from hub.cli.main import main
from hub.core.registry import connector_classes
from hub.operators.rules_diff import EventDiff, diff_recorded
from hub.rules import load_file
from hub.rules.engine import Rules
from hub.storage.event_store import Store
from tests.worker.conftest import snapshot

CATALOG = """\
version: 1
catalog:
  services:
    checkout-api: {{aliases: [checkout], team: payments, pagerduty_routing_key: env:RD_PD_CHECKOUT}}
    search-api: {{aliases: [search], team: discovery, pagerduty_routing_key: env:{search_key}}}
    billing: {{team: payments}}
  teams:
    payments: {{pagerduty_routing_key: env:RD_PD_PAYMENTS}}
    discovery: {{pagerduty_routing_key: env:RD_PD_DISCOVERY}}
"""

SERVICES = ("checkout", "search", "billing")


def alertmanager(name: str, service: str, status: str) -> bytes:
    return json.dumps({
        "version": "4", "status": status, "receiver": "hub", "groupKey": f"g-{name}-{service}",
        "groupLabels": {"alertname": name}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
        "alerts": [{"status": status, "fingerprint": f"{name}-{service}", "startsAt": "2026-11-30T10:00:00Z",
                    "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-11-30T10:05:00Z",
                    "labels": {"alertname": name, "severity": "critical", "service": service},
                    "annotations": {"summary": f"{name} on {service}"}, "generatorURL": "http://x"}],
    }).encode()


@pytest.fixture
def rule_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    for name, value in (("RD_PD_CHECKOUT", "checkout-routing-key-0001"), ("RD_PD_SEARCH", "search-routing-key-0001"),
                        ("RD_PD_SEARCH_NEW", "search-routing-key-0002"), ("RD_PD_PAYMENTS", "payments-key-000001"),
                        ("RD_PD_DISCOVERY", "discovery-key-00001")):
        monkeypatch.setenv(name, value)
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text(CATALOG.format(search_key="RD_PD_SEARCH"))
    new.write_text(CATALOG.format(search_key="RD_PD_SEARCH_NEW"))
    return old, new


async def record(store: Store, n: int) -> dict[str, str]:
    """`n` alert deliveries over the three services, each alert firing then resolving: id → service.

    Each in a millisecond of its own: the index orders events of one millisecond by id (the
    hub keeps no finer order), which would put some resolutions before their firing."""
    out: dict[str, str] = {}
    for i in range(n):
        await asyncio.sleep(0.0012)
        service = SERVICES[i % len(SERVICES)]
        status = "firing" if (i // len(SERVICES)) % 2 == 0 else "resolved"
        name = f"Alert{(i // (2 * len(SERVICES))) % 20}"
        got = await store.ingest("alertmanager", f"d-{i}", alertmanager(name, service, status),
                                 {"Content-Type": "application/json"}, "application/json", "test")
        out[got.event_id] = service
    return out


def rules(path: Path, extra: str = "") -> Rules:
    if extra:
        path.write_text(path.read_text() + extra)
    return Rules(load_file(path))


async def diff(redis: Any, old: Rules, new: Rules, limit: int = 10_000) -> tuple[Any, list[EventDiff]]:
    found: list[EventDiff] = []
    summary = await diff_recorded(redis, old, new, set(connector_classes()), 0, int(time.time() * 1000) + 60_000,
                                  limit, found.append)
    return summary, found


async def test_a_routing_change_for_one_service_names_exactly_its_events_and_writes_nothing(
        redis: Any, store: Store, rule_files: tuple[Path, Path]) -> None:
    recorded = await record(store, 300)
    search = {i for i, s in recorded.items() if s == "search"}
    before = await snapshot(redis)
    await redis.config_resetstat()
    started = time.perf_counter()
    summary, found = await diff(redis, rules(rule_files[0]), rules(rule_files[1]))
    seconds = time.perf_counter() - started
    # the commands Redis served meanwhile: plain reads only (no EVALSHA / SCRIPT LOAD, no write)
    used = {name.removeprefix("cmdstat_").split("|")[0] for name in await redis.info("commandstats")}
    assert used <= {"zrevrangebyscore", "zrangebyscore", "hmget", "config", "info", "ping", "hello", "client"}, used
    print(f"rules diff of {summary.read} recorded events: {seconds:.2f}s")  # the performance note (-s)
    assert await snapshot(redis) == before  # every key and value as it was
    assert summary.read == 300
    assert {d.id for d in found} == search and summary.changed == len(search) == 100
    for d in found:
        assert not d.added and not d.removed and not d.grouping and d.error is None
        (change,) = d.changed
        assert change["action"] in ("pagerduty.trigger", "pagerduty.resolve")
        assert change["changes"] == [{"param": "routing_key", "old": "…0001", "new": "…0002"}]
        assert d.services == "search"  # as the event names it (the `events` listing shows the same)
    text = json.dumps([d.as_dict() for d in found])
    assert "search-routing-key" not in text  # secrets masked
    assert summary.actions == {"pagerduty.trigger": {"added": 0, "removed": 0, "changed": 50},
                               "pagerduty.resolve": {"added": 0, "removed": 0, "changed": 50}}


async def test_the_same_rules_change_nothing(redis: Any, store: Store, rule_files: tuple[Path, Path]) -> None:
    await record(store, 60)
    summary, found = await diff(redis, rules(rule_files[0]), rules(rule_files[0]))
    assert (summary.read, summary.changed, found, summary.actions) == (60, 0, [], {})


async def test_incidents_carry_forward_so_grouping_changes_show_as_opens_versus_joins(
        redis: Any, store: Store, rule_files: tuple[Path, Path]) -> None:
    """Two different alerts of one service: the new rules correlate them, so the second joins the
    first's incident (opened earlier in the window) and pages nobody."""
    first = await store.ingest("alertmanager", "g1", alertmanager("Latency", "billing", "firing"),
                               {}, "application/json", "test")
    await asyncio.sleep(0.005)
    second = await store.ingest("alertmanager", "g2", alertmanager("Errors", "billing", "firing"),
                                {}, "application/json", "test")
    old = rules(rule_files[0])
    new = rules(rule_files[1], "grouping: {by: [service], window: 10m}\n")
    summary, found = await diff(redis, old, new)
    assert summary.read == 2
    (d,) = found
    assert d.id == second.event_id and d.id != first.event_id
    (g,) = d.grouping
    assert g["old"].startswith("opens ") and g["new"].startswith("joins ")
    own, joined = g["old"].split(" ", 1)[1], g["new"].split(" ", 1)[1]
    assert joined != own  # the first alert's incident, not its own
    assert {r["action"] for r in d.removed} >= {"pagerduty.trigger"}
    assert summary.grouping == 1


async def test_a_maintenance_window_in_the_new_rules_shows_as_suppression(
        redis: Any, store: Store, rule_files: tuple[Path, Path]) -> None:
    recorded = await record(store, 12)
    old = rules(rule_files[0])
    new = rules(rule_files[1], "maintenance:\n  - {name: freeze, match: {services: [billing]}, "
                               "start: '2020-01-01T00:00:00Z', end: '2099-01-01T00:00:00Z'}\n")
    summary, found = await diff(redis, old, new)
    billing = {i for i, s in recorded.items() if s == "billing"}
    assert billing <= {d.id for d in found} and summary.changed == len(found)
    for d in found:
        if d.id in billing:
            (g,) = d.grouping
            assert g["new"].endswith("; suppressed by freeze") and "suppressed" not in g["old"]
            assert d.removed and not d.added
        else:  # the search routing change of the new file
            assert recorded[d.id] == "search" and not d.grouping


async def test_limit_plans_the_newest_events_and_pages_through_ties(
        redis: Any, store: Store, rule_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    from hub.operators import rules_diff

    recorded = await record(store, 45)
    monkeypatch.setattr(rules_diff, "PAGE", 4)  # many pages, most of them ending inside a millisecond
    everything = [m.decode() for m in await redis.zrange("hub:idx:all", 0, -1)]
    assert sorted(everything) == sorted(recorded)
    seen = [r["id"] async for r in rules_diff.recorded(redis, 0, 2**45, 10_000)]
    assert seen == everything  # each once, in received order
    old, new = rules(rule_files[0]), rules(rule_files[1])
    summary, found = await diff(redis, old, new, limit=10)
    assert summary.limit_reached and 1 <= summary.read <= 10
    newest = set(everything[-10:])
    assert {d.id for d in found} <= newest


# -- the command line ---------------------------------------------------------------------------

@pytest.fixture
def cli(redis_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("HUB_CONFIG", str(tmp_path / "absent.yaml"))  # the diff reads only its two files


async def test_cli_json_and_text(cli: None, redis: Any, store: Store, rule_files: tuple[Path, Path],
                                 capsys: pytest.CaptureFixture[str]) -> None:
    recorded = await record(store, 30)
    old, new = (str(p) for p in rule_files)
    loop = asyncio.get_running_loop()
    before = await snapshot(redis)
    assert await loop.run_in_executor(None, main, ["rules", "diff", old, new, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"old", "new", "since", "until", "limit", "events_read", "events_changed",
                        "events_unplannable", "limit_reached", "grouping_changes", "actions", "changes"}
    assert (out["events_read"], out["events_changed"], out["limit_reached"]) == (30, 10, False)
    assert {c["id"] for c in out["changes"]} == {i for i, s in recorded.items() if s == "search"}
    change = out["changes"][0]
    assert set(change) == {"id", "source", "received_at", "title", "services", "added", "removed", "changed",
                           "grouping"}
    assert change["changed"][0]["changes"] == [{"param": "routing_key", "old": "…0001", "new": "…0002"}]
    assert out["actions"]["pagerduty.trigger"] == {"added": 0, "removed": 0, "changed": 5}

    assert await loop.run_in_executor(None, main, ["rules", "diff", old, new, "--since", "1h"]) == 0
    text = capsys.readouterr()
    assert "30 events read, 10 changed" in text.out and "routing_key: …0001 → …0002" in text.out
    assert "pagerduty.trigger" in text.out and "search-routing-key" not in text.out
    assert text.err == ""  # no progress bar when stderr is not a terminal
    assert await loop.run_in_executor(None, main, ["rules", "diff", old, new, "--exit-code"]) == 1
    assert await loop.run_in_executor(None, main, ["rules", "diff", old, old, "--exit-code"]) == 0
    assert "30 events read, 0 changed" in capsys.readouterr().out
    assert await loop.run_in_executor(None, main, ["rules", "diff", old, new, "--json", "--limit", "7"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["limit_reached"] is True and out["events_read"] <= 7
    assert await snapshot(redis) == before  # the command wrote nothing either


@pytest.mark.parametrize("argv, message", [
    (["{missing}", "{new}"], "nope.yaml:1:1: error: cannot read the rules file"),
    (["{old}", "{bad}"], "bad.yaml:2:64: error: unknown connector 'nope'"),
    (["{old}", "{new}", "--since", "last tuesday"], "bad --since/--until"),
    (["{old}", "{new}", "--since", "1h", "--until", "2h"], "--since is after --until"),
    (["{old}", "{new}", "--limit", "0"], "--limit must be at least 1"),
])
def test_cli_bad_input_exits_2_with_one_line(cli: None, rule_files: tuple[Path, Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str], argv: list[str], message: str
                                             ) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nworkflows: [{name: x, on: [alert.firing], do: [{id: a, action: nope.nope}]}]\n")
    names = {"missing": str(tmp_path / "nope.yaml"), "bad": str(bad), "old": str(rule_files[0]),
             "new": str(rule_files[1])}
    assert main(["rules", "diff", *(a.format(**names) for a in argv)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_cli_redis_unreachable_is_one_line_exit_1(rule_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # a closed port
    assert main(["rules", "diff", str(rule_files[0]), str(rule_files[1])]) == 1
    err = capsys.readouterr().err
    assert "cannot read Redis" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


async def test_an_event_neither_rule_set_can_plan_is_counted_not_changed(
        redis: Any, store: Store, rule_files: tuple[Path, Path]) -> None:
    await store.ingest("alertmanager", "broken", b"{not json", {}, "application/json", "test")
    await record(store, 3)
    summary, found = await diff(redis, rules(rule_files[0]), rules(rule_files[0]))
    assert (summary.read, summary.errors, summary.changed, found) == (4, 1, 0, [])
