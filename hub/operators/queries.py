"""Read-side queries for operators: event listings, one event in full (and its incidents), dead letters.

Listings walk the sorted-set indexes of `hub.storage.event_store` newest first and never look at more
than a bounded multiple of the page size:

- the *driver* is the most selective index for the filters given (ZCOUNT in the time
  window is O(log n) per index); the other filters are checked page-wise against the
  records themselves;
- a page that hits the scan budget before it is full comes back short, with a cursor to
  continue from where the scan stopped (so a rare filter costs several cheap requests,
  never one request that reads everything);
- cursors are positions ``(score, member)``, not offsets: events that arrive while an
  operator pages (they are newer, so above the cursor) never shift or repeat a page.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from redis.asyncio import Redis

from hub.core.events import NormalisedEvent
from hub.core.settings import parse_duration
from hub.storage import keys as layout
from hub.storage.event_store import (
    DEAD,
    IDX_ALL,
    STATES,
    actions_key,
    ev_key,
    kind_idx,
    now_ms,
    source_idx,
    state_idx,
    timeline_key,
)
from hub.storage.incidents import incident_key

MAX_LIMIT = 500
#: Index entries a single listing request may examine, as a multiple of its page size.
SCAN_FACTOR = 10
SCAN_MIN = 200
#: Incidents named in one event's detail (a group delivery names one; a correlated storm a few).
EVENT_INCIDENTS_MAX = 50
#: Chunk records of one event read for their pins (`hub.worker.chunks`).
EVENT_CHUNKS_MAX = 100
#: "failed" is shorthand for the two final states that have dead letters.
STATE_ALIASES = {"failed": ("partially_failed", "dead"), "final": ("done", "partially_failed", "dead"),
                 "in_flight": ("accepted", "processing")}
ROW_FIELDS = ("source", "state", "received_at", "updated_at", "delivery_id", "kinds", "size", "error", "title",
              "severity", "services")


class QueryError(ValueError):
    """Bad filter or cursor from an operator (→ 400 with this sentence)."""


# -- parsing operator input -----------------------------------------------------------------

def parse_time(value: str, now: int | None = None) -> int:
    """Epoch ms from `1718612103` (s), `1718612103000` (ms), ISO 8601, or an age like `1h`, `7d`."""
    v = value.strip()
    if not v:
        raise QueryError("empty time")
    now = now_ms() if now is None else now
    if re.fullmatch(r"\d+(\.\d+)?", v):
        n = float(v)
        return _bounded(n if n >= 1e11 else n * 1000, value)
    if re.fullmatch(r"\d+(\.\d+)?\s*(ms|s|m|h|d)", v):
        return _bounded(now - parse_duration(v) * 1000, value)
    try:
        dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        raise QueryError(f"not a time: {value!r} (use an age like 1h or 7d, epoch seconds, or ISO 8601)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return _bounded(dt.timestamp() * 1000, value)


#: Times and cursor scores beyond this (ms, either sign) are not ones the hub wrote: 400, not a 500
#: from float('inf') or a Redis score it cannot parse. Year 9999 ends at 253402300800000.
MAX_MS = 253_402_300_800_000


def _bounded(ms: float, value: object) -> int:
    if not math.isfinite(ms) or abs(ms) > MAX_MS:
        raise QueryError(f"time out of range: {str(value)[:40]!r}")
    return int(ms)


def parse_states(value: str | None) -> tuple[str, ...]:
    """`done`, `dead,partially_failed` or an alias (`failed`, `final`, `in_flight`)."""
    if not value:
        return ()
    out: list[str] = []
    for part in (p.strip() for p in value.split(",")):
        if not part:
            continue
        if part in STATE_ALIASES:
            out.extend(STATE_ALIASES[part])
        elif part in STATES:
            out.append(part)
        else:
            known = ", ".join((*STATES, *STATE_ALIASES))
            raise QueryError(f"unknown status {part!r}; use one of {known}")
    return tuple(dict.fromkeys(out))


def parse_limit(value: str | int | None, default: int = 50) -> int:
    if value in (None, ""):
        return default
    try:
        n = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise QueryError(f"limit must be a whole number, got {value!r}") from None
    if not 1 <= n <= MAX_LIMIT:
        raise QueryError(f"limit must be between 1 and {MAX_LIMIT}")
    return n


def valid_event_id(event_id: str) -> bool:
    """An id in the hub's own format (`hub.storage.keys.EVENT_ID`): anything else names no event, and
    must never become part of a key (``ev_…:timeline`` would name the event's timeline)."""
    return layout.is_event_id(event_id)


@dataclass(frozen=True)
class Cursor:
    """A position in an index: the last entry already returned."""

    score: int
    member: str

    def encode(self) -> str:
        raw = json.dumps([self.score, self.member], separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            score, member = json.loads(raw)
            if not isinstance(member, str) or not isinstance(score, int | float) or isinstance(score, bool):
                raise TypeError
            if not math.isfinite(score) or abs(score) > MAX_MS:  # Infinity, NaN, 1e400: no position of ours
                raise ValueError
            return cls(int(score), member)
        except (binascii.Error, ValueError, TypeError, UnicodeDecodeError, OverflowError):
            raise QueryError("cursor is not one this API returned; start again without it") from None


@dataclass(frozen=True)
class EventFilter:
    states: tuple[str, ...] = ()
    source: str | None = None
    kind: str | None = None
    since: int | None = None
    until: int | None = None

    @classmethod
    def from_params(cls, params: Any) -> EventFilter:
        """From a query string / CLI mapping with keys status, source, kind, since, until."""
        get = params.get
        since = get("since")
        until = get("until")
        return cls(states=parse_states(get("status") or get("state")),
                   source=(get("source") or None), kind=(get("kind") or None),
                   since=parse_time(since) if since else None, until=parse_time(until) if until else None)

    def as_dict(self) -> dict[str, Any]:
        return {"status": list(self.states), "source": self.source, "kind": self.kind,
                "since": self.since, "until": self.until}


@dataclass
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None
    scanned: int = 0
    driver: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


# -- walking an index newest first ----------------------------------------------------------

_BELOW_LUA = """
local s = redis.call('ZSCORE', KEYS[1], ARGV[2])
if (not s) or tonumber(s) ~= tonumber(ARGV[1]) then return false end
local r = redis.call('ZREVRANK', KEYS[1], ARGV[2])
return redis.call('ZREVRANGE', KEYS[1], r + 1, r + tonumber(ARGV[3]), 'WITHSCORES')
"""


def _pairs(flat: list[Any]) -> list[tuple[int, str]]:
    out = []
    for i in range(0, len(flat), 2):
        m = flat[i]
        out.append((int(float(flat[i + 1])), m.decode() if isinstance(m, bytes) else m))
    return out


class IndexWalker:
    """Entries of one or more sorted sets (a union), strictly below a cursor, newest first."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._below = redis.register_script(_BELOW_LUA)

    async def _one(self, key: str, cursor: Cursor | None, n: int, lo: int | None, hi: int | None
                   ) -> list[tuple[int, str]]:
        lo_s = "-inf" if lo is None else lo
        if cursor is None:
            hi_s = "+inf" if hi is None else hi
            rows = await self.redis.zrevrangebyscore(key, hi_s, lo_s, start=0, num=n, withscores=True)
            return [(int(s), m.decode()) for m, s in rows]
        # Fast path: the cursor entry is still in this index → rank arithmetic, atomically.
        flat = await self._below(keys=[key], args=[cursor.score, cursor.member, n])
        if flat:
            pairs = _pairs(flat)
            return [p for p in pairs if lo is None or p[0] >= lo]
        if flat is not None and flat == []:
            return []
        # The cursor entry left this index (a state change): seek by score, skip ties at or above it.
        out: list[tuple[int, str]] = []
        offset = 0
        cm = cursor.member.encode()
        while len(out) < n:
            batch = await self.redis.zrevrangebyscore(key, cursor.score, lo_s, start=offset, num=n, withscores=True)
            if not batch:
                break
            for m, s in batch:
                if int(s) < cursor.score or m < cm:
                    out.append((int(s), m.decode()))
            offset += len(batch)
            if len(batch) < n:
                break
        return out[:n]

    async def below(self, keys: list[str], cursor: Cursor | None, n: int, lo: int | None = None,
                    hi: int | None = None) -> list[tuple[int, str]]:
        """Up to n entries of the union of `keys` below `cursor`, within [lo, hi], newest first."""
        if len(keys) == 1:
            return await self._one(keys[0], cursor, n, lo, hi)
        merged: dict[str, int] = {}
        for key in keys:
            for score, member in await self._one(key, cursor, n, lo, hi):
                merged[member] = score
        ordered = sorted(((s, m) for m, s in merged.items()), key=lambda p: (p[0], p[1].encode()), reverse=True)
        return ordered[:n]


#: Reads one batch of index entries in one round trip: a row per entry, None to leave it out
#: (expired, or not matching a filter).
RowsOf = Callable[[list[tuple[int, str]]], Awaitable[list[dict[str, Any] | None]]]


async def page_of_index(redis: Redis, index: str | list[str], cursor: str | None, limit: int, rows_of: RowsOf,
                        kind: str, *, filtered: bool = False, lo: int | None = None, hi: int | None = None) -> Page:
    """One page of an index (or of the union of several), newest first, below `cursor`: batches
    are read until the page is full, the index ends or the scan budget is spent (a filter that
    matches little then answers a short page with a cursor to go on from)."""
    indexes = [index] if isinstance(index, str) else index
    pos = Cursor.decode(cursor) if cursor else None
    walker = IndexWalker(redis)
    budget = max(SCAN_MIN, limit * SCAN_FACTOR)
    items: list[dict[str, Any]] = []
    scanned = 0
    exhausted = False
    last = pos
    while len(items) < limit and scanned < budget:
        want = min(max(limit - len(items), 10) + (limit if filtered else 0), budget - scanned)
        batch = await walker.below(indexes, last, want, lo, hi)
        if not batch:
            exhausted = True
            break
        for (score, member), row in zip(batch, await rows_of(batch), strict=True):
            scanned += 1
            last = Cursor(score, member)
            if row is None:
                continue
            items.append(row)
            if len(items) == limit:
                break
        if len(batch) < want and len(items) < limit:
            exhausted = True
            break
    next_cursor = last.encode() if not exhausted and last is not None and last != pos else None
    return Page(items, next_cursor, scanned, kind)


# -- events ---------------------------------------------------------------------------------

def _row(event_id: str, values: list[Any]) -> dict[str, Any] | None:
    f = dict(zip(ROW_FIELDS, (v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in values),
                 strict=True))
    if f["state"] is None:
        return None  # expired record; the sweeper trims its index entries
    kinds = [k for k in (f["kinds"] or "").split(",") if k]
    return {"id": event_id, "source": f["source"], "state": f["state"],
            "received_at": int(f["received_at"] or 0), "updated_at": int(f["updated_at"] or 0),
            "delivery_id": f["delivery_id"], "kinds": kinds, "size": int(f["size"] or 0),
            "error": f["error"], "title": f["title"] or "", "severity": f["severity"] or None,
            "services": [s for s in (f["services"] or "").split(",") if s]}


def _matches(row: dict[str, Any], flt: EventFilter) -> bool:
    if flt.states and row["state"] not in flt.states:
        return False
    if flt.source and row["source"] != flt.source:
        return False
    return not (flt.kind and flt.kind not in row["kinds"])


async def _driver(redis: Redis, flt: EventFilter) -> tuple[str, list[str]]:
    """The smallest candidate index (or union of indexes) for these filters."""
    lo = "-inf" if flt.since is None else flt.since
    hi = "+inf" if flt.until is None else flt.until
    options: list[tuple[str, list[str]]] = []
    if flt.states:
        options.append(("status", [state_idx(s) for s in flt.states]))
    if flt.source:
        options.append(("source", [source_idx(flt.source)]))
    if flt.kind:
        options.append(("kind", [kind_idx(flt.kind)]))
    if not options:
        return "all", [IDX_ALL]
    if len(options) == 1:
        return options[0]
    async with redis.pipeline(transaction=False) as p:
        for _, keys in options:
            for key in keys:
                p.zcount(key, lo, hi)
        counts = await p.execute()
    best, best_n, i = options[0], None, 0
    for opt in options:
        n = sum(counts[i:i + len(opt[1])])
        i += len(opt[1])
        if best_n is None or n < best_n:
            best, best_n = opt, n
    return best


async def list_events(redis: Redis, flt: EventFilter, limit: int = 50, cursor: str | None = None) -> Page:
    """One page of events matching `flt`, newest first (see the module docstring)."""
    name, keys = await _driver(redis, flt)

    async def rows_of(batch: list[tuple[int, str]]) -> list[dict[str, Any] | None]:
        async with redis.pipeline(transaction=False) as p:
            for _, event_id in batch:
                p.hmget(ev_key(event_id), ROW_FIELDS)
            values = await p.execute()
        rows = [_row(event_id, vals) for (_, event_id), vals in zip(batch, values, strict=True)]
        return [row if row is not None and _matches(row, flt) else None for row in rows]

    filtered = sum(bool(x) for x in (flt.states, flt.source, flt.kind)) > (0 if name == "all" else 1)
    return await page_of_index(redis, keys, cursor, limit, rows_of, name, filtered=filtered,
                               lo=flt.since, hi=flt.until)


def _decode_payload(body: bytes | None) -> tuple[Any, str | None]:
    if body is None:
        return None, None
    try:
        return json.loads(body), None
    except (ValueError, UnicodeDecodeError):
        return None, body.decode("utf-8", "replace")


async def event_detail(redis: Redis, event_id: str) -> dict[str, Any] | None:
    """Everything known about one event, as the admin API and `events show` present it."""
    async with redis.pipeline(transaction=False) as p:
        p.hgetall(ev_key(event_id))
        p.hgetall(actions_key(event_id))
        p.lrange(timeline_key(event_id), 0, -1)
        raw, actions_raw, timeline_raw = await p.execute()
    if not raw:
        return None
    rec = {k.decode(): v for k, v in raw.items()}
    body = rec.pop("body", None)
    text = {k: v.decode("utf-8", "replace") for k, v in rec.items()}
    payload, raw_text = _decode_payload(body)
    actions = sorted((json.loads(v) for v in actions_raw.values()),
                     key=lambda a: (a.get("created_at") or 0, a.get("id", "")))
    dead_at = {}
    if actions:
        async with redis.pipeline(transaction=False) as p:
            for a in actions:
                p.zscore(DEAD, f"{event_id}/{a['id']}")
            for a, score in zip(actions, await p.execute(), strict=True):
                dead_at[a["id"]] = int(score) if score is not None else None
    for a in actions:
        a["dead_letter"] = dead_at.get(a["id"]) is not None
        a.setdefault("history", [])
    out: dict[str, Any] = {
        "id": event_id, "source": text.get("source"), "state": text.get("state"),
        "received_at": int(text.get("received_at", 0)), "updated_at": int(text.get("updated_at", 0)),
        "delivery_id": text.get("delivery_id"), "content_type": text.get("content_type"),
        "verified": text.get("verified"), "size": int(text.get("size", 0)),
        "headers": json.loads(text.get("headers") or "{}"),
        "kinds": [k for k in text.get("kinds", "").split(",") if k],
        "events": json.loads(text["events"]) if text.get("events") else [],
        "error": text.get("error"), "reason": text.get("reason"), "replays": int(text.get("replays", 0)),
        "actions": actions, "timeline": [json.loads(x) for x in timeline_raw],
        "payload": payload,
    }
    if raw_text is not None:
        out["raw_body"] = raw_text
    out["incidents"] = await event_incidents(redis, {**text, "id": event_id}, out["events"])
    return out


# -- the incidents of one event ----------------------------------------------------------------

def _relation(ev: dict[str, Any] | None, key: str, pin: dict[str, Any]) -> str:
    """How an event's alert met incident `key`: it opened it (a new episode), joined it (correlated
    from its own incident key), or updated it."""
    before = (pin.get("before") or {}).get(key)
    episode = (pin.get("episodes") or {}).get(key)
    if before is None or (episode is not None and episode != before.get("episode")):
        return "opened"
    if ev is not None:
        try:
            own = incident_key(NormalisedEvent.model_validate(ev))
        except ValidationError:
            own = None
        if own is not None and own != key:
            return "joined"
    return "updated"


async def event_incidents(redis: Redis, record: dict[str, Any], events: list[dict[str, Any]]
                          ) -> list[dict[str, Any]]:
    """The incidents an event opened, joined or updated, from the pins its runs left
    (the event's own, or each chunk's): key, relation, and the incident's title and state now.

    `record` is the event's hash as text; `events` its normalised events."""
    from hub.worker.chunks import chunk_key
    from hub.worker.planner import PIN_FIELD as pin_field  # the worker's module, loaded only for a detail

    pins: list[tuple[int, dict[str, Any]]] = []
    if record.get(pin_field):
        pins.append((0, json.loads(record[pin_field])))
    chunks = min(int(record.get("chunks") or 0), EVENT_CHUNKS_MAX)
    if chunks:
        async with redis.pipeline(transaction=False) as p:
            for k in range(chunks):
                p.hmget(chunk_key(str(record["id"]), k), "lo", pin_field)
            for lo, raw in await p.execute():
                if raw:
                    pins.append((int(lo or 0), json.loads(raw)))
    found: dict[str, dict[str, Any]] = {}
    for offset, pin in pins:
        for i, key in enumerate(pin.get("keys") or []):
            if not key or (key not in found and len(found) >= EVENT_INCIDENTS_MAX):
                continue
            entry = found.get(key)
            if entry is None or entry["relation"] == "updated":  # else known: no model to build per alert
                ev = events[offset + i] if offset + i < len(events) else None
                relation = _relation(ev, key, pin)
                if entry is None:
                    entry = found[key] = {"key": key, "relation": relation, "alerts": 0}
                elif relation != "updated":
                    entry["relation"] = relation  # the strongest relation of its alerts
            entry["alerts"] += 1
    if not found:
        return []
    names = list(found)
    async with redis.pipeline(transaction=False) as p:
        for key in names:
            p.hmget(layout.incident(key), "title", "resolved_at", "declared_at")
        rows = await p.execute()
    for key, (title, resolved, declared) in zip(names, rows, strict=True):
        found[key].update(title=_json_or_none(title) or "", exists=declared is not None,
                          state=None if declared is None else "resolved" if _json_or_none(resolved) else "open")
    return list(found.values())


def _json_or_none(raw: Any) -> Any:
    try:
        return json.loads(raw) if raw is not None else None
    except (ValueError, UnicodeDecodeError):
        return None


# -- dead letters ---------------------------------------------------------------------------

def split_dead_id(dead_id: str) -> tuple[str, str]:
    """`{event id}/{action id}` → the two parts (action ids may contain '/', event ids never do)."""
    event_id, sep, action_id = dead_id.partition("/")
    if not sep or not action_id or not valid_event_id(event_id):
        raise QueryError(f"not a dead-letter id: {dead_id!r} (expected EVENT_ID/ACTION_ID)")
    return event_id, action_id


async def list_dead_letters(redis: Redis, limit: int = 50, cursor: str | None = None, source: str | None = None,
                            since: int | None = None, connector: str | None = None) -> Page:
    """Dead-lettered actions, newest first, each with its last error and response."""
    async def rows_of(batch: list[tuple[int, str]]) -> list[dict[str, Any] | None]:
        parsed = [member.partition("/")[::2] for _, member in batch]
        async with redis.pipeline(transaction=False) as p:
            for event_id, action_id in parsed:
                p.hget(actions_key(event_id), action_id)
                p.hmget(ev_key(event_id), "source", "state", "received_at")
            values = await p.execute()
        out: list[dict[str, Any] | None] = []
        for i, (score, member) in enumerate(batch):
            event_id, action_id = parsed[i]
            raw_action, (src, state, received) = values[2 * i], values[2 * i + 1]
            action = json.loads(raw_action) if raw_action else {}
            row = _dead_row(member, event_id, action_id, score, action, src, state, received)
            keep = not ((source and row["source"] != source) or (connector and row["connector"] != connector))
            out.append(row if keep else None)
        return out

    return await page_of_index(redis, DEAD, cursor, limit, rows_of, "dead", filtered=bool(source or connector),
                               lo=since)


def _text(v: Any) -> Any:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else v


def _dead_row(member: str, event_id: str, action_id: str, score: int, action: dict[str, Any], src: Any,
              state: Any, received: Any) -> dict[str, Any]:
    attempts = action.get("attempts") or []
    last = attempts[-1] if attempts else {}
    return {"id": member, "event_id": event_id, "action_id": action_id, "dead_at": score,
            "name": action.get("name"), "connector": action.get("connector"), "error": action.get("error"),
            "attempts": len(attempts), "last_status": last.get("status"),
            "last_response": (action.get("last_response") or last.get("response") or None),
            "source": _text(src), "event_state": _text(state), "received_at": int(_text(received) or 0),
            "missing": not action}
