"""`incident-hub heartbeats list|pause|resume` against the real Redis (the same actions as the admin API)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hub.cli.main import main


@pytest.fixture
def cli_env(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("REDIS_URL", redis_url)
    rules = tmp_path / "hub.yaml"
    rules.write_text("version: 1\nheartbeats:\n  backup: {interval: 1h, grace: 10m, service: db, token: env:HB_X}\n")
    monkeypatch.setenv("HUB_CONFIG", str(rules))
    monkeypatch.setenv("HB_X", "secret")
    return rules


def test_list_pause_resume(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["heartbeats", "list", "--json"]) == 0
    (beat,) = json.loads(capsys.readouterr().out)["heartbeats"]
    assert beat["name"] == "backup" and beat["interval"] == 3600 and beat["paused"] is False
    assert main(["heartbeats", "pause", "backup", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"name": "backup", "paused": True, "changed": True}
    assert main(["heartbeats", "pause", "backup"]) == 0
    assert "already" in capsys.readouterr().out
    assert main(["heartbeats", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["heartbeats"][0]["paused"] is True
    assert main(["heartbeats", "resume", "backup"]) == 0
    assert "resumed" in capsys.readouterr().out
    assert main(["heartbeats", "list", "--json"]) == 0
    beat = json.loads(capsys.readouterr().out)["heartbeats"][0]
    assert beat["paused"] is False and beat["due"] is not None
    assert main(["heartbeats", "list"]) == 0
    assert "backup" in capsys.readouterr().out
    assert main(["heartbeats", "pause", "nope"]) == 1
