"""`incident-hub rules diff OLD NEW`: the traffic recorded in Redis, planned against two rule sets.

A rules change is reviewed against what really arrived: every event recorded in the window
(``hub:idx:all``, oldest first) is planned through the worker's `Planner` twice, once per rule
set, each over its own in-memory world (`hub.operators.rule_scenario.Scenario`, as
`incident-hub test` plans a case's `given`), so incidents opened by earlier events of the
window carry forward. Per event the two plans are compared: actions added, removed, or
changed in their parameters (secrets masked), and each alert's incident (opens / joins),
suppression by a window and `grouping.defer`.

Safe against production Redis: plain reads only (ZCOUNT, ZRANGEBYSCORE, HMGET; no script, so
nothing is loaded into the script cache), the window streamed a page at a time, at most
`limit` events. What the window cannot see: incidents opened before it (each side starts
empty), windows made at run time through the API, timers firing later.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from connectors.base import BadPayload
from hub.operators.rule_scenario import Outcome, Scenario
from hub.rules import Rules
from hub.rules.engine import PlannedStep
from hub.storage.event_store import IDX_ALL, ev_key
from hub.worker.actions import is_secret_param, redact

#: Index entries (and records) read per round trip.
PAGE = 200
#: Events planned at most, unless `--limit` says otherwise.
DEFAULT_LIMIT = 10_000
#: Characters of one shown parameter value.
VALUE_CHARS = 160
_FIELDS = ("source", "received_at", "body", "headers", "content_type", "title", "services")


def mask(secret: str) -> str:
    """Enough of a secret to tell two apart (its last 4 characters), never enough to use it."""
    return f"…{secret[-4:]}" if len(secret) >= 12 else "***"


def shown(name: str, value: Any) -> str:
    """A parameter value as the diff prints it: secrets masked, long text cut."""
    if value is None:
        return "(none)"
    if is_secret_param(name) and value:
        return mask(value if isinstance(value, str) else json.dumps(value, default=str))
    if isinstance(value, dict):
        value = redact(value)
    elif isinstance(value, list):
        value = [redact(v) if isinstance(v, dict) else v for v in value]
    text = value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
    return text if len(text) <= VALUE_CHARS else text[:VALUE_CHARS - 1] + "…"


# -- reading the window --------------------------------------------------------------------------

async def window_size(redis: Redis, since_ms: int, until_ms: int) -> int:
    return int(await redis.zcount(IDX_ALL, since_ms, until_ms))


async def window_start(redis: Redis, since_ms: int, until_ms: int, limit: int) -> int:
    """Where planning starts: `since`, or the receipt of the newest `limit`-th event when the
    window holds more (the most recent traffic is what a change meets first)."""
    nth = await redis.zrevrangebyscore(IDX_ALL, until_ms, since_ms, start=limit, num=1, withscores=True)
    return int(nth[0][1]) + 1 if nth else since_ms


async def recorded(redis: Redis, since_ms: int, until_ms: int, limit: int) -> AsyncIterator[dict[str, Any]]:
    """The event records received in [since, until], oldest first, `PAGE` at a time (reads only).

    Records already expired (their index entry not trimmed yet) are left out."""
    lo, ties, n = since_ms, 0, 0  # ties: entries at score `lo` already read (the next page skips them)
    while n < limit:
        want = min(PAGE, limit - n)
        rows = await redis.zrangebyscore(IDX_ALL, lo, until_ms, start=ties, num=want, withscores=True)
        if not rows:
            return
        async with redis.pipeline(transaction=False) as p:
            for member, _score in rows:
                p.hmget(ev_key(member.decode()), _FIELDS)
            values = await p.execute()
        for (member, score), got in zip(rows, values, strict=True):
            ms = int(score)
            ties = ties + 1 if ms == lo else 1
            lo = ms
            if got[0] is None or got[2] is None:
                continue
            n += 1
            yield {"id": member.decode(), "source": got[0].decode(), "received_at": int(got[1] or ms),
                   "body": got[2], "headers": json.loads(got[3]) if got[3] else {},
                   "content_type": (got[4] or b"application/json").decode(),
                   "title": (got[5] or b"").decode("utf-8", "replace"),
                   "services": (got[6] or b"").decode("utf-8", "replace")}
            if n >= limit:
                return
        if len(rows) < want:
            return


# -- comparing two plans -------------------------------------------------------------------------

@dataclass
class Side:
    """One rule set's plan of one event: its outcome, or why it could not be planned."""

    outcome: Outcome | None = None
    error: str | None = None


