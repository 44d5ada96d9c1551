"""Replay and purge: the operator's two ways to deal with work that failed.

A replay puts a *finished* event back through the workers under the current rules:

- dead actions, and actions skipped without ever calling out (e.g. the connector was not
  configured then), are reset to ``pending`` for a fresh round of attempts (the runner
  counts attempts and the deadline from ``replayed_at``); earlier attempts stay on the
  record and ``history`` says how each earlier round ended;
- succeeded actions are left alone (the runner skips them) unless the replay is forced,
  in which case they are reset too and run once more with their **original idempotency
  key**, so the pagers and incident tools deduplicate and a replay never double-pages;
- the flip back to ``accepted``, the resets, the timeline entry and the arq job are written
  in **one** Redis transaction (WATCH/MULTI): a worker never sees half a replay, and two
  operators replaying at once cannot both win;
- an event still in flight (``accepted``/``processing``) is refused: the worker owns it.

Force is implemented by resetting records rather than by a flag on the job: arq may run a
job more than once (retries are re-deferred jobs), and a forced flag would re-send a
forced action on every re-run; a reset record is performed once and then is ``succeeded``.

A purge removes a dead letter from the list (it will not be replayed by ``--failed``) and
says so on the event's timeline; the action record itself is kept until retention.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import WatchError

from hub.core import metrics
from hub.core.settings import Settings
from hub.operators import audit
from hub.operators.queries import EventFilter, list_events, split_dead_id
from hub.storage import keys
from hub.storage.connection import connection_lost
from hub.storage.event_store import (
    ARQ_JOB_EXPIRES_MS,
    ARQ_JOB_PREFIX,
    ARQ_QUEUE,
    DEAD,
    FINAL_STATES,
    PENDING,
    PREFIX,
    PROCESS_JOB,
    Store,
    actions_key,
    arq_job,
    dumps,
    ev_key,
    now_ms,
    state_idx,
    timeline_key,
)
from hub.storage.records import ActionRecord, EventRecord

IN_FLIGHT = frozenset({"accepted", "processing"})
FAILED_STATES = ("partially_failed", "dead")
ARQ_RESULT_PREFIX = "arq:result:"
REPLAY_JOBS = PREFIX + "replays"
REPLAY_JOB_TTL_S = 7 * 86400
BULK_MAX = 10_000
BULK_CONCURRENCY = 16
#: A running bulk job whose progress has not moved for this long is reported as interrupted.
BULK_STALE_MS = 60_000


class ReplayRefused(Exception):
    """An operator request that cannot be carried out; `status` is the HTTP answer."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


def not_found(event_id: str) -> ReplayRefused:
    return ReplayRefused(404, "not_found", f"no event {event_id!r} (unknown, or expired past HUB_RETENTION)")


def in_flight(event_id: str, state: str) -> ReplayRefused:
    return ReplayRefused(409, "in_flight", f"event {event_id} is still {state}: a worker owns it; replay it once it "
                                           "is done, partially_failed or dead")


# -- deciding what a replay does to each action ---------------------------------------------

def would(record: ActionRecord | None, force: bool) -> tuple[str, str]:
    """("run" | "skip", why) for one action record under a replay."""
    if record is None:
        return "run", "not attempted yet: new under the current rules"
    state, error = record.get("state"), record.get("error")
    if state == "succeeded":
        if force:
            return "run", "forced: succeeded before; runs again with its original idempotency key"
        return "skip", "succeeded"
    if state == "skipped":
        if not record.get("attempts"):
            return "run", f"skipped without calling out ({error or 'no reason'}); re-evaluated"
        if force:
            return "run", f"forced: the connector skipped it ({error or 'no reason'})"
        return "skip", f"skipped by the connector: {error or 'no reason'}"
    if state == "dead":
        return "run", f"dead: {error or 'no error recorded'}"
    return "run", str(state)


def fallback_of(action_id: str) -> str | None:
    """The page a fallback action stands in for (`hub.worker.fallback`), else None."""
    from hub.worker.fallback import SUFFIX_NOTICE, SUFFIX_PAGE

    for suffix in (SUFFIX_NOTICE, SUFFIX_PAGE):
        if action_id.endswith(suffix):
            return action_id[:-len(suffix)]
    return None


def reset_record(record: ActionRecord, by: str, at: int) -> ActionRecord:
    """The record set back to `pending` for a fresh round (the runner counts attempts and the
    deadline from `replayed_at`). Every earlier attempt stays in `attempts` — so a timeout
    that may have reached the outside system still makes creations look before creating —
    and `history` keeps how each earlier round ended."""
    history = [*record.get("history", []), {
        "replayed_at": at, "by": by, "state": record.get("state"), "error": record.get("error"),
        "attempts": len(record.get("attempts") or []), "last_response": record.get("last_response")}]
    out: ActionRecord = {**record, "state": "pending", "error": None, "next_at": None, "history": history,
                         "replayed_at": at}
    out.pop("last_response", None)
    out.pop("waiting", None)
    return out


