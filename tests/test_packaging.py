"""What users install is what is tested.

The wheel must hold every file the package reads at run time, and a hub installed from it
the way `deploy/Dockerfile` installs it (a fresh virtualenv, the locked dependencies, the
wheel with `--no-deps`, a working directory outside the repository, no `HUB_CONFIG`) must
serve, work an event end to end and answer a CLI command. The rest of the suite runs the
editable source tree, which cannot see a data file missing from the wheel.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.storage.embedded_redis import EmbeddedRedis, free_port
from tests.conftest import GITHUB_SECRET, fixture_request, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("hub", "connectors")


def _package_files() -> list[str]:
    """Every file under the packages that a wheel must carry (bytecode caches aside)."""
    return sorted(str(p.relative_to(ROOT)) for pkg in PACKAGES for p in (ROOT / pkg).rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built as the Dockerfile builds it: from a copy holding only what the image's
    build context holds (so no stale build/ directory of the checkout can fill a gap)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(src)],
                   check=True, capture_output=True, timeout=300)
    (built,) = out.glob("incident_hub-*.whl")
    return built


def test_the_wheel_holds_every_file_of_the_packages(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = _package_files()
    assert "hub/rules/defaults.yaml" in expected  # the file whose absence stopped every worker
    missing = [f for f in expected if f not in names]
    assert not missing, f"the wheel lacks {missing}: list them under [tool.setuptools.package-data]"


@pytest.fixture(scope="session")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the locked dependencies and the wheel: the image's /opt/venv."""
    venv = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "--require-hashes", "-r", str(ROOT / "requirements.lock")],
                   check=True, capture_output=True, timeout=600)
    subprocess.run([*pip, "--no-deps", str(wheel)], check=True, capture_output=True, timeout=120)
    return venv


@pytest.fixture
def redis_for_installed(tmp_path: Path) -> Iterator[str]:
    server = EmbeddedRedis(tmp_path / "redis", appendonly=True).start()
    yield server.url
    server.stop()


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the installed hub exited with {proc.returncode}: {proc.stdout.read()!r}")  # type: ignore[union-attr]
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout}s")


async def test_the_installed_wheel_serves_works_an_event_and_answers_the_cli(
        installed: Path, redis_for_installed: str, fake_slack, tmp_path: Path) -> None:
    home = tmp_path / "data"  # like the image's WORKDIR: no hub.yaml, no source tree
    home.mkdir()
    port = free_port()
    env = {"PATH": f"{installed / 'bin'}:/usr/bin:/bin", "HOME": str(home), "REDIS_URL": redis_for_installed,
           "HUB_HOST": "127.0.0.1", "HUB_PORT": str(port), "HUB_DATA_DIR": str(home),
           "GITHUB_WEBHOOK_SECRET": GITHUB_SECRET, "SLACK_WEBHOOK_URL": fake_slack.webhook_url,
           "HUB_ADMIN_TOKEN": "packaging-test-token", "HUB_LOG_LEVEL": "WARNING"}
    exe = str(installed / "bin" / "incident-hub")

    where = subprocess.run([str(installed / "bin" / "python"), "-c", "import hub; print(hub.__file__)"],
                           env=env, cwd=home, capture_output=True, text=True, check=True)
    assert str(installed) in where.stdout and str(ROOT) not in where.stdout, where.stdout

    procs = [subprocess.Popen([exe, role], env=env, cwd=home, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for role in ("serve", "worker")]
    try:
        _wait_http(f"http://127.0.0.1:{port}/healthz", procs[0])
        body, headers = fixture_request("github_deployment_status_failure.json")

        def post() -> dict[str, str]:
            req = urllib.request.Request(f"http://127.0.0.1:{port}/webhooks/github", data=body,
                                         headers=headers, method="POST")
            with urllib.request.urlopen(req, timeout=10) as resp:
                assert resp.status == 202
                return json.loads(resp.read())

        accepted = await asyncio.to_thread(post)
        event_id = accepted["event_id"]

        async def delivered() -> int:
            for p in procs:
                if p.poll() is not None:
                    out = p.stdout.read().decode(errors="replace")  # type: ignore[union-attr]
                    raise AssertionError(f"the installed {p.args[1]} exited with {p.returncode}:\n{out}")
            return len(fake_slack.requests)

        await wait_for(delivered, timeout=60, interval=0.2)

        async def state() -> str | None:
            shown = await asyncio.to_thread(
                subprocess.run, [exe, "events", "show", event_id, "--json"], env=env, cwd=home,
                capture_output=True, text=True, timeout=60)
            assert shown.returncode == 0, shown.stderr
            record = json.loads(shown.stdout)
            return record["state"] if record["state"] == "done" else None

        assert await wait_for(state, timeout=30, interval=0.5) == "done"
        assert len(fake_slack.requests) == 1
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


def _pins(lock: str) -> dict[str, bool]:
    """name → whether its pin carries at least one --hash, from a pip-format lock."""
    pins: dict[str, bool] = {}
    current = None
    for line in (ROOT / lock).read_text().splitlines():
        if "==" in line and not line.startswith((" ", "#")):
            current = line.split("==")[0].strip().lower().replace("_", "-")
            pins[current] = False
        elif current and line.strip().startswith("--hash=sha256:"):
            pins[current] = True
    return pins


def test_the_image_and_make_install_the_hash_checked_locks() -> None:
    """The Dockerfile installs what `make test` installs: the hash-checked lock, then the
    package with --no-deps (so pip cannot resolve other versions than the tested ones)."""
    text = (ROOT / "deploy" / "Dockerfile").read_text().replace("\\\n", " ")
    assert "--require-hashes -r requirements.lock" in text
    assert "pip install --no-deps ." in text
    make = (ROOT / "Makefile").read_text()
    assert "--require-hashes -r $(LOCK)" in make and "--require-hashes -r $(TEST_LOCK)" in make
    for lock in ("requirements.lock", "requirements-test.lock"):
        pins = _pins(lock)
        assert pins and all(pins.values()), f"{lock}: pins without a hash: {[n for n, h in pins.items() if not h]}"


def test_the_locks_pin_every_dependency_pyproject_names() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(deps: list[str]) -> set[str]:
        return {re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0].lower().replace("_", "-") for d in deps}

    assert names(project["dependencies"]) <= set(_pins("requirements.lock"))
    assert names(project["dependencies"] + project["optional-dependencies"]["test"]) <= set(
        _pins("requirements-test.lock"))
