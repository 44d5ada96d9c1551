"""Fixtures of the reliability suite, and the figures table printed at the end of a run.

Every test records what it measured (events, kills, faults, lost, duplicated, RSS, seconds)
through the `figures` fixture; the table is printed after the run and written to
`var/reliability/figures.json`, so a CI log and a local run both show the numbers.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.harness import REPO, Cluster, Upstreams

FIGURES: dict[str, dict[str, Any]] = {}


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> dict[str, Any]:
    return FIGURES.setdefault(request.node.name, {})


@pytest.fixture
async def upstreams() -> AsyncIterator[Upstreams]:
    ups = await Upstreams().start()
    yield ups
    await ups.close()


@pytest.fixture
async def make_cluster(tmp_path: Path) -> AsyncIterator[Callable[..., Cluster]]:
    """Build clusters under this test's tmp dir; all are stopped (SIGTERM, then SIGKILL) at teardown."""
    made: list[Cluster] = []

    def make(env: dict[str, str], workers: int = 2, name: str = "hub", **kwargs: Any) -> Cluster:
        cluster = Cluster(tmp_path / name, env, workers=workers, **kwargs)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        await cluster.close()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    terminalreporter.section("reliability figures")
    for test, values in FIGURES.items():
        terminalreporter.write_line(test)
        for key, value in values.items():
            terminalreporter.write_line(f"    {key}: {json.dumps(value, default=str)}")
    out = REPO / "var" / "reliability"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"figures-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(FIGURES, indent=2, default=str))
    terminalreporter.write_line(f"(written to {path.relative_to(REPO)})")