def _action(s: PlannedStep) -> dict[str, Any]:
    row: dict[str, Any] = {"action": s.name, "workflow": s.workflow, "step": s.step_id,
                           "params": {k: shown(k, v) for k, v in sorted(s.params.items())}}
    if s.timer is not None:
        row["delay_s"] = s.delay
    return row


def _changed_params(old: PlannedStep, new: PlannedStep) -> list[dict[str, str]]:
    out = []
    for k in sorted(set(old.params) | set(new.params)):
        a, b = old.params.get(k), new.params.get(k)
        if a != b:
            out.append({"param": k, "old": shown(k, a), "new": shown(k, b)})
    if (old.delay if old.timer else None) != (new.delay if new.timer else None):
        out.append({"param": "(delay_s)", "old": shown("", old.delay if old.timer else None),
                    "new": shown("", new.delay if new.timer else None)})
    return out


def _by_place(planned: list[PlannedStep]) -> dict[tuple[Any, ...], PlannedStep]:
    """Steps by where the rules put them (workflow, step, action, which event), not by their id:
    an id carries the incident key, so a step whose incident changed is one step changed in its
    `dedup_key`, not one removed and one added."""
    out: dict[tuple[Any, ...], PlannedStep] = {}
    for s in planned:
        place: tuple[Any, ...] = (s.workflow, s.step_id, s.name, s.event_index, s.timer.group if s.timer else None)
        n = 0
        while (*place, n) in out:  # the same step twice in one plan: paired in order
            n += 1
        out[(*place, n)] = s
    return out


def _incident(o: Outcome, i: int) -> str:
    key = o.keys[i] if i < len(o.keys) else None
    if not key:
        return "no incident"
    before, after = o.before[i], o.after[i] or {}
    opens = before is None or before.get("episode") != after.get("episode")
    return f"{'opens' if opens else 'joins'} {key}"


def _grouping(o: Outcome, i: int) -> str:
    held = o.held.get(i)
    return _incident(o, i) + (f"; suppressed by {held}" if held else "")


@dataclass
class EventDiff:
    """What changes for one recorded event (empty lists: nothing)."""

    id: str
    source: str
    received_at: int
    title: str
    services: str
    added: list[dict[str, Any]] = field(default_factory=list)
    removed: list[dict[str, Any]] = field(default_factory=list)
    changed: list[dict[str, Any]] = field(default_factory=list)
    grouping: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, str | None] | None = None
    #: One rule set or both could not plan it (the same failure on both is no change).
    unplannable: bool = False

    @property
    def any(self) -> bool:
        return bool(self.added or self.removed or self.changed or self.grouping or self.error)

    def as_dict(self) -> dict[str, Any]:
        out = {"id": self.id, "source": self.source, "received_at": self.received_at, "title": self.title,
               "services": [s for s in self.services.split(",") if s], "added": self.added,
               "removed": self.removed, "changed": self.changed, "grouping": self.grouping}
        if self.error:
            out["error"] = self.error
        return out


