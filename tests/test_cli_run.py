"""`incident-hub run` (what `make run` starts) and CLI commands run next to it share one Redis.

The README's flow is `make run` in one terminal and `incident-hub events list` in another,
both without REDIS_URL. The second must find the first's embedded Redis, not start its own
server on the same data dir (two servers appending to one AOF), and Ctrl-C must leave no
Redis behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from hub.storage.embedded_redis import free_port

pytestmark = pytest.mark.timeout(120)


def redis_servers(data_dir: Path) -> list[int]:
    """PIDs of redis-server processes serving `data_dir` (Redis works in its `--dir`; it
    rewrites its own command line, so the working directory is what identifies it)."""
    target = (data_dir / "redis").resolve()
    out = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            name = (proc / "comm").read_text().strip()
            cwd = Path(os.readlink(proc / "cwd"))
        except OSError:
            continue
        if name.startswith("redis-server") and cwd == target:
            out.append(int(proc.name))
    return out


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout}s")


def hub_env(data: Path, port: int) -> dict[str, str]:
    """The environment of a user with no REDIS_URL, the hub's data in `data`."""
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(HUB_DATA_DIR=str(data), HUB_PORT=str(port), HUB_HOST="127.0.0.1",
               GITHUB_WEBHOOK_SECRET="It's a Secret to Everybody", HUB_LOG_LEVEL="WARNING")
    return env


def test_cli_next_to_run_uses_its_redis_and_ctrl_c_leaves_none(tmp_path: Path) -> None:
    data = tmp_path / "var"
    port = free_port()
    env = hub_env(data, port)
    run = subprocess.Popen([sys.executable, "-m", "hub", "run"], env=env, cwd=tmp_path,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        assert len(redis_servers(data)) == 1

        listed = subprocess.run([sys.executable, "-m", "hub", "events", "list"], env=env, cwd=tmp_path,
                                capture_output=True, text=True, timeout=60)
        assert listed.returncode == 0, listed.stderr
        assert f"unix://{(data / 'redis' / 'redis.sock').resolve()}" in listed.stderr
        assert len(redis_servers(data)) == 1, "the CLI started a second Redis on the same data dir"
    finally:
        run.send_signal(signal.SIGINT)
        output = run.communicate(timeout=60)[0].decode(errors="replace")
    assert "stopped" in output, output
    assert redis_servers(data) == []


def test_run_after_a_cli_command_uses_the_redis_that_command_started(tmp_path: Path) -> None:
    data = tmp_path / "var"
    port = free_port()
    env = hub_env(data, port)
    first = subprocess.run([sys.executable, "-m", "hub", "events", "list"], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    (daemon,) = redis_servers(data)  # the CLI's shared daemon: it outlives the command by design
    run = subprocess.Popen([sys.executable, "-m", "hub", "run"], env=env, cwd=tmp_path,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        assert redis_servers(data) == [daemon]
    finally:
        run.send_signal(signal.SIGINT)
        output = run.communicate(timeout=60)[0].decode(errors="replace")
        still = redis_servers(data)
        for pid in still:
            os.kill(pid, signal.SIGTERM)
    assert "using the embedded Redis already running" in output, output
    assert still == [daemon]  # not stopped by `run`: it was not `run`'s to stop


def test_ctrl_c_of_run_stops_everything_without_a_traceback(tmp_path: Path) -> None:
    """A terminal's Ctrl-C signals the whole foreground group, and an impatient user presses it twice."""
    data = tmp_path / "var"
    port = free_port()
    run = subprocess.Popen([sys.executable, "-m", "hub", "run"], env=hub_env(data, port), cwd=tmp_path,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
    finally:
        os.killpg(run.pid, signal.SIGINT)
        time.sleep(0.1)
        os.killpg(run.pid, signal.SIGINT)
        output = run.communicate(timeout=60)[0].decode(errors="replace")
    assert run.returncode == 0, output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output
    assert "stopped" in output
    assert redis_servers(data) == []


@pytest.mark.parametrize("when", ["starting", "serving"])
def test_ctrl_c_of_serve_is_one_line_not_a_traceback(tmp_path: Path, redis_url: str, when: str) -> None:
    port = free_port()
    env = {**hub_env(tmp_path / "var", port), "REDIS_URL": redis_url}
    serve = subprocess.Popen([sys.executable, "-m", "hub", "serve"], env=env, cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if when == "serving":
        wait_http(f"http://127.0.0.1:{port}/healthz")
    else:
        time.sleep(0.3)  # inside the imports and the settings, before aiohttp's own handlers
    serve.send_signal(signal.SIGINT)
    time.sleep(0.05)
    if serve.poll() is None:
        serve.send_signal(signal.SIGINT)  # twice: during the shutdown the first one started
    output = serve.communicate(timeout=60)[0].decode(errors="replace")
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output


def test_serve_says_what_is_switched_on(tmp_path: Path, redis_url: str) -> None:
    port = free_port()
    env = {**hub_env(tmp_path / "var", port), "REDIS_URL": redis_url, "HUB_ADMIN_TOKEN": "",
           "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0/B0/secret-part"}
    serve = subprocess.Popen([sys.executable, "-m", "hub", "serve"], env=env, cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
    finally:
        serve.send_signal(signal.SIGINT)
        output = serve.communicate(timeout=60)[0].decode(errors="replace")
    (line,) = [x for x in output.splitlines() if "sources:" in x]
    assert "sources: github (not set up: " in line
    assert "connectors: slack (not configured: " in line
    assert "rules: built-in defaults (14 workflows, 0 services)" in line
    assert line.endswith("admin: off (set HUB_ADMIN_TOKEN)")
    assert "secret-part" not in output
