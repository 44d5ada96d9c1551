"""Report figures against MTTA/MTTR computed by hand for a fixture set of incidents."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from hub.cli.main import main
from hub.operators.report import DAY_MS, build_report, human_duration, summarise
from hub.storage.connection import connect
from hub.storage.event_store import now_ms
from hub.storage.incidents import IncidentStore
from tests.test_admin import seed_event

U = 1_750_000_000_000  # the report's "now"
S = 1000

# key, severity, services, declared (days before U), ack after (s), resolved after (s)
INCIDENTS = [
    ("incidentio:01", "SEV1", ["checkout"], 10, 120, 3600),
    ("incidentio:02", "SEV1", ["checkout", "payments"], 5, 300, 7200),
    ("grafana:aa", "SEV2", ["payments"], 2, 60, None),
    ("grafana:bb", "SEV2", ["search"], 1, None, None),
    ("incidentio:03", "SEV3", ["search"], 40, 10, 20),  # outside a 30-day window
    ("datadog:cc", None, [], 3, 30, 90),
]


def records(until: int = U) -> list[dict[str, Any]]:
    out = []
    for key, sev, services, days, ack, res in INCIDENTS:
        declared = until - days * DAY_MS
        out.append({"key": key, "kind": "incident", "severity": sev, "services": services, "declared_at": declared,
                    "acknowledged_at": declared + ack * S if ack is not None else None,
                    "resolved_at": declared + res * S if res is not None else None, "title": key})
    return out


async def seed_incidents(redis: Any, until: int = U) -> None:
    store = IncidentStore(redis, 3650 * 86400)  # U is in the past: keep its records past the index trim
    for rec in records(until):
        await store.save(rec["key"], rec)


async def seed_followup(redis: Any, fid: str, status: str, received_ms: int) -> None:
    eid = await seed_event(redis, source="incidentio", state="done", kinds=("followup.created",), actions=[],
                           received_ms=received_ms)
    await redis.hset(f"hub:ev:{eid}", "events", json.dumps([
        {"kind": "followup.created", "source": "incidentio", "fingerprint": fid, "status": status}]))


def test_summary_by_severity_matches_hand_computed_figures() -> None:
    r = summarise(records(), days=30, by="severity", until_ms=U)
    assert r["incidents"] == 5 and r["per_day"] == round(5 / 30, 3)
    assert r["acknowledged"] == 4 and r["resolved"] == 3
    assert r["mtta"] == {"n": 4, "mean_s": 127.5, "median_s": 90.0}       # 120, 300, 60, 30
    assert r["mttr"] == {"n": 3, "mean_s": 3630.0, "median_s": 3600.0}    # 3600, 7200, 90
    groups = {g["key"]: g for g in r["groups"]}
    assert [g["key"] for g in r["groups"]] == ["SEV1", "SEV2", "none"]
    assert groups["SEV1"]["incidents"] == 2 and groups["SEV1"]["per_day"] == round(2 / 30, 3)
    assert groups["SEV1"]["mtta"] == {"n": 2, "mean_s": 210.0, "median_s": 210.0}
    assert groups["SEV1"]["mttr"] == {"n": 2, "mean_s": 5400.0, "median_s": 5400.0}
    assert groups["SEV2"]["mtta"] == {"n": 1, "mean_s": 60.0, "median_s": 60.0}
    assert groups["SEV2"]["mttr"] == {"n": 0, "mean_s": None, "median_s": None}
    assert groups["none"]["mttr"]["mean_s"] == 90.0
    assert r["followups"]["rate"] is None


def test_summary_by_service_and_a_wider_window() -> None:
    r = summarise(records(), days=30, by="service", until_ms=U)
    groups = {g["key"]: g for g in r["groups"]}
    assert {k: g["incidents"] for k, g in groups.items()} == {"checkout": 2, "payments": 2, "search": 1,
                                                                "(no service)": 1}
    assert groups["payments"]["mtta"]["mean_s"] == 180.0   # 300 and 60
    wide = summarise(records(), days=60, until_ms=U)
    assert wide["incidents"] == 6 and wide["mtta"]["median_s"] == 60.0  # 10, 30, 60, 120, 300
    with pytest.raises(ValueError):
        summarise([], days=1, by="team")


async def test_report_reads_incident_records_and_followups(redis: Any) -> None:
    await seed_incidents(redis)
    await seed_followup(redis, "incidentio:fu1", "outstanding", U - 4 * DAY_MS)
    await seed_followup(redis, "incidentio:fu1", "completed", U - 2 * DAY_MS)
    await seed_followup(redis, "incidentio:fu2", "outstanding", U - 2 * DAY_MS)
    await seed_followup(redis, "incidentio:fu3", "not_doing", U - 2 * DAY_MS)
    r = await build_report(redis, days=30, by="severity", until_ms=U)
    assert r["incidents"] == 5
    assert r["mtta"] == {"n": 4, "mean_s": 127.5, "median_s": 90.0}
    assert r["mttr"] == {"n": 3, "mean_s": 3630.0, "median_s": 3600.0}
    assert r["followups"] == {"total": 2, "completed": 1, "rate": 0.5}


def test_report_cli(redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)

    async def seed() -> None:
        redis = connect(redis_url)
        try:
            await seed_incidents(redis, until=now_ms())
        finally:
            await redis.aclose()

    asyncio.run(seed())
    assert main(["report", "--days", "30", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["incidents"] == 5 and r["mtta"]["mean_s"] == 127.5 and r["by"] == "severity"
    assert main(["report", "--by", "service", "--json"]) == 0
    assert {g["key"] for g in json.loads(capsys.readouterr().out)["groups"]} >= {"checkout", "payments"}
    assert main(["report"]) == 0
    text = capsys.readouterr().out
    assert "SEV1" in text and "3.5m" in text and "follow-ups" in text  # SEV1 MTTA mean 210 s
    assert main(["report", "--days", "0"]) == 2


def test_human_duration() -> None:
    assert [human_duration(x) for x in (None, 45, 210, 7200, 3 * 86400)] == ["—", "45s", "3.5m", "2.0h", "3.0d"]


def _rec(key: str, declared_min: int, *, resolved_min: int | None = None, severity: str = "SEV2",
         services: tuple[str, ...] = (), **extra: Any) -> dict[str, Any]:
    base = U - DAY_MS
    return {"key": key, "kind": "alert", "severity": severity, "services": list(services),
            "declared_at": base + declared_min * 60 * S, "acknowledged_at": None,
            "resolved_at": base + resolved_min * 60 * S if resolved_min is not None else None, **extra}


def test_records_of_one_incident_count_once_and_aliases_fold_into_the_catalog_name() -> None:
    from hub.rules import Rules, load_text

    rules = Rules(load_text("version: 1\ncatalog:\n  services:\n    checkout-api: {aliases: [checkout]}\n"))
    recs = [
        # an alert-born incident and the incident.io incident it opened (recorded before the alias existed)
        _rec("datadog:1", 0, resolved_min=30, severity="SEV2", services=("checkout",), incidentio_id="01J"),
        _rec("incidentio:01J", 1, resolved_min=40, severity="SEV1", services=("checkout-api",), kind="incident"),
        # three alerts of one Grafana notification group, open together
        _rec("grafana:a", 100, resolved_min=130, source="grafana", group="g1", services=("search",)),
        _rec("grafana:b", 100, source="grafana", group="g1", services=("search",)),
        _rec("grafana:c", 110, resolved_min=115, source="grafana", group="g1", services=("search",)),
        # the same group firing again after everything resolved is a new incident... (b is unresolved: not yet)
        _rec("grafana:d", 500, resolved_min=510, source="grafana", group="g2", services=("search",)),
        _rec("grafana:e", 600, resolved_min=610, source="grafana", group="g2", services=("search",)),
    ]
    r = summarise(recs, days=30, by="severity", until_ms=U, canonical=rules.canonical_services)
    assert r["incidents"] == 4 and r["alerts"] == 7
    groups = {g["key"]: g for g in r["groups"]}
    assert groups["SEV1"]["incidents"] == 1  # the folded incident takes the highest severity
    assert groups["SEV1"]["mttr"]["mean_s"] == 40 * 60.0  # declared with the first record, resolved with the last
    assert groups["SEV2"]["incidents"] == 3 and groups["SEV2"]["resolved"] == 2  # the group with b is still open
    by_service = summarise(recs, days=30, by="service", until_ms=U, canonical=rules.canonical_services)
    assert {g["key"]: g["incidents"] for g in by_service["groups"]} == {"checkout-api": 1, "search": 3}


async def test_a_grafana_group_received_end_to_end_is_one_incident(redis_url, redis, monkeypatch) -> None:
    """Three alerts in one delivery: three incident records, one incident in the report."""
    from tests.conftest import make_settings
    from tests.test_workflows_e2e import Hub, load

    monkeypatch.setenv("GRAFANA_WEBHOOK_TOKEN", "t")
    settings = make_settings(redis_url, grafana_webhook_token="t")
    group = load("grafana_firing.json")
    first = group["alerts"][0]
    group["alerts"] = [{**first, "fingerprint": f"{n:016x}", "labels": {**first["labels"], "instance": f"web-{n}"}}
                       for n in range(3)]
    async with Hub(settings, redis) as hub:
        done = await hub.send("grafana", group)
    assert len(done["events"]) == 3
    r = await build_report(redis, days=1)
    assert r["incidents"] == 1 and r["alerts"] == 3


def test_report_cli_folds_service_aliases(redis_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    rules = tmp_path / "hub.yaml"
    rules.write_text("version: 1\ncatalog:\n  services:\n    checkout-api: {aliases: [checkout, payments]}\n")
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("HUB_CONFIG", str(rules))

    async def seed() -> None:
        redis = connect(redis_url)
        try:
            await seed_incidents(redis, until=now_ms())
        finally:
            await redis.aclose()

    asyncio.run(seed())
    assert main(["report", "--by", "service", "--json"]) == 0
    groups = {g["key"]: g["incidents"] for g in json.loads(capsys.readouterr().out)["groups"]}
    assert groups == {"checkout-api": 3, "search": 1, "(no service)": 1}
