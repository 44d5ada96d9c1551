"""Incidents for operators: the listing, one incident in full, and the incidents an event touched.

One implementation for `GET /admin/incidents[/{key}]` and `incident-hub incidents list|show`
(and the `incidents` of an event's detail). Read-only; bounded like the event listings
(`hub.operators.queries`):

- the listing walks the ``hub:incidents`` index (incident key by declaration time) newest
  first with ZREVRANGEBYSCORE … LIMIT from a ``(score, member)`` cursor, reads each page's
  rows in one pipeline (HMGET of the row fields, HLEN of the group's alerts) and filters by
  state page-wise within the same scan budget as events (a short page *with* a cursor: go on);
- one incident's alerts and timeline are capped (`ALERTS_MAX`, `TIMELINE_MAX`); the answer says
  how many there are and whether it was cut.

Alert counts are the report's (`hub.operators.report.load_incidents`): the alerts a sender
group kept on the incident, plus the alerts that joined it through `grouping:` in hub.yaml.
"""

from __future__ import annotations

import json
from typing import Any

from redis.asyncio import Redis

from hub.core import registry
from hub.operators.queries import Page, QueryError, page_of_index
from hub.storage import keys as layout
from hub.storage.incidents import INDEX, IncidentStore

#: `state=` of the listing.
STATES = ("open", "resolved")
#: Alerts of one incident in its detail (the first seen first); the rest are counted, not listed.
ALERTS_MAX = 500
#: Correlated members (`grouping:`) of one incident in its detail.
JOINED_MAX = 500
#: Timeline entries of one incident in its detail: the first `TIMELINE_HEAD` and the latest rest.
TIMELINE_MAX = 1000
TIMELINE_HEAD = 200

_BASE_FIELDS = ("key", "kind", "source", "title", "severity", "status", "status_category", "episode",
                "declared_at", "acknowledged_at", "acknowledged_by", "resolved_at", "resolution", "escalated_at",
                "escalation_level", "updated_at", "services", "sources", "alert_count", "group",
                "page_dedup_key", "paged_by")


def _linked_fields() -> tuple[str, ...]:
    """The record fields holding outside ids (connector results, an incident tool's own id)."""
    return tuple(dict.fromkeys((*registry.incident_result_fields(), *registry.linked_incident_fields().values())))


def parse_state(value: str | None) -> str | None:
    """`open`, `resolved`, or nothing (both)."""
    if not value:
        return None
    v = value.strip().lower()
    if v not in STATES:
        raise QueryError(f"unknown state {value[:40]!r}; use open or resolved")
    return v


def alert_total(kept: int, alert_count: Any) -> int:
    """Alerts on an incident: a group's kept alerts (at least its own one) plus the ones that joined it."""
    joined = max(0, int(alert_count or 1) - 1)
    return max(1, int(kept)) + joined


def _loads(raw: Any) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw


def incident_row(key: str, rec: dict[str, Any], kept: int) -> dict[str, Any]:
    """One incident as a listing row (the detail's `incident` has these fields too)."""
    linked = {f: rec.get(f) for f in _linked_fields()}
    return {
        "key": key, "kind": rec.get("kind"), "source": rec.get("source"), "title": rec.get("title") or "",
        "severity": rec.get("severity"), "status": rec.get("status"), "status_category": rec.get("status_category"),
        "state": "resolved" if rec.get("resolved_at") else "open", "episode": rec.get("episode"),
        "declared_at": rec.get("declared_at"), "acknowledged_at": rec.get("acknowledged_at"),
        "acknowledged_by": rec.get("acknowledged_by"), "resolved_at": rec.get("resolved_at"),
        "resolution": rec.get("resolution"), "updated_at": rec.get("updated_at"),
        "services": rec.get("services") or [], "sources": rec.get("sources") or [rec.get("source")],
        "alert_count": alert_total(kept, rec.get("alert_count")), "group": rec.get("group"),
        "page_dedup_key": rec.get("page_dedup_key"), "paged_by": rec.get("paged_by"),
        "escalation_level": rec.get("escalation_level") or 0, "escalated_at": rec.get("escalated_at"),
        "linked": {f: v for f, v in linked.items() if v not in (None, [], "")},
    }


async def list_incidents(redis: Redis, limit: int = 50, cursor: str | None = None, *, state: str | None = None,
                         since: int | None = None, until: int | None = None) -> Page:
    """One page of incidents declared in [since, until], newest first, optionally only open or resolved."""
    fields = (*_BASE_FIELDS, *_linked_fields())

    async def rows_of(batch: list[tuple[int, str]]) -> list[dict[str, Any] | None]:
        async with redis.pipeline(transaction=False) as p:
            for _, key in batch:
                p.hmget(layout.incident(key), fields)
                p.hlen(layout.incident_alerts(key))
            replies = await p.execute()
        out: list[dict[str, Any] | None] = []
        for i, (_score, key) in enumerate(batch):
            values, kept = replies[2 * i], replies[2 * i + 1]
            if values[fields.index("declared_at")] is None:
                out.append(None)  # expired record; its index entry goes with the next trim
                continue
            row = incident_row(key, {f: _loads(v) for f, v in zip(fields, values, strict=True)}, kept)
            out.append(row if not state or row["state"] == state else None)
        return out

    return await page_of_index(redis, INDEX, cursor, limit, rows_of, "incidents", filtered=bool(state),
                               lo=since, hi=until)


