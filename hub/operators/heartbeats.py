"""Heartbeats for operators: list them with their state, pause and resume (audited).

The admin API (`/admin/heartbeats`) and `incident-hub heartbeats` both call these. A paused
heartbeat is never missed; resuming gives it one full interval + grace from now.
"""

from __future__ import annotations

from typing import Any

from hub.operators import audit
from hub.rules import Rules
from hub.storage.event_store import Store, now_ms
from hub.storage.heartbeats import HeartbeatStore


async def listing(store: Store, rules: Rules | None) -> dict[str, Any]:
    state = HeartbeatStore(store.redis)
    out = []
    for name, hb in (rules.config.heartbeats if rules is not None else {}).items():
        out.append({"name": name, "interval": hb.interval, "grace": hb.grace, "service": hb.service,
                    "severity": hb.severity.value, "alertname": hb.alertname, **await state.state(name)})
    return {"heartbeats": out}


async def pause(store: Store, rules: Rules | None, name: str, by: str) -> dict[str, Any] | None:
    """None when the rules file has no such heartbeat."""
    if rules is None or name not in rules.config.heartbeats:
        return None
    changed = await HeartbeatStore(store.redis).pause(name, now_ms())
    await audit.record(store.redis, by, "heartbeat.pause", name, changed=changed)
    return {"name": name, "paused": True, "changed": changed}


async def resume(store: Store, rules: Rules | None, name: str, by: str) -> dict[str, Any] | None:
    if rules is None or name not in rules.config.heartbeats:
        return None
    hb = rules.config.heartbeats[name]
    changed = await HeartbeatStore(store.redis).resume(name, now_ms(), hb.window_ms)
    await audit.record(store.redis, by, "heartbeat.resume", name, changed=changed)
    return {"name": name, "paused": False, "changed": changed}