def compare(rec: dict[str, Any], old: Side, new: Side) -> EventDiff:
    """The difference of one event's two plans."""
    d = EventDiff(rec["id"], rec["source"], rec["received_at"], rec.get("title", ""), rec.get("services", ""))
    events = (new.outcome or old.outcome).events if (new.outcome or old.outcome) else []
    if events and not d.title:  # a record the worker has not parsed yet has no row summary
        d.title = next((e.title for e in events if e.title), "")[:200]
        d.services = ",".join(dict.fromkeys(s for e in events for s in e.services))[:200]
    if old.error or new.error:
        d.unplannable = True
        if old.error != new.error:
            d.error = {"old": old.error, "new": new.error}
        if old.outcome is None or new.outcome is None:  # one side has no plan: all of the other's is the change
            for s in (new.outcome.planned if new.outcome else []):
                d.added.append(_action(s))
            for s in (old.outcome.planned if old.outcome else []):
                d.removed.append(_action(s))
            return d
    assert old.outcome is not None and new.outcome is not None
    a, b = old.outcome, new.outcome
    by_old, by_new = _by_place(a.planned), _by_place(b.planned)
    d.removed = [_action(s) for k, s in by_old.items() if k not in by_new]
    d.added = [_action(s) for k, s in by_new.items() if k not in by_old]
    for k, s in by_old.items():
        if k in by_new and (params := _changed_params(s, by_new[k])):
            d.changed.append({"action": s.name, "workflow": s.workflow, "step": s.step_id, "changes": params})
    for i in range(max(len(a.events), len(b.events))):
        ev = (a.events[i] if i < len(a.events) else b.events[i])
        was = _grouping(a, i) if i < len(a.events) else "not produced"
        now = _grouping(b, i) if i < len(b.events) else "not produced"
        if was != now:
            d.grouping.append({"event": i, "kind": ev.kind, "fingerprint": ev.fingerprint, "old": was, "new": now})
    if a.deferred != b.deferred:
        d.grouping.append({"event": None, "kind": "deferred", "fingerprint": "",
                           "old": ", ".join(a.deferred) or "none", "new": ", ".join(b.deferred) or "none"})
    return d


async def plan_side(scenario: Scenario, rec: dict[str, Any]) -> Side:
    try:
        return Side(await scenario.deliver_record(rec))
    except BadPayload as e:
        return Side(error=f"the {rec['source']} payload was rejected: {e.detail}")
    except Exception as e:  # a rules or parser bug: noted on the event, the others still run
        return Side(error=f"planning failed: {type(e).__name__}: {e}")


@dataclass
class Summary:
    read: int = 0
    changed: int = 0
    #: Events one rule set or both could not plan.
    errors: int = 0
    limit_reached: bool = False
    #: action name → {"added": n, "removed": n, "changed": n}.
    actions: dict[str, dict[str, int]] = field(default_factory=dict)
    #: Alerts whose incident or suppression differs.
    grouping: int = 0

    def count(self, d: EventDiff) -> None:
        self.read += 1
        if d.unplannable:
            self.errors += 1
        if not d.any:
            return
        self.changed += 1
        self.grouping += len(d.grouping)
        for what in ("added", "removed", "changed"):
            for row in getattr(d, what):
                self.actions.setdefault(row["action"], {"added": 0, "removed": 0, "changed": 0})[what] += 1

    def as_dict(self) -> dict[str, Any]:
        return {"events_read": self.read, "events_changed": self.changed, "events_unplannable": self.errors,
                "limit_reached": self.limit_reached, "grouping_changes": self.grouping,
                "actions": dict(sorted(self.actions.items()))}


async def diff_recorded(redis: Redis, old: Rules, new: Rules, configured: set[str], since_ms: int, until_ms: int,
                        limit: int, on_event: Callable[[EventDiff], None],
                        on_progress: Callable[[int], None] | None = None) -> Summary:
    """Plan the window's events against both rule sets, in received order; `on_event` gets each change."""
    worlds = Scenario(old, configured), Scenario(new, configured)
    summary = Summary()
    start = await window_start(redis, since_ms, until_ms, limit)
    summary.limit_reached = start > since_ms
    async for rec in recorded(redis, start, until_ms, limit):
        d = compare(rec, await plan_side(worlds[0], rec), await plan_side(worlds[1], rec))
        summary.count(d)
        if d.any:
            on_event(d)
        if on_progress is not None:
            on_progress(summary.read)
    return summary
