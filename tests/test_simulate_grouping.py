"""`incident-hub simulate` on grouping (issue 12, item 6): whether an alert would open an
incident, join one (which), be deferred or be held as flapping. From the rules alone, and
with `--live` from real Redis (read-only) after the real worker handled a group.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hub.cli.main import main
from tests.conftest import FIXTURES
from tests.grouping_rules import DEFAULTS
from tests.test_alert_groups import TOKEN, triggers
from tests.test_correlation import AUTH, checkout_group, monitor
from tests.test_workflows_e2e import Hub, Upstreams

DATADOG = FIXTURES / "datadog_alert_triggered.json"


def rules(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "hub.yaml"
    path.write_text(DEFAULTS.read_text() + f"\ngrouping:\n  by: [service]\n  window: 5m\n{extra}")
    return path


def simulate(capsys: pytest.CaptureFixture[str], path: Path, *extra: str, body: Path = DATADOG,
             source: str = "datadog") -> dict[str, Any]:
    assert main(["simulate", source, str(body), "--config", str(path), "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_offline_an_alert_opens_its_incident_or_joins_one_with_its_grouping_values(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = simulate(capsys, rules(tmp_path))
    (outcome,) = out["incidents"].values()
    assert outcome["outcome"] == "open" and outcome["incident"] == out["events"][0]["fingerprint"]
    assert outcome["grouping_values"] == ["service=checkout"]
    assert "joins the alert-born incident with service=checkout if one is open or was opened within 5m" \
        in outcome["detail"]
    assert "deferred" not in outcome


def test_offline_defer_is_said_and_the_page_waits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = rules(tmp_path, "  defer: 2m\n")
    out = simulate(capsys, path)
    (outcome,) = out["incidents"].values()
    assert outcome["deferred"].startswith("deferred: its alert workflows wait 2m before acting")
    page = next(a for a in out["actions"] if a["step"] == "page")
    assert page["delay_s"] == 120
    assert main(["simulate", "datadog", str(DATADOG), "--config", str(path)]) == 0
    text = capsys.readouterr().out
    assert "incident: opens incident" in text and "deferred: its alert workflows wait 2m" in text


def test_live_needs_redis_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["simulate", "datadog", str(DATADOG), "--config", str(rules(tmp_path)), "--live"]) == 2
    assert "--live needs REDIS_URL" in capsys.readouterr().err


async def test_live_says_which_open_incident_an_alert_joins_and_opens_when_none(
        redis_url: str, redis: Any, upstreams: Upstreams, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio

    path = rules(tmp_path)
    monkeypatch.setenv("REDIS_URL", redis_url)

    def live() -> dict[str, Any]:  # the CLI runs its own event loop: off this one
        return simulate(capsys, path, "--live")

    before = (await asyncio.to_thread(live))["incidents"]["0"]
    assert before["outcome"] == "open"
    settings = upstreams.settings(redis_url, alertmanager_webhook_token=TOKEN, hub_config=path)
    async with Hub(settings, redis) as hub:
        await hub.send("alertmanager", checkout_group(aaaa="firing"))
        (key,) = triggers(upstreams)
        keys_before = sorted(await redis.keys("*"))
        after = (await asyncio.to_thread(live))["incidents"]["0"]
        assert after["outcome"] == "join" and after["incident"] == key
        assert "joins incident" in after["detail"] and "no new page" in after["detail"]
        assert sorted(await redis.keys("*")) == keys_before  # read-only
        joined = await hub.send("datadog", monitor(), headers=AUTH)  # the worker agrees
        assert joined["state"] == "done" and triggers(upstreams) == [key]


async def test_live_says_an_alert_whose_resolve_is_held_would_be_held_as_flapping(
        redis_url: str, redis: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio

    from hub.storage import keys

    path = rules(tmp_path, "flapping:\n  window: 30m\n  threshold: 3\n")
    monkeypatch.setenv("REDIS_URL", redis_url)
    fp = (await asyncio.to_thread(simulate, capsys, path))["events"][0]["fingerprint"]
    held = {"key": fp, "kind": "alert", "episode": 3, "declared_at": 1, "resolved_at": None,
            "resolve_held_at": 2, "resolve_held_until": 3, "resolve_held_by": "ev_x"}
    await redis.hset(keys.incident(fp), mapping={k: json.dumps(v) for k, v in held.items()})
    out = (await asyncio.to_thread(simulate, capsys, path, "--live"))["incidents"]["0"]
    assert out["outcome"] == "flapping" and out["incident"] == fp
    assert "no new page" in out["detail"]
