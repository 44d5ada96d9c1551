"""Incident report: MTTA, MTTR (mean and median), incident count and frequency, follow-ups.

Reads the per-incident records `hub.storage.incidents` keeps (``hub:incidents`` zset by
``declared_at`` → ``hub:incident:{key}`` hashes of JSON values). Only these fields are
used, so the report stays valid as the record grows:

- ``declared_at``, ``acknowledged_at``, ``resolved_at`` (epoch ms, as the hub saw them):
  MTTA = acknowledged_at - declared_at, MTTR = resolved_at - declared_at; an incident not
  yet acknowledged / resolved counts in the incident totals but not in that mean;
- ``severity`` (SEV1..SEV4, or none), ``services`` (list), ``kind`` (incident | alert),
  the linked-incident field (`Record.links_source`: an incident tool's id), ``source``,
  ``group`` (to fold records of one incident, below).

The unit is the hub incident, not the alert: records that are one incident fold into one
row before anything is counted (`fold`):

- an alert-born incident and the incident tool's incident it opened (the id its connector
  records, or a record keyed ``<source>:<id>``) are one incident;
- alerts of one notification group (``source`` + ``group``) that are
  open at the same time are one incident (the group's later, separate firings are not);
  since issue 12 a group is one record already, and its ``alerts`` count is the alerts kept
  on it plus those that joined it (`grouping:`);

the folded incident was declared when its first record was, acknowledged when the first was,
resolved when the last was (unresolved while any is), at the highest severity, over the union
of services. Service names are folded into catalog names through the catalog's aliases, so
`checkout` and `checkout-api` are one row when one is an alias of the other.

Follow-up completion comes from the ``followup.*`` events the hub received (an incident
tool's follow-ups: the latest status seen per follow-up); it is ``null`` when none were seen.

`summarise` is a pure function of those records, so the figures can be checked by hand.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Iterable
from typing import Any

from redis.asyncio import Redis

from hub.core import registry
from hub.storage import keys as key_names
from hub.storage.event_store import KINDS, ev_key, kind_idx, now_ms
from hub.storage.incidents import INDEX as INCIDENTS

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
    return {"incidents": len(incidents), "alerts": sum(int(i.get("alerts") or 1) for i in incidents),
            "per_day": round(len(incidents) / days, 3),
            "acknowledged": len(tta), "resolved": len(ttr),
            "mtta": _stats([max(0, v) for v in tta]), "mttr": _stats([max(0, v) for v in ttr])}


#: Catalog names for raw service names (aliases resolved), e.g. `Rules.canonical_services`.
Canonical = Callable[[list[str]], list[str]]
_OPEN = 2 ** 62  # an unresolved record is open until the end of time
_RANK = {"SEV1": 1, "SEV2": 2, "SEV3": 3, "SEV4": 4}


def fold(records: Iterable[dict[str, Any]], canonical: Canonical | None = None) -> list[dict[str, Any]]:
    """One entry per hub incident: the records of one incident merged (see the module doc)."""
    recs = [r for r in records if r.get("declared_at")]
    parent = list(range(len(recs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(a: int, b: int) -> None:
        parent[find(a)] = find(b)

    linked = registry.linked_incident_fields()  # source → the field with its incident's id
    by_outside: dict[tuple[str, str], int] = {}
    for i, r in enumerate(recs):
        names: set[tuple[str, str]] = set()
        for source, field in linked.items():
            if r.get(field):
                names.add((source, str(r[field])))
            if str(r.get("key", "")).startswith(source + ":"):
                names.add((source, str(r["key"]).split(":", 1)[1]))
        for name in names:
            if name in by_outside:
                union(i, by_outside[name])
            else:
                by_outside[name] = i
    groups: dict[tuple[str, str], list[int]] = {}
    for i, r in enumerate(recs):
        if r.get("group"):
            groups.setdefault((str(r.get("source") or ""), str(r["group"])), []).append(i)
    for members in groups.values():  # open at the same time: one notification's alerts
        members.sort(key=lambda i: int(recs[i]["declared_at"]))
        open_until, prev = -1, -1
        for i in members:
            end = int(recs[i]["resolved_at"]) if recs[i].get("resolved_at") else _OPEN
            if prev >= 0 and int(recs[i]["declared_at"]) <= open_until:
                union(i, prev)
                open_until = max(open_until, end)
            else:
                open_until = end
            prev = i
    merged: dict[int, list[dict[str, Any]]] = {}
    for i, r in enumerate(recs):
        merged.setdefault(find(i), []).append(r)
    return [_merge(rs, canonical) for rs in merged.values()]


def _merge(rs: list[dict[str, Any]], canonical: Canonical | None) -> dict[str, Any]:
    rs = sorted(rs, key=lambda r: int(r["declared_at"]))
    acks = [int(r["acknowledged_at"]) for r in rs if r.get("acknowledged_at")]
    resolved = [r.get("resolved_at") for r in rs]
    severities = [str(r["severity"]) for r in rs if r.get("severity")]
    services: list[str] = []
    for r in rs:
        names = [str(s) for s in r.get("services") or []]
        for name in (canonical(names) if canonical else names):
            if name not in services:
                services.append(name)
    return {**rs[0], "keys": [r.get("key") for r in rs], "alerts": sum(int(r.get("alerts") or 1) for r in rs),
            "declared_at": int(rs[0]["declared_at"]), "acknowledged_at": min(acks) if acks else None,
            "resolved_at": max(int(x) for x in resolved) if all(resolved) else None,
            "severity": min(severities, key=lambda s: _RANK.get(s, 9)) if severities else None,
            "services": services,
            "kind": "incident" if any(r.get("kind") == "incident" for r in rs) else rs[0].get("kind")}


def summarise(incidents: Iterable[dict[str, Any]], *, days: float, by: str = "severity",
              followups: dict[str, Any] | None = None, until_ms: int | None = None,
              canonical: Canonical | None = None) -> dict[str, Any]:
    """The report for incidents declared in the `days` before `until_ms` (default now).

    `incidents` are the stored records; they are folded into hub incidents first (`fold`).
    """
    if by not in ("severity", "service"):
        raise ValueError("by must be severity or service")
    until = now_ms() if until_ms is None else until_ms
    since = until - int(days * DAY_MS)
    folded = fold(incidents, canonical)
    chosen = [i for i in folded if since <= int(i["declared_at"]) <= until]
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
    fields = ("declared_at", "acknowledged_at", "resolved_at", "severity", "services", "kind", "title",
              *registry.linked_incident_fields().values(), "source", "group", "alert_count")
    out: list[dict[str, Any]] = []
    for i in range(0, len(keys), chunk):
        async with redis.pipeline(transaction=False) as p:
            for key in keys[i:i + chunk]:
                p.hmget(key_names.incident(key), *fields)
                p.hlen(key_names.incident_alerts(key))  # a sender group's alerts (`hub.storage.alert_groups`)
            replies = await p.execute()
        rows, group_alerts = replies[::2], replies[1::2]
        for key, vals, kept in zip(keys[i:i + chunk], rows, group_alerts, strict=True):
            if vals[0] is None:
                continue  # expired record; the index entry goes with the next trim
            rec = {name: json.loads(v) if v is not None else None for name, v in zip(fields, vals, strict=True)}
            joined = max(0, int(rec.pop("alert_count") or 1) - 1)  # alerts that joined it (`grouping:`)
            out.append({"key": key, **rec, "services": rec["services"] or [], "alerts": max(1, int(kept)) + joined})
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


async def build_report(redis: Redis, days: float = 30, by: str = "severity", until_ms: int | None = None,
                       canonical: Canonical | None = None) -> dict[str, Any]:
    """`canonical`: catalog names for raw service names (the rules' `canonical_services`)."""
    until = now_ms() if until_ms is None else until_ms
    since = until - int(days * DAY_MS)
    incidents = await load_incidents(redis, since, until)
    follow = await load_followups(redis, since, until)
    return summarise(incidents, days=days, by=by, until_ms=until, canonical=canonical,
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
