"""The parts depend on each other one way, and no module keeps hidden state of its own.

Read from the source (every import, also those inside functions, counts): a lazy import is
still a cycle, only a hidden one.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@lru_cache(maxsize=1)
def graph() -> dict[str, set[str]]:
    """module → the hub/connectors modules it imports anywhere in its text."""
    files = {}
    for path in [*ROOT.joinpath("hub").rglob("*.py"), *ROOT.joinpath("connectors").rglob("*.py")]:
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        files[name] = path
    out: dict[str, set[str]] = {}
    for name, path in files.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    deps.add(full if full in files else node.module)
            elif isinstance(node, ast.Import):
                deps.update(alias.name for alias in node.names)
        out[name] = {d for d in deps if d in files and d != name}
    return out


def reaches(start: str, goal: str) -> bool:
    seen, todo = {start}, [start]
    while todo:
        for dep in graph()[todo.pop()]:
            if dep == goal:
                return True
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return False


@pytest.mark.parametrize(("importer", "imported"), [
    ("hub.operators.admin", "hub.ingress.app"),  # the app mounts the admin, not the other way round
    ("hub.worker.app", "hub.ingress.app"),
    ("hub.rules.checks", "hub.rules.loader"),  # the loader runs the checks
    ("hub.rules.engine", "hub.rules.loader"),
])
def test_no_import_back(importer: str, imported: str) -> None:
    assert not reaches(importer, imported), f"{importer} imports {imported} (directly or through others)"


def test_the_admin_api_is_a_sub_application_with_authentication_as_middleware() -> None:
    from hub.ingress.app import create_app
    from hub.operators.admin import authenticated
    from tests.conftest import make_settings

    app = create_app(make_settings("redis://127.0.0.1:1/0"))
    (admin,) = [r for r in app.router.resources() if r.canonical == "/admin"]
    sub = admin._app  # type: ignore[attr-defined]
    assert authenticated in sub.middlewares
    assert {r.canonical for r in sub.router.resources()} >= {"/admin/events", "/admin/incidents/{key}/ack"}


def test_rate_limits_read_no_environment_of_their_own() -> None:
    """The limits come from `Settings.rate_limits`; the limiter reads neither `.env` nor os.environ."""
    text = ROOT.joinpath("hub", "storage", "ratelimit.py").read_text(encoding="utf-8")
    assert "dotenv" not in text and "os.environ" not in text and "getenv" not in text


def test_a_sighup_reload_reaches_the_running_processor() -> None:
    from hub.rules import load_rules
    from hub.worker.app import LiveRules

    class Planner:
        rules = None

    live = LiveRules(load_rules(None))
    planner = Planner()
    live.processor = planner  # type: ignore[assignment]
    newer = load_rules(None)
    live.replace(newer)
    assert live.rules is newer and planner.rules is newer