# -- single event -----------------------------------------------------------------------------

def make_planner(store: Store, settings: Settings | None = None) -> Any:
    """The worker's read-only `Planner`, built as the workers build theirs: the current rules
    file, which connectors the settings configure, the same alert limit. It never writes."""
    from hub.rules import load_rules
    from hub.storage.incidents import IncidentStore
    from hub.worker.planner import Planner, settings_configured

    settings = settings or store.settings
    return Planner(load_rules(settings.rules_path()), incidents=IncidentStore(store.redis, store.retention),
                   configured=settings_configured(settings), max_per_event=settings.hub_max_alerts_per_event)


async def dry_run(store: Store, event_id: str, *, force: bool = False, planner: Any = None,
                  settings: Settings | None = None) -> dict[str, Any]:
    """What a replay would do, touching nothing."""
    rec = await store.get(event_id)
    if rec is None:
        raise not_found(event_id)
    if rec["state"] in IN_FLIGHT:
        raise in_flight(event_id, rec["state"])
    try:
        planner = planner or make_planner(store, settings)
        events, planned = await planner.plan(rec)
    except Exception as e:  # the stored payload no longer parses, or the rules file is invalid
        raise ReplayRefused(422, "plan_failed", f"the current rules cannot plan this event: "
                                                f"{type(e).__name__}: {e}") from None
    existing = await store.actions(event_id)
    actions = []
    for p in planned:
        record = existing.get(p.id)
        verdict, why = would(record, force)
        row = {"id": p.id, "name": p.name, "would": verdict, "reason": why,
               "state": record.get("state") if record else None, "idempotency_key": p.idempotency_key,
               "delay_s": p.delay}
        actions.append(row)
    planned_ids = {p.id for p in planned}
    for aid, record in existing.items():
        if aid in planned_ids:
            continue
        page = fallback_of(aid)
        if page is not None:  # planned by the processor when its page is dead, not by the rules
            verdict, why = would(record, force)
            actions.append({"id": aid, "name": record.get("name"), "would": verdict, "state": record.get("state"),
                            "reason": f"the fallback of {page}: {why}; it runs only if that page is dead after "
                                      "the replay", "idempotency_key": record.get("idempotency_key")})
            continue
        actions.append({"id": aid, "name": record.get("name"), "would": "skip", "state": record.get("state"),
                        "reason": "no longer planned by the current rules",
                        "idempotency_key": record.get("idempotency_key")})
    return {"dry_run": True, "event_id": event_id, "state": rec["state"], "force": force,
            "events": [{"kind": e.kind, "fingerprint": e.fingerprint,
                        "severity": e.severity.value if e.severity else None, "title": e.title} for e in events],
            "actions": actions}


async def replay_event(store: Store, event_id: str, *, force: bool = False, by: str = "admin",
                       job: str | None = None, record_audit: bool = True) -> dict[str, Any]:
    """Reset what should run again and hand the event back to the workers (see module doc)."""
    redis = store.redis
    key, akey, job_key = ev_key(event_id), actions_key(event_id), ARQ_JOB_PREFIX + event_id
    for _ in range(8):
        try:
            result = await _replay_once(store, redis, event_id, key, akey, job_key, force, by, job)
            break
        except WatchError as e:
            if connection_lost(e):  # a connection lost under WATCH: Redis unavailable, not a conflict
                raise RedisConnectionError(str(e)) from e
            await asyncio.sleep(0.005)
    else:
        raise ReplayRefused(409, "busy", f"event {event_id} kept changing while replaying; try again")
    metrics.REPLAYS.labels("bulk" if job else "event", "forced" if force else "normal").inc()
    if record_audit:
        await audit.record(redis, by, "replay", event_id, force=force, reset=result["reset"])
    return result