# -- one incident -----------------------------------------------------------------------------

async def _alerts(redis: Redis, key: str, limit: int) -> tuple[list[dict[str, Any]], int]:
    """Up to `limit` alerts of a sender group kept on the incident (first seen first), and how many there are."""
    total = int(await redis.hlen(layout.incident_alerts(key)))
    if not total:
        return [], 0
    if total <= limit:
        async with redis.pipeline(transaction=False) as p:
            p.hgetall(layout.incident_alerts(key))
            p.hgetall(layout.incident_alerts_first(key))
            last, first = await p.execute()
    else:  # a huge group: a bounded sample by HSCAN, not the whole hash
        last = {}
        scan_cursor = 0
        while len(last) < limit:
            scan_cursor, found = await redis.hscan(layout.incident_alerts(key), scan_cursor, count=limit)
            last.update(found)
            if scan_cursor == 0:
                break
        last = dict(list(last.items())[:limit])
        names = list(last)
        firsts = await redis.hmget(layout.incident_alerts_first(key), names)
        first = {n: f for n, f in zip(names, firsts, strict=True) if f is not None}
    out = []
    for fp, raw in last.items():
        entry = _loads(raw)
        entry = entry if isinstance(entry, dict) else {}
        seen = first.get(fp)
        out.append({"fingerprint": fp.decode("utf-8", "replace"), "status": entry.get("status"),
                    "title": entry.get("title") or "", "source": entry.get("source"),
                    "first_seen": int(seen) if seen is not None else None, "last_seen": entry.get("last_seen"),
                    "event_id": entry.get("event_id")})
    out.sort(key=lambda a: (a["first_seen"] or 0, a["fingerprint"]))
    return out, total


async def _timeline(redis: Redis, key: str) -> tuple[list[Any], int]:
    """The incident's timeline, oldest first; past `TIMELINE_MAX` entries its head and its latest entries."""
    name = layout.incident_timeline(key)
    total = int(await redis.llen(name))
    if total <= TIMELINE_MAX:
        raw = await redis.lrange(name, 0, -1)
        return [_loads(x) for x in raw], total
    async with redis.pipeline(transaction=False) as p:
        p.lrange(name, 0, TIMELINE_HEAD - 1)
        p.lrange(name, -(TIMELINE_MAX - TIMELINE_HEAD), -1)
        head, tail = await p.execute()
    omitted = {"type": "omitted", "entries": total - len(head) - len(tail)}
    return [*(_loads(x) for x in head), omitted, *(_loads(x) for x in tail)], total


async def incident_detail(redis: Redis, name: str, *, retention_s: float,
                          alerts_limit: int = ALERTS_MAX) -> dict[str, Any] | None:
    """One incident (by key or alias): its record, timeline, timers and alerts; None when unknown."""
    store = IncidentStore(redis, retention_s)
    key = await store.resolve(name)
    if key is None:
        return None
    rec = await store.get(key)
    if rec is None:  # expired between the two reads
        return None
    alerts, alerts_total = await _alerts(redis, key, alerts_limit)
    timeline, timeline_total = await _timeline(redis, key)
    timers = await store.timers(key)
    members: dict[str, str] = dict(rec.get("members") or {})  # type: ignore[arg-type]
    member_at: dict[str, int] = dict(rec.get("members_at") or {})  # type: ignore[arg-type]
    joined = [{"incident": m, "status": s, "at": member_at.get(m)} for m, s in members.items() if m != key]
    joined.sort(key=lambda j: (j["at"] or 0, j["incident"]))
    record = {k: v for k, v in rec.items() if k not in ("members", "members_at")}
    return {
        "key": key, "alias_of": key if key != name else None,
        "incident": {**incident_row(key, rec, alerts_total), "record": record},
        "alerts": alerts, "alerts_total": alerts_total, "alerts_truncated": alerts_total > len(alerts),
        "joined": joined[:JOINED_MAX], "joined_total": len(joined), "joined_truncated": len(joined) > JOINED_MAX,
        "timers": [{"id": tid, **spec} for tid, spec in sorted(timers.items(), key=lambda t: t[1].get("due_ms") or 0)],
        "timeline": timeline, "timeline_total": timeline_total, "timeline_truncated": timeline_total > TIMELINE_MAX,
    }
