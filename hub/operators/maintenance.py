"""Maintenance windows made at run time, for the admin API and the CLI alike.

`start` makes a window (now, for a duration or until a time), `listing` shows the windows
open now and the next ones (the file's and the run-time ones), `end` closes one at once: the
alerts it held are evaluated again by the next sweep (`hub.worker.quiet`). Every change is
written to the audit log. Windows live in Redis (`hub.storage.keys.MAINTENANCE_WINDOWS`);
an ended one is kept a day, so `list` can still say what just closed, then dropped.
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from hub.core.settings import Settings, parse_duration
from hub.operators import audit
from hub.rules import Rules, RulesError, load_rules
from hub.rules.maintenance import WindowMatch, file_windows_open, file_windows_upcoming
from hub.storage import keys
from hub.storage.event_store import Store, now_ms

#: Longest window one request can make (a forgotten one must end by itself).
MAX_WINDOW_S = 7 * 86400
#: How long an ended run-time window is still listed.
KEEP_ENDED_MS = 86400 * 1000


class WindowRequest(BaseModel):
    """`POST /admin/maintenance` and `incident-hub maintenance start`."""

    model_config = ConfigDict(extra="forbid")

    match: WindowMatch
    duration: str | float | None = Field(None, description="e.g. 30m, 2h (at most 7 days)")
    ends_at: AwareDatetime | None = None
    reason: str = Field("", max_length=500)
    name: str = Field("", max_length=63)

    @field_validator("duration")
    @classmethod
    def _duration(cls, v: str | float | None) -> float | None:
        if v is None:
            return None
        seconds = parse_duration(v)
        if not 0 < seconds <= MAX_WINDOW_S:
            raise ValueError("duration must be more than 0 and at most 7d")
        return seconds

    @model_validator(mode="after")
    def _one_end(self) -> WindowRequest:
        if (self.duration is None) == (self.ends_at is None):
            raise ValueError("give either duration or ends_at")
        return self

    def span(self, at_ms: int) -> tuple[int, int]:
        """(start, end) in ms for a window made at `at_ms`; ValueError when the end is not ahead."""
        if self.duration is not None:
            return at_ms, at_ms + int(float(self.duration) * 1000)
        assert self.ends_at is not None
        end = int(self.ends_at.timestamp() * 1000)
        if not at_ms < end <= at_ms + MAX_WINDOW_S * 1000:
            raise ValueError("ends_at must be in the future and at most 7 days ahead")
        return at_ms, end


def file_rules(settings: Settings) -> Rules | None:
    """The rules file in use (for its windows); None when it does not load (the worker refuses it too)."""
    try:
        return load_rules(settings.rules_path())
    except (RulesError, OSError):
        return None


async def start(store: Store, req: WindowRequest, by: str) -> dict[str, Any]:
    """Make a window now; ValueError when its end is not ahead."""
    at = now_ms()
    begin, end = req.span(at)
    window_id = "mw_" + secrets.token_hex(8)
    window = {"id": window_id, "name": req.name or window_id, "match": req.match.model_dump(), "start": begin,
              "end": end, "reason": req.reason, "by": by, "created_at": at, "origin": "api"}
    async with store.redis.pipeline(transaction=True) as p:
        p.hset(keys.MAINTENANCE_WINDOWS, window_id, json.dumps(window, separators=(",", ":")))
        p.zadd(keys.MAINTENANCE_ENDS, {window_id: end})
        await p.execute()
    await audit.record(store.redis, by, "maintenance.start", window_id, match=window["match"], start=begin,
                       end=end, reason=req.reason)
    return window


async def _stored(store: Store) -> list[dict[str, Any]]:
    """Run-time windows; those ended more than a day ago are dropped on the way."""
    old = await store.redis.zrangebyscore(keys.MAINTENANCE_ENDS, "-inf", now_ms() - KEEP_ENDED_MS)
    if old:
        async with store.redis.pipeline(transaction=True) as p:
            p.hdel(keys.MAINTENANCE_WINDOWS, *old)
            p.zrem(keys.MAINTENANCE_ENDS, *old)
            await p.execute()
    out = []
    for raw in (await store.redis.hgetall(keys.MAINTENANCE_WINDOWS)).values():
        try:
            out.append(json.loads(raw))
        except ValueError:
            continue
    return out


async def listing(store: Store, rules: Rules | None) -> dict[str, Any]:
    """Windows open now and upcoming, soonest end first; each with `active`."""
    at = now_ms()
    windows: list[dict[str, Any]] = []
    for w in await _stored(store):
        if int(w["end"]) > at:
            windows.append({**w, "active": int(w["start"]) <= at})
    if rules is not None:
        for ow in file_windows_open(rules.config.maintenance, at):
            windows.append({**ow.view(), "active": True})
        for ow in file_windows_upcoming(rules.config.maintenance, at):
            windows.append({**ow.view(), "active": False})
    windows.sort(key=lambda w: (not w["active"], w["start"] if not w["active"] else w["end"]))
    return {"windows": windows}


async def end(store: Store, window_id: str, by: str) -> dict[str, Any] | None:
    """End a run-time window now; None when there is none open with that id. The alerts it
    held are due at once (the next sweep evaluates them again)."""
    if not keys.is_window_id(window_id):
        return None
    raw = await store.redis.hget(keys.MAINTENANCE_WINDOWS, window_id)
    if raw is None:
        return None
    window = json.loads(raw)
    at = now_ms()
    if int(window["end"]) <= at:
        return None
    window.update(end=at, ended_by=by)
    held = await store.redis.hgetall(keys.QUIET_HELD)
    due = [k for k, v in held.items() if json.loads(v).get("window") == window_id]
    async with store.redis.pipeline(transaction=True) as p:
        p.hset(keys.MAINTENANCE_WINDOWS, window_id, json.dumps(window, separators=(",", ":")))
        p.zadd(keys.MAINTENANCE_ENDS, {window_id: at})
        if due:
            p.zadd(keys.QUIET_DUE, {(k.decode() if isinstance(k, bytes) else k): at for k in due})
        await p.execute()
    await audit.record(store.redis, by, "maintenance.end", window_id, held=len(due))
    return {**window, "active": False, "held": len(due)}


def until_text(ms: int) -> str:
    """A window's end for people: UTC, minutes."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
