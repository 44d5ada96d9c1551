"""A sender's notification group as one incident: which events belong to one, what they do to it.

Alert-group sources (see `connectors._alertgroup`) put the group's incident key on each of its
events as `attributes.incident_group` (unless the source option `grouping: per_alert` says
each alert is its own incident). Such an incident:

- is keyed by the group, so its page's dedup key stays the same while alerts join and leave;
- is titled for the group (`attributes.group_title`), and its severity only rises within an
  episode (a warning joining a critical group does not lower the page);
- resolves only when the sender says the whole group is resolved (`group_status`), not when
  one of its alerts does;
- keeps every alert: ``hub:incident:{k}:alerts`` (hash: fingerprint → JSON {status, title,
  source, last_seen, event_id}) and ``hub:incident:{k}:alerts-first`` (hash: fingerprint →
  first seen ms, set once), written in the event's commit transaction with its timeline line.

Nothing here names an outside system; the keys come from `hub.storage.keys`.
"""

from __future__ import annotations

import json
from typing import Any

from hub.core.events import Kind, NormalisedEvent
from hub.core.strict_json import dumps
from hub.storage import keys as layout
from hub.storage.batch import Batch

GROUP_ATTR = "incident_group"
TITLE_ATTR = "group_title"
#: The timeline entry type that carries an alert of a group (`save_member_into` stores it too).
MEMBER_ENTRY = "alert"


def group_of(event: NormalisedEvent) -> str | None:
    """The incident key of the event's notification group, or None (an alert of its own)."""
    if event.kind not in (Kind.ALERT_FIRING, Kind.ALERT_RESOLVED):
        return None
    value = event.attributes.get(GROUP_ATTR)
    return value if isinstance(value, str) and value else None


def resolves(event: NormalisedEvent) -> bool:
    """Whether a grouped alert event resolves its incident: the sender says the whole group is."""
    return event.kind == Kind.ALERT_RESOLVED and str(event.attributes.get("group_status") or "").lower() == "resolved"


def shape(state: dict[str, Any], event: NormalisedEvent, severity_before: str | None) -> None:
    """A grouped incident after one of its alerts: the group's title; severity never lowered."""
    title = event.attributes.get(TITLE_ATTR)
    if isinstance(title, str) and title:
        state["title"] = title
    now = state.get("severity")
    if severity_before and now and now > severity_before:  # "SEV1" < "SEV2": a lower severity
        state["severity"] = severity_before
        history = list(state.get("severity_history") or [])
        if history and history[-1][1] == now:
            history.pop()
        state["severity_history"] = history


def member_entry(event: NormalisedEvent, event_id: str, received_ms: int) -> dict[str, Any]:
    """The timeline line (and member record) for one alert of a group."""
    return {"type": MEMBER_ENTRY, "fingerprint": event.fingerprint, "status": event.status or event.kind.split(".")[-1],
            "title": event.title, "source": event.source, "event_id": event_id, "received_at": received_ms}


def save_member_into(p: Batch, key: str, entry: dict[str, Any], at_ms: int, retention_s: int) -> None:
    """Queue the alert's member record: its last state (unless an event received later already
    set it: a group's notifications can be processed out of order), and when it was first seen
    (kept once)."""
    fingerprint = str(entry.get("fingerprint") or "")
    record = {k: entry.get(k) for k in ("status", "title", "source", "event_id", "received_at")}
    p.hset_newer(layout.incident_alerts(key), fingerprint, int(entry.get("received_at") or 0),
                 dumps({**record, "last_seen": at_ms}))
    p.hsetnx(layout.incident_alerts_first(key), fingerprint, at_ms)
    p.expire(layout.incident_alerts(key), retention_s)
    p.expire(layout.incident_alerts_first(key), retention_s)


async def members(redis: Any, key: str) -> dict[str, dict[str, Any]]:
    """Every alert seen on the incident: fingerprint → {status, title, source, first_seen, last_seen, …}."""
    async with redis.pipeline(transaction=False) as p:
        p.hgetall(layout.incident_alerts(key))
        p.hgetall(layout.incident_alerts_first(key))
        last, first = await p.execute()
    out: dict[str, dict[str, Any]] = {}
    for fp, raw in last.items():
        name = fp.decode()
        seen = first.get(fp)
        out[name] = {**json.loads(raw), "first_seen": int(seen) if seen is not None else None}
    return out


def track(state: dict[str, Any], member: str, key: str, event: NormalisedEvent, member_resolved: bool,
          fresh: bool, at_ms: int) -> bool | None:
    """An alert of another incident key joined `key` (`hub.worker.grouping`): keep its state among
    the incident's `members` (incident key → firing | resolved), its `sources` and `alert_count`.

    A member's state follows the events in the order the hub received them (`members_at`:
    member → received ms of the event that set it): jobs of one storm run concurrently, so a
    firing may be processed after its own recovery, and must not leave the incident open.

    Whether the incident is resolved now: only when every member is (None: nothing has joined
    it, the incident is one alert or one sender group, resolving as it says).
    """
    members: dict[str, str] = dict(state.get("members") or {})
    if member == key and not members:
        return None
    seen: dict[str, int] = dict(state.get("members_at") or {})
    if not members and not fresh:  # the first join: the incident's own alert, as it stands
        # (a resolve held for flapping, `hub.storage.flapping`, is its alert resolved)
        members[key] = "resolved" if state.get("resolved_at") or state.get("resolve_held_at") else "firing"
    if int(seen.get(member, 0)) <= at_ms:  # else a stale event: the member keeps its later state
        members[member] = "resolved" if member_resolved else "firing"
        seen[member] = at_ms
    state["members"] = members
    state["members_at"] = seen
    state["alert_count"] = len(members)
    sources = list(state.get("sources") or [state.get("source")])
    if event.source not in sources:
        sources.append(event.source)
    state["sources"] = sources
    return all(status == "resolved" for status in members.values())
