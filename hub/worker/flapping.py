"""Flapping at run time: scheduling a held resolve's release, and releasing it (`flapping:` in hub.yaml).

A resolve that `hub.storage.flapping.hold` held leaves the incident open (its page too). The
first run of that event, in its commit transaction, remembers it in `FLAP_HELD` (incident key →
the event and its record) due at ``resolve_held_until`` in `FLAP_DUE`; a firing that clears the
hold forgets it in its own commit. Both are written under the incident's lock.

`FlapReleases.release_due` (the worker's sweeper, like `hub.worker.quiet.release_due`) takes
the due ones: still held by that event (no firing since) → the event's record is marked
(`RELEASE_FIELD`) and the event replayed. The replay plans the resolve against the incident as
it is now, with the hold released (`World.released`), so the resolution workflows run exactly
as for any resolve (each action once: identities per episode); its run writes the resolution on the
incident (`release_into`, in its first transaction, under the lock) only if the incident is
still held by this event. A firing that came in between makes the release stale: nothing runs.
All of it lives in Redis, so a restart at any point releases on the next sweep.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

from hub.core import metrics
from hub.storage import keys
from hub.storage.batch import Batch
from hub.storage.event_store import ev_key, now_ms
from hub.storage.flapping import HOLD_FIELDS, held
from hub.storage.incidents import IncidentStore

log = logging.getLogger("hub.worker.flapping")
#: The record field that lists the incident keys whose held resolve (this event) is released.
RELEASE_FIELD = "flap_release"
#: Held resolves released per sweep at most (the rest on the next one).
RELEASE_BATCH = 200
#: A release whose event could not be replayed (in flight) is tried again this much later.
RETRY_MS = 30_000

#: Forget a held resolve only if it is still the one read (a newer hold may have replaced it).
_FORGET = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 1
end
return 0
"""


def commit_into(p: Batch, key: str, before: dict[str, Any] | None, after: dict[str, Any], event_id: str,
                record_key: str) -> None:
    """In the first run's commit: remember a resolve this event held, or forget one a firing cleared."""
    if held(after) and after.get("resolve_held_by") == event_id \
            and (before or {}).get("resolve_held_at") != after.get("resolve_held_at"):
        entry = {"event_id": event_id, "record": record_key, "held_at": after["resolve_held_at"],
                 "until": after["resolve_held_until"]}
        p.hset(keys.FLAP_HELD, key, json.dumps(entry, separators=(",", ":")))
        p.zadd(keys.FLAP_DUE, {key: int(after["resolve_held_until"])})
    elif held(before) and not held(after):
        p.hdel(keys.FLAP_HELD, key)
        p.zrem(keys.FLAP_DUE, key)


def held_reason(saves: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]], event_id: str) -> str | None:
    """Why an event that held a resolve did nothing, in words (None: it held none)."""
    keys_held = [k for k, (after, _) in saves.items() if held(after) and after.get("resolve_held_by") == event_id]
    if not keys_held:
        return None
    return (f"resolution held: {', '.join(sorted(keys_held))} flapping (resolved for real once it stays "
            "resolved for the flapping window)")


def releasable(rec: dict[str, Any], incidents: dict[str, dict[str, Any] | None]) -> set[str]:
    """The keys this event's run releases: marked by the sweeper and still held by this event
    (or already released by an earlier run of it: a rerun plans the same)."""
    raw = rec.get(RELEASE_FIELD)
    if not raw:
        return set()
    out = set()
    for key in json.loads(raw):
        state = incidents.get(key) or {}
        if (held(state) and state.get("resolve_held_by") == rec["id"]) or \
                state.get("resolution_released_by") == rec["id"]:
            out.add(key)
    return out


def release_into(p: Batch, store: IncidentStore, key: str, state: dict[str, Any], event_id: str
                 ) -> dict[str, Any] | None:
    """Resolve the incident for real (queued on the run's first transaction); its new fields,
    or None when an earlier run of the event already did."""
    if not (held(state) and state.get("resolve_held_by") == event_id):
        return None
    at = int(state["resolve_held_at"])
    updates = {"resolved_at": at, "resolution": state.get("resolution") or "resolved", "flapping": None,
               "resolution_released_by": event_id, "updated_at": now_ms(), **dict.fromkeys(HOLD_FIELDS)}
    store.update_noted_into(p, key, updates, {"type": "resolution_released", "held_at": at, "event_id": event_id})
    store.note_into(p, key, {"type": "resolved", "resolution": updates["resolution"], "event_id": event_id})
    p.hdel(keys.FLAP_HELD, key)
    p.zrem(keys.FLAP_DUE, key)
    return updates


class FlapReleases:
    """The sweeper's side: held resolves that are due."""

    def __init__(self, redis: Redis, incidents: IncidentStore) -> None:
        self.redis = redis
        self.incidents = incidents
        self._forget = redis.register_script(_FORGET)

    async def forget(self, key: str, raw: bytes) -> None:
        await self._forget(keys=[keys.FLAP_HELD, keys.FLAP_DUE], args=[key, raw])

    async def release_due(self, replay: Callable[[str], Any], at_ms: int | None = None) -> int:
        """Replay each due held resolve that no firing followed; drop stale ones. How many were replayed.

        `replay(event_id)` hands the event back to the workers (`hub.operators.replay.replay_event`)."""
        at = now_ms() if at_ms is None else at_ms
        due = await self.redis.zrangebyscore(keys.FLAP_DUE, "-inf", at, start=0, num=RELEASE_BATCH)
        released = 0
        for raw_key in due:
            key = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
            raw = await self.redis.hget(keys.FLAP_HELD, key)
            if raw is None:
                await self.redis.zrem(keys.FLAP_DUE, key)
                continue
            entry = json.loads(raw)
            event_id = entry["event_id"]
            state = await self.incidents.get(key) or {}
            if not (held(state) and state.get("resolve_held_by") == event_id):
                await self.forget(key, raw)  # a firing came since (or the incident closed otherwise)
                continue
            record = entry.get("record") or ev_key(event_id)
            marked = json.loads(await self.redis.hget(record, RELEASE_FIELD) or "[]")
            if key not in marked:
                await self.redis.hset(record, RELEASE_FIELD, json.dumps([*marked, key]))
            try:
                await replay(event_id)
            except Exception as e:  # in flight (or Redis): come back later; expired: drop
                if getattr(e, "status", None) == 404:
                    log.warning("held resolve of %s not released: event %s expired", key, event_id)
                    await self.forget(key, raw)
                    continue
                log.warning("held resolve of %s (event %s): releasing later (%s)", key, event_id, e)
                await self.redis.zadd(keys.FLAP_DUE, {key: at + RETRY_MS})
                continue
            await self.forget(key, raw)
            released += 1
            metrics.FLAPPING_RELEASED.inc()
        return released
