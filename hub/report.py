"""Incident report: MTTA, MTTR (mean and median), incident count and frequency, follow-ups.

Reads the per-incident records `hub.incidents` keeps (``hub:incidents`` zset by
``declared_at`` → ``hub:incident:{key}`` hashes of JSON values). Only these fields are
used, so the report stays valid as the record grows:

- ``declared_at``, ``acknowledged_at``, ``resolved_at`` (epoch ms, as the hub saw them):
  MTTA = acknowledged_at - declared_at, MTTR = resolved_at - declared_at; an incident not
  yet acknowledged / resolved counts in the incident totals but not in that mean;
- ``severity`` (SEV1..SEV4, or none), ``services`` (list), ``kind`` (incident | alert).

Follow-up completion comes from the ``followup.*`` events the hub received (incident.io
follow-ups: the latest status seen per follow-up); it is ``null`` when none were seen.

`summarise` is a pure function of those records, so the figures can be checked by hand.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from typing import Any

from redis.asyncio import Redis

from hub import keys as key_names
from hub.incidents import INDEX as INCIDENTS
from hub.store import KINDS, ev_key, kind_idx, now_ms

DAY_MS = 86_400_000
FOLLOWUP_DONE = frozenset({"completed", "complete", "done", "closed", "resolved"})
FOLLOWUP_IGNORED = frozenset({"deleted", "not_doing", "cancelled", "canceled"})
NO_SEVERITY = "none"


def _stats(values_ms: list[int]) -> dict[str, Any]:
    """Mean and median in seconds, with how many incidents they are over."""
    if not values_ms:
        return {"n": 0, "mean_s": None, "median_s": None}
    return {"n": len(values_ms), "mean_s": round(statistics.fmean(values_ms) / 1000, 1),
            "median_s": round(statistics.median(values_ms) / 1000, 1)}


def _group_keys(incident: dict[str, Any], by: str) -> list[str]:
    if by == "service":
        return [str(s) for s in incident.get("services") or []] or ["(no service)"]
    return [str(incident.get("severity") or NO_SEVERITY)]


def _block(incidents: list[dict[str, Any]], days: float) -> dict[str, Any]:
    tta = [int(i["acknowledged_at"]) - int(i["declared_at"]) for i in incidents if i.get("acknowledged_at")]
    ttr = [int(i["resolved_at"]) - int(i["declared_at"]) for i in incidents if i.get("resolved_at")]
    return {"incidents": len(incidents), "per_day": round(len(incidents) / days, 3),
            "acknowledged": len(tta), "resolved": len(ttr),
            "mtta": _stats([max(0, v) for v in tta]), "mttr": _stats([max(0, v) for v in ttr])}


def summarise(incidents: Iterable[dict[str, Any]], *, days: float, by: str = "severity",
              followups: dict[str, Any] | None = None, until_ms: int | None = None) -> dict[str, Any]:
    """The report for incidents declared in the `days` before `until_ms` (default now)."""
    if by not in ("severity", "service"):
        raise ValueError("by must be severity or service")
    until = now_ms() if until_ms is None else until_ms
    since = until - int(days * DAY_MS)
    chosen = [i for i in incidents if i.get("declared_at") and since <= int(i["declared_at"]) <= until]
    groups: dict[str, list[dict[str, Any]]] = {}
    for inc in chosen:
        for key in _group_keys(inc, by):
            groups.setdefault(key, []).append(inc)
    order = sorted(groups, key=lambda k: (k == NO_SEVERITY, k))
    return {"days": days, "since": since, "until": until, "by": by, **_block(chosen, days),
            "groups": [{"key": k, **_block(groups[k], days)} for k in order],
            "followups": followups if followups is not None else {"total": 0, "completed": 0, "rate": None}}


def followup_summary(latest: dict[str, str]) -> dict[str, Any]:
    """Completion over follow-ups (id → latest status), ignoring deleted / not-doing ones."""
    counted = {k: v for k, v in latest.items() if v.lower() not in FOLLOWUP_IGNORED}
    done = sum(1 for v in counted.values() if v.lower() in FOLLOWUP_DONE)
    return {"total": len(counted), "completed": done, "rate": round(done / len(counted), 4) if counted else None}


# -- reading Redis ----------------------------------------------------------------------------

async def load_incidents(redis: Redis, since_ms: int, until_ms: int, chunk: int = 500) -> list[dict[str, Any]]:
    """Incident records declared in [since, until], via the `hub:incidents` index."""
    keys = [k.decode() for k in await redis.zrangebyscore(INCIDENTS, since_ms, until_ms)]
    out: list[dict[str, Any]] = []
    for i in range(0, len(keys), chunk):
        async with redis.pipeline(transaction=False) as p:
            for key in keys[i:i + chunk]:
                p.hmget(key_names.incident(key), "declared_at", "acknowledged_at", "resolved_at", "severity",
                        "services", "kind", "title")
            rows = await p.execute()
        for key, vals in zip(keys[i:i + chunk], rows, strict=True):
            if vals[0] is None:
                continue  # expired record; the index entry goes with the next trim
            dec = [json.loads(v) if v is not None else None for v in vals]
            out.append({"key": key, "declared_at": dec[0], "acknowledged_at": dec[1], "resolved_at": dec[2],
                        "severity": dec[3], "services": dec[4] or [], "kind": dec[5], "title": dec[6]})
    return out


async def load_followups(redis: Redis, since_ms: int, until_ms: int) -> dict[str, str]:
    """Follow-up id → the latest status the hub received for it, from followup.* events."""
    kinds = [k.decode() for k in await redis.smembers(KINDS) if k.decode().startswith("followup.")]
    latest: dict[str, tuple[int, str]] = {}
    for kind in kinds:
        ids = [i.decode() for i in await redis.zrangebyscore(kind_idx(kind), since_ms, until_ms)]
        for i in range(0, len(ids), 500):
            async with redis.pipeline(transaction=False) as p:
                for event_id in ids[i:i + 500]:
                    p.hmget(ev_key(event_id), "events", "received_at")
                rows = await p.execute()
            for raw, received in rows:
                if raw is None:
                    continue
                for ev in json.loads(raw):
                    if not str(ev.get("kind", "")).startswith("followup."):
                        continue
                    status = str(ev.get("status") or (ev.get("attributes") or {}).get("status") or "")
                    at = int(received or 0)
                    fid = ev.get("fingerprint") or ""
                    if status and (fid not in latest or latest[fid][0] <= at):
                        latest[fid] = (at, status)
    return {k: v for k, (_, v) in latest.items()}


async def build_report(redis: Redis, days: float = 30, by: str = "severity", until_ms: int | None = None
                       ) -> dict[str, Any]:
    until = now_ms() if until_ms is None else until_ms
    since = until - int(days * DAY_MS)
    incidents = await load_incidents(redis, since, until)
    follow = await load_followups(redis, since, until)
    return summarise(incidents, days=days, by=by, until_ms=until,
                     followups=followup_summary(follow) if follow else None)


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = round(seconds)
    if s < 90:
        return f"{s}s"
    if s < 5400:
        return f"{s / 60:.1f}m"
    if s < 172_800:
        return f"{s / 3600:.1f}h"
    return f"{s / 86400:.1f}d"
