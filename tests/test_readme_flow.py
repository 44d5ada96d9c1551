"""The README's own flow, as processes: `.env` in the working directory, `incident-hub run`,
send a webhook, restart, resend. The fakes run on a loop in a thread of this process.

- a team routing key kept in `.env` and named `env:PD_KEY_PAYMENTS` in hub.yaml reaches
  PagerDuty (it was silently replaced by the global key);
- an `env:` reference that is set nowhere stops the start with the variable and the line;
- a Slack action skipped while SLACK_WEBHOOK_URL was unset does not keep its identity: after
  configuring Slack and restarting, a resend of the same webhook (new delivery id) delivers.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hub.storage.embedded_redis import free_port
from tests.conftest import FIXTURES, GITHUB_SECRET, fixture_request
from tests.fakes.pagerduty import FakePagerDuty
from tests.fakes.slack import FakeSlack
from tests.test_cli_run import hub_env, wait_http

pytestmark = pytest.mark.timeout(180)

GLOBAL_KEY = "GLOBALKEY0000000000000000000000g"
TEAM_KEY = "PAYMENTSTEAMKEY00000000000000001"
DATADOG_TOKEN = "dd-readme-token-0123"
HUB_YAML = """version: 1
catalog:
  services:
    checkout-api:
      aliases: [checkout]
      team: payments
  teams:
    payments:
      pagerduty_routing_key: env:PD_KEY_PAYMENTS
"""


class Fakes:
    """Fake upstreams served from a thread (the hub under test is another process)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.pagerduty, self.slack = FakePagerDuty(), FakeSlack()

    def __enter__(self) -> Fakes:
        self.thread.start()
        for fake in (self.pagerduty, self.slack):
            asyncio.run_coroutine_threadsafe(fake.start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        for fake in (self.pagerduty, self.slack):
            asyncio.run_coroutine_threadsafe(fake.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def fakes() -> Iterator[Fakes]:
    with Fakes() as f:
        yield f


class HubProcess:
    """`incident-hub run` in `cwd` (where its `.env` and hub.yaml are), stopped with Ctrl-C."""

    def __init__(self, cwd: Path, env: dict[str, str], port: int) -> None:
        self.cwd, self.env, self.port = cwd, env, port
        self.proc: subprocess.Popen[bytes] | None = None
        self.output = ""

    def start(self) -> HubProcess:
        self.proc = subprocess.Popen([sys.executable, "-m", "hub", "run"], env=self.env, cwd=self.cwd,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        return self

    def stop(self) -> str:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        self.output += self.proc.communicate(timeout=60)[0].decode(errors="replace")
        return self.output

    def post(self, source: str, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/webhooks/{source}", data=body,
                                     headers=headers, method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 202
            return json.loads(resp.read())


def user_env(tmp_path: Path) -> tuple[dict[str, str], int]:
    """A shell with none of the hub's variables exported: they are all in `.env`."""
    port = free_port()
    env = hub_env(tmp_path / "var", port)
    for name in ("GITHUB_WEBHOOK_SECRET", "PAGERDUTY_ROUTING_KEY", "PD_KEY_PAYMENTS", "SLACK_WEBHOOK_URL",
                 "PAGERDUTY_EVENTS_URL", "DATADOG_WEBHOOK_TOKEN", "HUB_CONFIG"):
        env.pop(name, None)
    return env, port


def wait_until(predicate: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_team_key_from_dotenv_pages_the_team_not_the_global_key(tmp_path: Path, fakes: Fakes) -> None:
    env, port = user_env(tmp_path)
    (tmp_path / "hub.yaml").write_text(HUB_YAML)
    (tmp_path / ".env").write_text(
        f"PAGERDUTY_ROUTING_KEY={GLOBAL_KEY}\nPAGERDUTY_EVENTS_URL={fakes.pagerduty.events_url}\n"
        f"PD_KEY_PAYMENTS={TEAM_KEY}\nDATADOG_WEBHOOK_TOKEN={DATADOG_TOKEN}\n")
    hub = HubProcess(tmp_path, env, port).start()
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        body = (FIXTURES / "datadog_alert_triggered.json").read_bytes()
        hub.post("datadog", body, {"Content-Type": "application/json", "Authorization": f"Bearer {DATADOG_TOKEN}"})
        (page,) = wait_until(lambda: fakes.pagerduty.calls(method="POST"))
    finally:
        output = hub.stop()
    assert page.json()["routing_key"] == TEAM_KEY, output
    assert page.json()["event_action"] == "trigger"


def test_an_unset_reference_refuses_to_start_naming_the_variable_and_line(tmp_path: Path) -> None:
    env, port = user_env(tmp_path)
    (tmp_path / "hub.yaml").write_text(HUB_YAML)
    (tmp_path / ".env").write_text(f"PAGERDUTY_ROUTING_KEY={GLOBAL_KEY}\n")  # PD_KEY_PAYMENTS forgotten
    hub = HubProcess(tmp_path, env, port).start()
    assert hub.proc is not None
    hub.proc.wait(timeout=90)  # the worker refuses, `run` stops the rest
    output = hub.stop()
    assert hub.proc.returncode != 0, output
    assert "not starting" in output and "PD_KEY_PAYMENTS" in output, output
    assert "hub.yaml:9:" in output, output  # the line of the reference

    worker = subprocess.run([sys.executable, "-m", "hub", "worker"], cwd=tmp_path, capture_output=True, text=True,
                            env={**env, "REDIS_URL": "redis://127.0.0.1:1/0"}, timeout=60)  # refuses before Redis
    assert worker.returncode != 0
    assert "not starting" in worker.stderr and "hub.yaml:9:" in worker.stderr and "PD_KEY_PAYMENTS" in worker.stderr

    validate = subprocess.run([sys.executable, "-m", "hub", "validate"], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)
    assert validate.returncode != 0
    assert "hub.yaml:9:" in validate.stdout and "PD_KEY_PAYMENTS" in validate.stdout


def test_a_not_configured_skip_is_performed_by_a_resend_once_configured(tmp_path: Path, fakes: Fakes) -> None:
    env, port = user_env(tmp_path)
    (tmp_path / ".env").write_text(f"GITHUB_WEBHOOK_SECRET={GITHUB_SECRET}\n")
    body, headers = fixture_request("github_deployment_status_failure.json")
    hub = HubProcess(tmp_path, env, port).start()
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        first = hub.post("github", body, headers)
        shown = wait_until(lambda: _show(env, tmp_path, first["event_id"], "skipped: slack not configured"))
    finally:
        hub.stop()
    assert "skipped: slack not configured" in shown

    with (tmp_path / ".env").open("a") as f:
        f.write(f"SLACK_WEBHOOK_URL={fakes.slack.webhook_url}\n")
    hub = HubProcess(tmp_path, env, port).start()
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        again = hub.post("github", body, {**headers, "X-GitHub-Delivery": "7b2e6a3c-0000-11ef-8c5a-resend000001"})
        assert again["event_id"] != first["event_id"]
        (message,) = wait_until(lambda: fakes.slack.requests)
        shown = wait_until(lambda: _show(env, tmp_path, again["event_id"], "succeeded"))
    finally:
        hub.stop()
    assert "already_done" not in shown
    assert "production" in message.json()["text"]


def _show(env: dict[str, str], cwd: Path, event_id: str, wanted: str) -> str | None:
    out = subprocess.run([sys.executable, "-m", "hub", "events", "show", event_id], env=env, cwd=cwd,
                         capture_output=True, text=True, timeout=60)
    return out.stdout if wanted in out.stdout else None
