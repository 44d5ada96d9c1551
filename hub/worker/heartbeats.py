"""The worker's side of heartbeats: the missed check, the outbox, and Watchdog alerts as pings.

`Heartbeats.check` runs from the worker's cron every 5 s (and at start). It first tracks
every heartbeat of the rules file not tracked yet (due one full period from now: a new
heartbeat, or state lost with Redis, never counts as missed at once), then claims those due
(`hub.storage.heartbeats`: one worker wins) and records their `heartbeat.missed` events. No
heartbeat is judged while no web process has taken requests lately (`HEARTBEATS_INGRESS`):
pings that could not arrive are not missed. For a Watchdog (`alertname`), an alert still
queued or being worked that arrived before the due time may be the ping: the check waits.

An alert whose `alertname` is a heartbeat's counts as a ping and never pages: the executor
drops its steps (`hub.worker.quiet`) and calls `ping`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from hub.core import metrics
from hub.core.events import NormalisedEvent
from hub.rules import Rules
from hub.rules.heartbeats import SOURCE, event_body
from hub.storage import keys
from hub.storage.event_store import Store, now_ms, state_idx
from hub.storage.heartbeats import HeartbeatStore

log = logging.getLogger("hub.worker.heartbeats")
#: Seconds between missed checks (the worker's cron).
CHECK_EVERY_S = 5


def watchdog_of(rules: Rules, ev: NormalisedEvent) -> str | None:
    """The heartbeat a firing alert pings (its `alertname` label names one), else None."""
    if not ev.kind.startswith("alert."):
        return None
    alertname = ev.labels.get("alertname")
    if not alertname:
        return None
    for name, hb in rules.config.heartbeats.items():
        if hb.alertname and hb.alertname == alertname:
            return name
    return None


class Heartbeats:
    def __init__(self, store: Store, rules: Callable[[], Rules]) -> None:
        self.store = store
        self.state = HeartbeatStore(store.redis)
        self._rules = rules

    async def ping(self, name: str, at_ms: int | None = None) -> bool:
        """A ping (from an alert); records `heartbeat.recovered` when it ends a missed period."""
        hb = self._rules().config.heartbeats.get(name)
        if hb is None:
            return False
        recovered = await self.state.ping(name, now_ms() if at_ms is None else at_ms, hb.window_ms)
        if recovered:
            await self.record()
        return recovered

    async def record(self) -> int:
        """Record the outbox's events (idempotent: the outbox member is the delivery id)."""
        specs = self._rules().config.heartbeats
        recorded = 0
        for item in await self.state.outbox():
            hb = specs.get(item.name)
            if hb is not None:
                last = (await self.state.state(item.name))["last_ping"]
                body = event_body(item.name, hb, f"heartbeat.{item.kind}", item.at,
                                  last if item.kind == "recovered" else _before(last, item.at))
                await self.store.ingest(SOURCE, item.member, body, {}, "application/json", "hub")
                recorded += 1
            await self.state.done(item.member)
        return recorded

    async def check(self, at_ms: int | None = None) -> int:
        """Track new heartbeats, claim the missed ones, record what was decided. Returns how many missed."""
        at = now_ms() if at_ms is None else at_ms
        specs = self._rules().config.heartbeats
        for name, hb in specs.items():
            await self.state.ensure(name, at + hb.window_ms)
        missed = 0
        if await self.state.ingress_alive():
            for name, due in await self.state.due(at):
                hb = specs.get(name)
                if hb is None:  # no longer in the file
                    await self.store.redis.zrem(keys.HEARTBEATS_DUE, name)
                    continue
                if hb.alertname and await self._unworked_before(due):
                    continue  # an alert not yet worked may be its ping
                if await self.state.claim_missed(name, at):
                    missed += 1
                    metrics.HEARTBEATS_MISSED.labels(name).inc()
                    log.warning("heartbeat %s missed (due %d)", name, due)
        await self.record()
        return missed

    async def _unworked_before(self, ms: int) -> bool:
        r = self.store.redis
        return bool(await r.zcount(state_idx("accepted"), "-inf", ms) or
                    await r.zcount(state_idx("processing"), "-inf", ms))


def _before(last_ping: int | None, at: int) -> int | None:
    """The last ping before a missed period (a later one belongs to the recovery)."""
    return last_ping if last_ping is not None and last_ping <= at else None
