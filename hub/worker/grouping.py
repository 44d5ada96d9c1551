"""Correlation across sources (`grouping:` in hub.yaml): an alert joins an open incident.

Before an event's first run enters its incidents, each alert that fires is looked up by its
`grouping.by` values (`hub.rules.grouping.values`). In one Redis script, atomically (two
workers racing cannot both open an incident for the same values):

- an alert that already has an incident of its own keeps it;
- else, when ``hub:correlation:{values}`` names another alert-born incident that is still
  open or was opened within `window` (or is being opened right now, by a run that claimed
  the values within `window`), the alert **joins** it: its incident key becomes an alias of
  that incident (``hub:incident-alias:{key}``), so this run and every later event of the
  alert (its resolve, a replay) land on that incident through the ordinary alias lookup;
- else the alert claims the values for its own (new) incident.

Incidents declared in an incident tool are never a target: only incidents whose `kind` is `alert`.
What joining does to the incident (members, sources, resolving when all have) is
`hub.storage.alert_groups.track`. Nothing here names an outside system.
"""

from __future__ import annotations

import hashlib
from typing import Any

from redis.asyncio import Redis

from hub.core import metrics
from hub.core.events import Kind, NormalisedEvent
from hub.rules import Rules
from hub.rules.grouping import values
from hub.storage import keys as layout
from hub.storage.event_store import now_ms
from hub.storage.incidents import incident_key

# KEYS: correlation, alias(raw), incident(raw), incident(guess). ARGV: raw, guess, now ms, window ms, ttl s.
# Answers {'retry', target} when the guess was wrong, else {'own' | 'joined' | 'opened', key}.
_CORRELATE = """
local raw, guess = ARGV[1], ARGV[2]
local now, window, ttl = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
if redis.call('EXISTS', KEYS[3]) == 1 then return {'own', raw} end
local cur = redis.call('GET', KEYS[1])
local target, since = '', 0
if cur then
  local sep = string.find(cur, '|', 1, true)
  since = tonumber(string.sub(cur, 1, sep - 1))
  target = string.sub(cur, sep + 1)
end
if target ~= guess then return {'retry', target} end
if target == raw then return {'own', raw} end
local open = false
if target ~= '' then
  if redis.call('EXISTS', KEYS[4]) == 0 then
    open = now - since <= window
  elseif redis.call('HGET', KEYS[4], 'kind') == '"alert"' then
    local resolved = redis.call('HGET', KEYS[4], 'resolved_at')
    local declared = tonumber(redis.call('HGET', KEYS[4], 'declared_at') or '0') or 0
    open = (not resolved) or resolved == 'null' or now - declared <= window
  end
end
if open then
  redis.call('SET', KEYS[2], target, 'EX', ttl)
  return {'joined', target}
end
redis.call('SET', KEYS[1], now .. '|' .. raw, 'EX', ttl)
redis.call('DEL', KEYS[2])
return {'opened', raw}
"""
TRIES = 5


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Correlator:
    """Joins a firing alert to an open incident with the same `grouping.by` values."""

    def __init__(self, redis: Redis, retention_s: float) -> None:
        self.redis = redis
        self.retention = int(retention_s)
        self._script = redis.register_script(_CORRELATE)

    async def names(self, rules: Rules, events: list[NormalisedEvent], names: list[str | None]) -> list[str | None]:
        """The events' incident names with correlation applied (joined alerts now alias their target,
        so `IncidentStore.enter` resolves them to it). Unchanged without `grouping:`."""
        grouping = rules.config.grouping
        if grouping is None or not grouping.by:
            return names
        done: set[str] = set()
        for ev, name in zip(events, names, strict=True):
            if ev.kind != Kind.ALERT_FIRING or not name or name in done:
                continue
            done.add(name)
            found = values(grouping, ev, rules.canonical_services)
            if found is None:
                continue
            outcome = await self.correlate(name, "\x1f".join(found), grouping.window)
            if outcome == "joined":
                metrics.ALERTS_JOINED.labels(ev.source, "correlation").inc()
        return names

    async def correlate(self, raw: str, joined_values: str, window_s: float) -> str:
        """'own', 'joined' or 'opened' for the alert incident `raw` and its values."""
        corr = layout.correlation(hashlib.sha256(joined_values.encode()).hexdigest()[:32])
        found = await self.redis.get(corr)
        guess = _text(found).partition("|")[2] if found else ""
        for _ in range(TRIES):
            out = await self._script(keys=[corr, layout.incident_alias(raw), layout.incident(raw),
                                           layout.incident(guess)],
                                     args=[raw, guess, now_ms(), int(window_s * 1000), self.retention])
            what, key = _text(out[0]), _text(out[1])
            if what != "retry":
                return what
            guess = key
        raise RuntimeError(f"the correlation of {raw!r} kept changing")


def joined_changes(ev: NormalisedEvent, key: str, before: dict[str, Any] | None, after: dict[str, Any],
                   event_id: str) -> list[dict[str, Any]]:
    """Timeline lines for an alert that joined the incident `key` (first time per member), counted."""
    member = incident_key(ev)
    if not member or member == key or ev.kind != Kind.ALERT_FIRING:
        return []
    if member in ((before or {}).get("members") or {}) and before.get("episode") == after.get("episode"):
        return []
    metrics.PAGES_SUPPRESSED.labels("grouping").inc()
    return [{"type": "joined", "alert": member, "source": ev.source, "title": ev.title,
             "alerts": after.get("alert_count"), "event_id": event_id}]
