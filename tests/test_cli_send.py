"""`incident-hub send`: bundled samples signed with this environment's secrets, accepted by a real hub."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from hub.cli.commands.send import freshen
from hub.cli.main import main
from hub.core.settings import load_settings
from hub.ingress.app import create_app
from tests.conftest import GITHUB_SECRET, GRAFANA_SECRET, INCIDENTIO_SECRET

ENV = {
    "GITHUB_WEBHOOK_SECRET": GITHUB_SECRET,
    "INCIDENTIO_WEBHOOK_SECRET": INCIDENTIO_SECRET,
    "GRAFANA_WEBHOOK_SECRET": GRAFANA_SECRET,
    "GRAFANA_TIMESTAMP_HEADER": "X-Grafana-Alerting-Timestamp",
    "DATADOG_WEBHOOK_TOKEN": "dd-token-123456",
    "ALERTMANAGER_WEBHOOK_TOKEN": "am-token-123456",
    "PAGERDUTY_WEBHOOK_SECRET": "pd-secret-123456",
    "HUB_ADMIN_TOKEN": "",
}


class HubThread:
    """The real web app on a loopback port, on its own loop in a thread (the CLI runs its own loop)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner: web.AppRunner | None = None
        self.port = 0

    def __enter__(self) -> HubThread:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    async def _start(self) -> None:
        self.runner = web.AppRunner(create_app(load_settings()))
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def __exit__(self, *exc: object) -> None:
        assert self.runner is not None
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def hub(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubThread]:
    monkeypatch.setenv("REDIS_URL", redis_url)
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    with HubThread() as h:
        monkeypatch.setenv("HUB_HOST", "0.0.0.0")  # the default URL must turn this into 127.0.0.1
        monkeypatch.setenv("HUB_PORT", str(h.port))
        yield h


def send(capsys: pytest.CaptureFixture[str], *argv: str, code: int = 0) -> Any:
    assert main(["send", *argv, "--json"]) == code
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("source", ["github", "incidentio", "grafana", "datadog", "alertmanager", "pagerduty"])
def test_each_bundled_sample_is_accepted_and_a_repeat_is_a_new_delivery(hub: HubThread, source: str,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    first = send(capsys, source)
    assert first["status"] == 202, first
    assert first["body"]["status"] == "accepted" and first["url"].startswith("http://127.0.0.1:")
    second = send(capsys, source)
    assert second["status"] == 202 and second["body"]["status"] == "accepted"
    assert second["body"]["event_id"] != first["body"]["event_id"]
    assert all(v == "***" for k, v in second["headers"].items() if "signature" in k.lower() or k == "Authorization")


@pytest.mark.parametrize("source", ["github", "incidentio", "datadog", "pagerduty"])
def test_same_id_is_recognised_as_a_duplicate(hub: HubThread, source: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    first = send(capsys, source, "--same-id")
    second = send(capsys, source, "--same-id")
    assert (first["body"]["status"], second["body"]["status"]) == ("accepted", "duplicate")
    assert second["body"]["event_id"] == first["body"]["event_id"]


def test_a_file_and_plain_output(hub: HubThread, tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.conftest import FIXTURES

    path = tmp_path / "resolved.json"
    path.write_bytes((FIXTURES / "grafana_resolved.json").read_bytes())
    assert main(["send", "grafana", str(path)]) == 0
    out = capsys.readouterr().out
    assert "→ 202" in out and '"accepted"' in out


def test_missing_secret_and_unknown_source(hub: HubThread, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("GITHUB_WEBHOOK_SECRET", "")
    assert main(["send", "github"]) == 2
    assert "GITHUB_WEBHOOK_SECRET" in capsys.readouterr().err
    assert main(["send", "nagios"]) == 2
    assert "unknown source" in capsys.readouterr().err


def test_wrong_secret_shows_the_hubs_401(hub: HubThread, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DATADOG_WEBHOOK_TOKEN", "not-what-the-hub-has")  # the hub read its settings at start
    out = send(capsys, "datadog", code=1)
    assert out["status"] == 401 and out["body"]["error"] == "bad_token"


def test_unreachable_hub(redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from hub.storage.embedded_redis import free_port

    monkeypatch.setenv("GITHUB_WEBHOOK_SECRET", GITHUB_SECRET)
    assert main(["send", "github", "--url", f"http://127.0.0.1:{free_port()}", "--timeout", "2"]) == 1
    assert "could not reach" in capsys.readouterr().err


def test_freshen_changes_only_the_dedup_inputs() -> None:
    from tests.conftest import FIXTURES

    dd = json.loads((FIXTURES / "datadog_alert_triggered.json").read_bytes())
    fresh = json.loads(freshen("datadog", (FIXTURES / "datadog_alert_triggered.json").read_bytes()))
    assert fresh["id"] != dd["id"] and {k: v for k, v in fresh.items() if k != "id"} == \
        {k: v for k, v in dd.items() if k != "id"}
    am = json.loads((FIXTURES / "alertmanager_firing.json").read_bytes())
    fresh = json.loads(freshen("alertmanager", (FIXTURES / "alertmanager_firing.json").read_bytes()))
    assert [a["fingerprint"] for a in fresh["alerts"]] == [a["fingerprint"] for a in am["alerts"]]
    assert [a["startsAt"] for a in fresh["alerts"]] != [a["startsAt"] for a in am["alerts"]]
    assert freshen("github", b'{"a": 1}') == b'{"a": 1}'