async def _replay_once(store: Store, redis: Redis, event_id: str, key: str, akey: str, job_key: str,
                       force: bool, by: str, job: str | None) -> dict[str, Any]:
    async with redis.pipeline(transaction=True) as p:
        await p.watch(key, akey, job_key)
        state_b, received_b = await p.hmget(key, "state", "received_at")
        if state_b is None:
            raise not_found(event_id)
        state = state_b.decode()
        if state in IN_FLIGHT:
            raise in_flight(event_id, state)
        if state not in FINAL_STATES:
            raise ReplayRefused(409, "not_final", f"event {event_id} is in state {state!r}; only finished "
                                                  "events can be replayed")
        received = int(received_b)
        records = {k.decode(): json.loads(v) for k, v in (await p.hgetall(akey)).items()}
        queued = bool(await p.exists(job_key, ARQ_RESULT_PREFIX + event_id))
        ms = now_ms()
        resets = {aid: reset_record(r, by, ms) for aid, r in records.items()
                  if would(r, force)[0] == "run" and r.get("state") != "pending"}
        p.multi()
        p.hset(key, mapping={"state": "accepted", "updated_at": ms, "runs": 0})
        p.hdel(key, "error", "reason")
        p.hincrby(key, "replays", 1)
        p.zrem(state_idx(state), event_id)
        p.zadd(state_idx("accepted"), {event_id: received})
        p.zadd(PENDING, {event_id: ms})
        for aid, record in resets.items():
            p.hset(akey, aid, dumps(record))
            p.zrem(DEAD, f"{event_id}/{aid}")
        note = {"at": ms, "type": "replay", "by": by, "force": force, "from_state": state, "reset": sorted(resets)}
        if job:
            note["job"] = job
        p.rpush(timeline_key(event_id), dumps(note), dumps({"at": ms, "type": "state", "state": "accepted",
                                                            "replay": True}))
        p.expire(timeline_key(event_id), store.retention)
        if not queued:
            p.psetex(job_key, ARQ_JOB_EXPIRES_MS, arq_job(PROCESS_JOB, [event_id], ms))
            p.zadd(ARQ_QUEUE, {event_id: ms})
        await p.execute()
    return {"event_id": event_id, "status": "replaying", "from_state": state, "force": force,
            "reset": sorted(resets), "queued": True}


class _Broken:
    """A planner that cannot be built (e.g. the rules file is invalid) fails each plan with why."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def plan(self, rec: EventRecord) -> Any:
        raise self.error


# -- purge ------------------------------------------------------------------------------------

_PURGE_LUA = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[2])
return 1
"""


async def purge_dead_letter(store: Store, dead_id: str, by: str = "admin") -> dict[str, Any]:
    """Drop one dead letter from the list; the event's timeline and the audit log say who."""
    event_id, action_id = split_dead_id(dead_id)
    entry = dumps({"at": now_ms(), "type": "purged", "action": action_id, "by": by})
    removed = await store.redis.eval(_PURGE_LUA, 2, DEAD, timeline_key(event_id), dead_id, entry)
    if not removed:
        raise ReplayRefused(404, "not_found", f"no dead letter {dead_id!r} (already replayed or purged?)")
    await audit.record(store.redis, by, "purge", dead_id)
    metrics.PURGED.inc()
    return {"id": dead_id, "event_id": event_id, "action_id": action_id, "status": "purged"}


# -- bulk -------------------------------------------------------------------------------------

job_key = keys.replay_job
job_items_key = keys.replay_items
job_results_key = keys.replay_results


@dataclass
class BulkRequest:
    """What to replay: explicit ids, or every event matching a filter (default: failed ones)."""

    ids: tuple[str, ...] = ()
    filter: EventFilter = field(default_factory=lambda: EventFilter(states=FAILED_STATES))
    force: bool = False
    dry_run: bool = False
    limit: int = BULK_MAX


async def select(redis: Redis, req: BulkRequest) -> list[str]:
    if req.ids:
        return list(dict.fromkeys(req.ids))[:req.limit]
    out: list[str] = []
    cursor = None
    while len(out) < req.limit:
        page = await list_events(redis, req.filter, limit=min(500, req.limit - len(out)), cursor=cursor)
        out.extend(row["id"] for row in page.items)
        cursor = page.next_cursor
        if not cursor:
            break
    return out


async def create_bulk(store: Store, req: BulkRequest, by: str) -> dict[str, Any]:
    """Snapshot the selection and record the job (state `running`); `run_bulk` does the work."""
    redis = store.redis
    ids = await select(redis, req)
    ms = now_ms()
    job_id = f"rp_{ms:012x}{secrets.token_hex(4)}"
    fields = {"id": job_id, "state": "running", "by": by, "force": int(req.force), "dry_run": int(req.dry_run),
              "filter": dumps({"ids": list(req.ids)} if req.ids else req.filter.as_dict()), "total": len(ids),
              "processed": 0, "replayed": 0, "would_run": 0, "skipped": 0, "failed": 0,
              "created_at": ms, "updated_at": ms}
    async with redis.pipeline(transaction=True) as p:
        p.hset(job_key(job_id), mapping=fields)
        p.expire(job_key(job_id), REPLAY_JOB_TTL_S)
        if ids:
            p.rpush(job_items_key(job_id), *ids)
            p.expire(job_items_key(job_id), REPLAY_JOB_TTL_S)
        p.zadd(REPLAY_JOBS, {job_id: ms})
        p.zremrangebyscore(REPLAY_JOBS, "-inf", ms - REPLAY_JOB_TTL_S * 1000)
        await p.execute()
    await audit.record(redis, by, "replay.bulk", job_id, total=len(ids), force=req.force, dry_run=req.dry_run,
                       filter=json.loads(fields["filter"]))
    return await bulk_status(redis, job_id) or {}


