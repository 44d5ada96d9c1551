"""A connector is one file: a toy one, discovered like the built-in ones, receives an event end to end.

The toy module (tests/data/plugins/toypager.py) is put on the `connectors` package path and
found by the same discovery (`hub.core.registry`); its own variable, action and rate limit
come from its declarations alone, with no change anywhere in `hub/`.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

import connectors
from hub.core import registry
from hub.core.settings import load_settings, settings_model
from hub.ingress.app import create_app
from hub.rules.loader import RulesError, load_file
from hub.storage.event_store import Store
from hub.storage.ratelimit import RateLimiter, parse_limit
from tests.conftest import GITHUB_SECRET, final_record, fixture_request
from tests.fakes.base import FakeUpstream

DATA = Path(__file__).parent / "data"
PLUGINS = DATA / "plugins"
RULES = DATA / "rules" / "toypager.yaml"
TOKEN = "toy-secret-token-0123456789"


class FakeToyPager(FakeUpstream):
    def routes(self, app: web.Application) -> None:
        app.router.add_post("/pages", self.page)

    async def page(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"error": "unauthorised"}, status=401)
        return web.json_response({"id": f"page-{len(self.requests)}"}, status=201)


@pytest.fixture
def toy_plugin() -> Iterator[type]:
    """The toy module on the package path, discovered; forgotten again afterwards."""
    connectors.__path__.append(str(PLUGINS))
    registry.reset()
    try:
        yield registry.connector_classes()["toypager"]
    finally:
        connectors.__path__.remove(str(PLUGINS))
        sys.modules.pop("connectors.toypager", None)
        registry.reset()


def test_the_toy_declares_its_variable_action_and_rate_limit(toy_plugin: type, monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    assert toy_plugin.action_names == {"page"}
    monkeypatch.setenv("TOYPAGER_TOKEN", TOKEN)
    settings = load_settings(_env_file=None)
    assert settings.toypager_token == TOKEN and TOKEN not in repr(settings)
    assert settings.toypager_url == "https://toypager.invalid"  # the declared default
    toy = toy_plugin(settings, None, None)
    assert toy.missing_config() is None and set(toy.actions()) == {"page"}
    client = Redis()  # not connected: the limiter only registers its script
    assert RateLimiter(client, env={}).limit(toy) == parse_limit("7/s")
    assert RateLimiter(client, env={"TOYPAGER_RATE_LIMIT": "1/min"}).limit(toy) == parse_limit("1/min")
    assert "toypager.page" in registry.superseded_by_resolution()
    assert "toypager_page_id" in registry.recorded_fields()


def test_without_the_file_the_toy_is_unknown() -> None:
    assert "toypager" not in registry.connector_classes()
    assert not hasattr(load_settings(_env_file=None), "toypager_token")
    with pytest.raises(RulesError):
        load_file(RULES)  # toypager.page is not an action of any connector


def test_rules_using_the_toy_validate(toy_plugin: type) -> None:
    loaded = load_file(RULES)
    assert [w.name for w in loaded.config.workflows] == ["deploy-failed-toy"]


async def test_an_event_reaches_the_toy_end_to_end(toy_plugin: type, redis_url: str, redis: Any,
                                                   running_worker: Any) -> None:
    fake = await FakeToyPager().start()
    try:
        settings = settings_model()(_env_file=None, redis_url=redis_url, github_webhook_secret=GITHUB_SECRET,
                                    hub_sweep_grace=2, hub_config=RULES, toypager_url=fake.url,
                                    toypager_token=TOKEN)
        store = Store(redis, settings)
        body, headers = fixture_request("github_deployment_status_failure.json")
        async with TestClient(TestServer(create_app(settings))) as c, running_worker(settings):
            event_id = (await (await c.post("/webhooks/github", data=body, headers=headers)).json())["event_id"]
            rec = await final_record(store, event_id)
    finally:
        await fake.close()
    assert rec["state"] == "done"
    (call,) = fake.calls("/pages", "POST")
    assert "Hello-World" in call.json()["text"]
    (action,) = (await store.actions(event_id)).values()
    assert action["connector"] == "toypager" and action["action"] == "page"
    assert action["state"] == "succeeded" and action["attempts"][0]["status"] == 201
    assert TOKEN not in str(action)


def test_no_module_of_the_hub_names_an_outside_system() -> None:
    """Everything the hub knows about an outside system comes from that system's connector module."""
    root = Path(__file__).parent.parent
    names = {*registry.sources(), *registry.connector_classes(), "incident.io", "incident io"}
    names |= {cls.display_name() for cls in registry.connector_classes().values()}
    pattern = re.compile("|".join(re.escape(n) for n in sorted(names, key=len, reverse=True)), re.IGNORECASE)
    found = [f"{path.relative_to(root)}:{n}: {line.strip()}"
             for path in sorted((root / "hub").rglob("*.py"))
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert found == []


def test_a_toy_discovered_at_start_adds_its_catalog_key_and_record_field(tmp_path: Path) -> None:
    """Discovered before the rules load (as a module in connectors/ is), the toy's catalog key is
    valid in the rules file and readable in templates, and its record field may be recorded."""
    script = ("import sys, connectors; connectors.__path__.append(sys.argv[1]); "
              "from hub.cli.main import main; sys.exit(main(sys.argv[2:]))")
    fixture = Path(__file__).parent / "fixtures" / "inbound" / "github_deployment_status_failure.json"
    args = [str(PLUGINS), "simulate", "github", str(fixture), "--config", str(DATA / "rules" / "toypager_catalog.yaml"),
            "-H", "X-GitHub-Event: deployment_status", "--json"]
    env = {"PATH": "/usr/bin:/bin", "TOYPAGER_TOKEN": TOKEN, "PYTHONPATH": str(Path(__file__).parent.parent)}
    proc = subprocess.run([sys.executable, "-c", script, *args], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    (action,) = json.loads(proc.stdout)["actions"]
    assert action["name"] == "toypager.page" and action["params"]["rota"] == "web-primary"
    assert action["target"] == "toypager rota web-primary at https://toypager.invalid"
