"""Drives the real ActionRunner, with real connectors, real Redis and real HTTP, against fakes.

`Harness.run()` is one processor pass over one action (at most one attempt);
`run_to_final()` keeps passing, waiting out each scheduled retry, until the action is final.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from connectors.base import Connector, RetryPolicy
from hub.core.settings import Settings
from hub.storage.event_store import ACTION_FINAL, Store, now_ms
from hub.storage.ratelimit import RateLimiter
from hub.worker.actions import ActionRunner, PlannedAction

#: Fast enough for tests, with the same shape as production policies.
FAST_RETRY = RetryPolicy(max_attempts=4, base_delay=0.02, max_delay=0.1, deadline=600)


def planned(connector: str, action: str, params: dict[str, Any] | None = None, *, key: str = "idem-1",
            action_id: str | None = None) -> PlannedAction:
    return PlannedAction(id=action_id or f"wf.{connector}.{action}", connector=connector, action=action,
                         params=params or {}, idempotency_key=key, workflow="wf")


class Harness:
    def __init__(self, redis: Any, settings: Settings, *classes: type[Connector], env: dict[str, str] | None = None,
                 inline_wait: float = 2.0) -> None:
        self.redis = redis
        self.settings = settings
        self.store = Store(redis, settings)
        self.classes = classes
        self.env = env if env is not None else {f"{c.name.upper()}_RATE_LIMIT": "0" for c in classes}
        self.inline_wait = inline_wait
        self.http: aiohttp.ClientSession | None = None
        self.connectors: dict[str, Connector] = {}
        self.runner: ActionRunner | None = None

    async def __aenter__(self) -> Harness:
        self.http = aiohttp.ClientSession()
        self.connectors = {c.name: c(self.settings, self.http, self.redis) for c in self.classes}
        self.runner = ActionRunner(self.store, self.connectors, RateLimiter(self.redis, env=self.env),
                                   inline_wait=self.inline_wait)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.http:
            await self.http.close()

    def connector(self, name: str) -> Any:
        return self.connectors[name]

    async def record(self, event_id: str, action_id: str) -> dict[str, Any] | None:
        return (await self.store.actions(event_id)).get(action_id)

    async def run(self, action: PlannedAction, event_id: str = "ev_test", *, fresh: bool = False,
                  received_ms: int | None = None) -> dict[str, Any]:
        """One pass. `fresh=True` ignores the saved record, as after a crash that lost it."""
        assert self.runner is not None
        record = None if fresh else await self.record(event_id, action.id)
        return await self.runner.run(event_id, action, record, received_ms or now_ms())

    async def run_to_final(self, action: PlannedAction, event_id: str = "ev_test", *, fresh: bool = False,
                           received_ms: int | None = None, timeout: float = 15.0) -> dict[str, Any]:
        received = received_ms or now_ms()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        rec = await self.run(action, event_id, fresh=fresh, received_ms=received)
        while rec["state"] not in ACTION_FINAL:
            if loop.time() > deadline:
                raise AssertionError(f"action still {rec['state']} after {timeout}s: {rec}")
            await asyncio.sleep(max(0.0, ((rec.get("next_at") or 0) - now_ms()) / 1000))
            rec = await self.run(action, event_id, received_ms=received)
        return rec
