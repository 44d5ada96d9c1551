"""The operator actions, one implementation each, called by the admin API and by the CLI alike.

The admin handlers (`hub.operators.admin`) and the commands (`hub.cli.commands`) only parse
their input and shape their output; what an action reads, changes and records in the audit
log is decided here, so `incident-hub ack X` and `POST /admin/incidents/X/ack` cannot drift.
Replays are `hub.operators.replay`, listings `hub.operators.queries`; this module adds the
actions that combine them with a store (ack, purge, dead-letter page, events page, incidents,
summary).
"""

from __future__ import annotations

from typing import TypedDict

from hub.operators import audit, incidents
from hub.operators.queries import EventFilter, list_dead_letters, list_events
from hub.operators.replay import ReplayRefused, purge_dead_letter
from hub.storage.event_store import ARQ_QUEUE, DEAD, PENDING, STATES, Store, actions_key, state_idx
from hub.storage.incidents import IncidentStore


class AckResult(TypedDict):
    """What an acknowledgement answers (the admin API's JSON, the CLI's `--json`)."""

    incident: str
    acknowledged: bool
    acknowledged_at: int | None
    acknowledged_by: str | None


async def acknowledge(store: Store, name: str, by: str) -> AckResult | None:
    """An operator acknowledges the incident `name` (key or alias): escalation stops.

    None when no such incident; `acknowledged` is False when it already was (the audit log
    records the attempt either way)."""
    incidents = IncidentStore(store.redis, store.retention)
    key = await incidents.resolve(name)
    if key is None:
        return None
    acked = await incidents.acknowledge(key, by=by)
    await audit.record(store.redis, by, "ack", key, changed=acked)
    state = await incidents.get(key) or {}
    return {"incident": key, "acknowledged": acked, "acknowledged_at": state.get("acknowledged_at"),
            "acknowledged_by": state.get("acknowledged_by")}


async def events_page(store: Store, flt: EventFilter, limit: int, cursor: str | None) -> dict[str, object]:
    """One page of events, newest first: `events`, `next_cursor`, `scanned`."""
    page = await list_events(store.redis, flt, limit, cursor)
    return {"events": page.items, "next_cursor": page.next_cursor, "scanned": page.scanned}


async def incidents_page(store: Store, limit: int, cursor: str | None, *, state: str | None = None,
                         since: int | None = None) -> dict[str, object]:
    """One page of incidents, newest declared first: `incidents`, `next_cursor`, `scanned`."""
    page = await incidents.list_incidents(store.redis, limit, cursor, state=state, since=since)
    return {"incidents": page.items, "next_cursor": page.next_cursor, "scanned": page.scanned}


async def incident(store: Store, name: str) -> dict[str, object] | None:
    """One incident (key or alias) with its timeline, timers and alerts; None when unknown."""
    return await incidents.incident_detail(store.redis, name, retention_s=store.retention)


async def dead_letters_page(store: Store, limit: int, cursor: str | None, *, source: str | None = None,
                            since: int | None = None, connector: str | None = None) -> dict[str, object]:
    """One page of dead letters, newest first, and how many there are in all."""
    page = await list_dead_letters(store.redis, limit, cursor, source=source, since=since, connector=connector)
    return {"dead_letters": page.items, "next_cursor": page.next_cursor,
            "total": int(await store.redis.zcard(DEAD))}


async def summary(store: Store) -> dict[str, object]:
    """Events per state, dead letters, events not final yet, and the queue's depth."""
    async with store.redis.pipeline(transaction=False) as p:
        for s in STATES:
            p.zcard(state_idx(s))
        p.zcard(DEAD)
        p.zcard(PENDING)
        p.zcard(ARQ_QUEUE)
        counts = await p.execute()
    return {"states": dict(zip(STATES, counts[:len(STATES)], strict=True)), "dead_letters": counts[-3],
            "pending": counts[-2], "queue": counts[-1]}


async def purge(store: Store, dead_id: str, by: str) -> dict[str, str]:
    """Drop one dead letter (`EVENT_ID/ACTION_ID`); ReplayRefused (404) when there is none."""
    return await purge_dead_letter(store, dead_id, by=by)


async def purge_many(store: Store, ids: list[str], *, by: str, every: bool = False, source: str | None = None,
                     connector: str | None = None, older_than: int | None = None,
                     dry_run: bool = False) -> dict[str, object]:
    """Drop dead letters by id (`EVENT_ID/ACTION_ID`, or an `EVENT_ID` for all of its own), and
    with `every` each one matching the filters; `not_found` says why an id was not purged."""
    targets: list[str] = []
    for i in ids:
        if "/" in i:
            targets.append(i)
        else:  # every dead letter of one event: look at its own actions, not the whole list
            action_ids = [a.decode() for a in await store.redis.hkeys(actions_key(i))]
            scores = [await store.redis.zscore(DEAD, f"{i}/{a}") for a in action_ids]
            members = [f"{i}/{a}" for a, s in zip(action_ids, scores, strict=True) if s is not None]
            targets.extend(members or [f"{i}/"])
    if every:
        cursor = None
        while True:
            page = await list_dead_letters(store.redis, 500, cursor, source=source, connector=connector)
            targets.extend(d["id"] for d in page.items if older_than is None or d["dead_at"] <= older_than)
            cursor = page.next_cursor
            if not cursor:
                break
    purged: list[str] = []
    missing: dict[str, str] = {}
    for t in dict.fromkeys(targets):
        if t.endswith("/"):
            missing[t[:-1]] = "the event has no dead letters"
            continue
        if dry_run:
            if await store.redis.zscore(DEAD, t) is not None:
                purged.append(t)
            else:
                missing[t] = "no such dead letter"
            continue
        try:
            await purge(store, t, by)
            purged.append(t)
        except ReplayRefused as e:
            missing[t] = e.detail
    return {"purged": purged, "not_found": missing, "dry_run": dry_run}
