"""`incident-hub maintenance start|list|end` against the real Redis (the same actions as the admin API)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hub.cli.main import main


@pytest.fixture
def cli_env(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("REDIS_URL", redis_url)
    rules = tmp_path / "hub.yaml"
    rules.write_text("version: 1\nmaintenance:\n  - name: nightly\n    match: {services: [reports]}\n"
                     "    every: '0 2 * * *'\n    for: 90m\n    timezone: Europe/Berlin\n")
    monkeypatch.setenv("HUB_CONFIG", str(rules))
    return rules


def test_start_list_end(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["maintenance", "start", "--service", "checkout", "--team", "payments", "--for", "30m",
                 "--reason", "db upgrade", "--json"]) == 0
    window = json.loads(capsys.readouterr().out)
    assert window["match"]["services"] == ["checkout"] and window["match"]["teams"] == ["payments"]
    assert window["end"] - window["start"] == 30 * 60 * 1000 and window["by"].startswith("cli")

    assert main(["maintenance", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["windows"]
    assert [(w["id"], w["active"]) for w in listed if w["origin"] == "api"] == [(window["id"], True)]
    assert [w["name"] for w in listed if w["origin"] == "file"] == ["nightly"]  # open now or upcoming
    assert main(["maintenance", "list"]) == 0
    assert window["id"] in capsys.readouterr().out

    assert main(["maintenance", "end", window["id"]]) == 0
    assert "ended" in capsys.readouterr().out
    assert main(["maintenance", "end", window["id"]]) == 1
    assert main(["maintenance", "list", "--json"]) == 0
    assert all(w["origin"] == "file" for w in json.loads(capsys.readouterr().out)["windows"])


@pytest.mark.parametrize("argv", [
    ["maintenance", "start", "--for", "30m"],  # matches nothing
    ["maintenance", "start", "--service", "a", "--for", "forever"],
    ["maintenance", "start", "--service", "a", "--for", "8d"],
    ["maintenance", "start", "--label", "novalue", "--for", "1m"],
])
def test_bad_start_is_refused(cli_env: Path, capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    assert main(argv) == 2
    assert "incident-hub maintenance:" in capsys.readouterr().err
