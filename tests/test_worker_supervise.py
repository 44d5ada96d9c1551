"""The worker supervisor: whatever ends arq's poll loop, the process builds a new worker.

Narrow unit tests: the arq Worker is replaced by a stand-in whose run fails the way arq's
does (a WatchError when Redis drops under WATCH, seen in CI during a Redis restart).
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import pytest
from redis import exceptions as redis_errors

from hub.worker import app as worker_mod
from tests.conftest import make_settings


@pytest.fixture(autouse=True)
def _no_heap_freeze(monkeypatch: pytest.MonkeyPatch) -> None:
    """`supervise` freezes its process's heap (hub.core.heap): that is the worker's, not the test runner's."""
    monkeypatch.setattr(worker_mod.heap, "settle", lambda: None)


class StandIn:
    """Runs like an arq Worker: raises `error`, or waits for the stop signal."""

    def __init__(self, error: BaseException | None, started: list[StandIn]) -> None:
        self.error = error
        self.ctx: dict[str, Any] = {}
        self.closed = False
        self.released = asyncio.Event()
        started.append(self)

    async def async_run(self) -> None:
        if self.error is not None:
            raise self.error
        await self.released.wait()

    def handle_sig_wait_for_completion(self, sig: signal.Signals) -> None:
        self.released.set()

    async def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("error", [
    redis_errors.WatchError("A ConnectionError occurred on while watching one or more keys"),
    redis_errors.ConnectionError("Connection closed by server."),
    RuntimeError("an arq bug"),
], ids=["watch-error", "connection-error", "unexpected"])
async def test_supervisor_restarts_the_worker_after_its_run_fails(monkeypatch, redis_url, error) -> None:
    started: list[StandIn] = []
    errors = [error]
    monkeypatch.setattr(worker_mod, "RESTART_MIN_S", 0.01)
    monkeypatch.setattr(worker_mod, "make_worker",
                        lambda *a, **kw: StandIn(errors.pop() if errors else None, started))
    task = asyncio.create_task(worker_mod.supervise(make_settings(redis_url)))
    for _ in range(200):
        if len(started) == 2:
            break
        await asyncio.sleep(0.01)
    assert len(started) == 2, "the supervisor did not start a second worker after the first failed"
    assert started[0].closed
    assert not task.done()

    os.kill(os.getpid(), signal.SIGTERM)  # the supervisor's handler: drain the live worker, then return
    await asyncio.wait_for(task, 5)
    assert started[1].closed
    assert len(started) == 2


async def test_supervisor_does_not_restart_after_a_stop_signal(monkeypatch, redis_url) -> None:
    started: list[StandIn] = []
    monkeypatch.setattr(worker_mod, "make_worker", lambda *a, **kw: StandIn(None, started))
    task = asyncio.create_task(worker_mod.supervise(make_settings(redis_url)))
    for _ in range(200):
        if started:
            break
        await asyncio.sleep(0.01)
    assert started
    os.kill(os.getpid(), signal.SIGINT)
    await asyncio.wait_for(task, 5)
    assert len(started) == 1