Progress = Callable[[int, int, dict[str, Any]], Awaitable[None] | None]


async def run_bulk(store: Store, job_id: str, on_progress: Progress | None = None,
                   concurrency: int = BULK_CONCURRENCY, settings: Settings | None = None) -> dict[str, Any]:
    """Replay (or dry-run) every event of a bulk job, recording progress as it goes."""
    redis = store.redis
    meta = await redis.hgetall(job_key(job_id))
    if not meta:
        raise ReplayRefused(404, "not_found", f"no replay job {job_id!r}")
    force = meta[b"force"] == b"1"
    dry = meta[b"dry_run"] == b"1"
    by = meta[b"by"].decode()
    ids = [i.decode() for i in await redis.lrange(job_items_key(job_id), 0, -1)]
    planner = None
    if dry:
        try:
            planner = make_planner(store, settings)
        except Exception as e:  # an invalid rules file: every event's dry run says so
            planner = _Broken(e)
    sem = asyncio.Semaphore(concurrency)
    done = 0

    async def one(event_id: str) -> None:
        nonlocal done
        async with sem:
            outcome: dict[str, Any] = {"event_id": event_id}
            counter = "replayed"
            try:
                if dry:
                    plan = await dry_run(store, event_id, force=force, planner=planner)
                    outcome["would_run"] = [a["name"] for a in plan["actions"] if a["would"] == "run"]
                    outcome["actions"] = [{"id": a["id"], "name": a["name"], "reason": a["reason"]}
                                          for a in plan["actions"] if a["would"] == "run"]
                    counter = "would_run" if outcome["would_run"] else "skipped"
                else:
                    res = await replay_event(store, event_id, force=force, by=by, job=job_id, record_audit=False)
                    outcome["reset"] = res["reset"]
                outcome["outcome"] = counter
            except ReplayRefused as e:
                counter = "skipped" if e.status in (404, 409) else "failed"
                outcome.update(outcome=counter, error=e.code, detail=e.detail)
            except Exception as e:  # keep going: one bad event must not stop a bulk replay
                counter = "failed"
                outcome.update(outcome="failed", error="internal", detail=f"{type(e).__name__}: {e}")
            async with redis.pipeline(transaction=False) as p:
                p.hincrby(job_key(job_id), "processed", 1)
                p.hincrby(job_key(job_id), counter, 1)
                p.hset(job_key(job_id), "updated_at", now_ms())
                p.rpush(job_results_key(job_id), dumps(outcome))
                p.expire(job_results_key(job_id), REPLAY_JOB_TTL_S)
                await p.execute()
            done += 1
            if on_progress is not None:
                maybe = on_progress(done, len(ids), outcome)
                if maybe is not None:
                    await maybe

    await asyncio.gather(*(one(i) for i in ids))
    await redis.hset(job_key(job_id), mapping={"state": "done", "updated_at": now_ms(), "finished_at": now_ms()})
    return await bulk_status(redis, job_id) or {}


async def bulk_status(redis: Redis, job_id: str, results: bool = False) -> dict[str, Any] | None:
    raw = await redis.hgetall(job_key(job_id))
    if not raw:
        return None
    f = {k.decode(): v.decode() for k, v in raw.items()}
    out: dict[str, Any] = {"id": f["id"], "state": f["state"], "by": f["by"], "force": f["force"] == "1",
                           "dry_run": f["dry_run"] == "1", "filter": json.loads(f["filter"])}
    for k in ("total", "processed", "replayed", "would_run", "skipped", "failed", "created_at", "updated_at",
              "finished_at"):
        if k in f:
            out[k] = int(f[k])
    out["progress"] = round(out["processed"] / out["total"], 4) if out["total"] else 1.0
    if out["state"] == "running" and now_ms() - out["updated_at"] > BULK_STALE_MS:
        out["state"] = "interrupted"
        out["detail"] = ("no progress for over a minute: the process running it stopped; replaying the same "
                         "selection again is safe (finished events are replayed, in-flight ones skipped)")
    if results:
        out["results"] = [json.loads(x) for x in await redis.lrange(job_results_key(job_id), 0, 999)]
    return out


async def recent_jobs(redis: Redis, limit: int = 20) -> list[dict[str, Any]]:
    ids = [i.decode() for i in await redis.zrevrange(REPLAY_JOBS, 0, limit - 1)]
    out = []
    for job_id in ids:
        status = await bulk_status(redis, job_id)
        if status:
            out.append(status)
    return out
