"""The Redis data model: events, their actions and timelines, indexes, dedup, dead letters.

Keys (all under ``hub:``, every name built by `hub.storage.keys`; Redis Cluster is not supported, as
arq does not support it). ``{id}`` is an event id the hub made (``ev_`` + 20 hex digits):
never operator or sender text, so ``{id}:actions`` cannot be another event's id.

=============================  ======  ==================================================
``hub:ev:{id}``                hash    the event record: source, state, received_at (ms),
                                       delivery_id, body (raw bytes), headers (JSON of the
                                       non-secret headers), verified, events (normalised)
``hub:ev:{id}:actions``        hash    action id → action record (JSON)
``hub:ev:{id}:timeline``       list    timeline entries (JSON), oldest first
``hub:dedup:{source}:{hash}``  string  delivery id → event id, for HUB_DEDUP_WINDOW (hash:
                                       SHA-256 of the delivery id, sender text)
``hub:idx:all``                zset    event id by received ms (listing, newest first)
``hub:idx:source:{s}``         zset    same, per source
``hub:idx:state:{s}``          zset    same, per state (moved on every transition)
``hub:idx:kind:{k}``           zset    same, per normalised kind (written by the worker)
``hub:pending``                zset    non-final events by last touch ms (the sweeper's view)
``hub:schema:keys``            string  the key layout version (`hub.storage.upgrade`)
``hub:dead``                   zset    "{event id}/{action id}" dead letters by time
``hub:workers``                zset    worker id by last heartbeat ms
=============================  ======  ==================================================

Every per-event key expires after HUB_RETENTION; the sweeper trims the indexes by score, so
nothing ever scans all events.

The ingress writes an event with **one** round trip: a Lua script checks the dedup key,
writes the record, the indexes and arq's job, and enqueues it, atomically.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from hub.core.settings import Settings
from hub.core.strict_json import dumps
from hub.storage import keys
from hub.storage.batch import Batch
from hub.storage.lane import CommandLane, pack
from hub.storage.records import ActionRecord, EventRecord

PREFIX = keys.PREFIX
IDX_ALL = PREFIX + "idx:all"
PENDING = PREFIX + "pending"
DEAD = PREFIX + "dead"
WORKERS = PREFIX + "workers"
KINDS = PREFIX + "idx:kinds"

ARQ_QUEUE = "arq:queue"
ARQ_JOB_PREFIX = "arq:job:"
ARQ_JOB_EXPIRES_MS = 86_400_000
PROCESS_JOB = "process_event"

STATES = ("accepted", "processing", "done", "partially_failed", "dead")
FINAL_STATES = frozenset({"done", "partially_failed", "dead"})
ACTION_FINAL = frozenset({"succeeded", "skipped", "dead"})


ev_key = keys.event
actions_key = keys.event_actions
timeline_key = keys.event_timeline
source_idx = keys.source_index
state_idx = keys.state_index
kind_idx = keys.kind_index
dedup_key = keys.dedup


#: Sources of events the hub records itself (`hub.rules.heartbeats`), not webhook senders.
HUB_SOURCES = ("heartbeat",)


def now_ms() -> int:
    return int(time.time() * 1000)


def new_event_id(ms: int | None = None) -> str:
    """Time-ordered id: 12 hex digits of ms since the epoch + 8 random hex digits."""
    return f"ev_{(ms or now_ms()):012x}{secrets.token_hex(4)}"


def fast_dumps(obj: Any) -> bytes:
    """`dumps(obj).encode()` for the ingress's records (text and ints only), without the
    trip through str. What orjson refuses (lone surrogates from header bytes that are not
    UTF-8, ints past 64 bits, types only `default=str` handles) goes to `dumps`.
    """
    try:
        return orjson.dumps(obj)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return dumps(obj).encode()


def arq_job(function: str, args: list[Any], enqueue_ms: int, job_try: int | None = None) -> bytes:
    """A job in arq's own format, serialised as JSON (the worker's deserializer is json.loads)."""
    return dumps({"t": job_try, "f": function, "a": args, "k": {}, "et": enqueue_ms}).encode()


# KEYS: dedup, record, idx:all, idx:source, idx:state:accepted, pending, arq job, arq queue, timeline.
# ARGV: event id, received ms, timeline entry, source, delivery id, content type, headers JSON,
# verified, body. The TTLs are the Store's settings, formatted into the script (`_ingest_script`):
# per-request constants cost an argument encoding each on every webhook. arq's job is built
# here in arq's own JSON format (as `arq_job` builds it): the event id is hex, nothing to escape.
_INGEST_LUA = """
local prev = redis.call('GET', KEYS[1])
if prev then return prev end
-- Only a script's first write can be refused for memory (Redis lets a script that has written
-- finish). That refusal goes back as a plain OOM error reply, not wrapped as a script error as
-- Redis 6 wraps a failed redis.call, so the client raises OutOfMemoryError on every version.
local first = redis.pcall('SET', KEYS[1], ARGV[1], 'EX', '{dedup_window}')
if type(first) == 'table' and first.err then
  if string.find(first.err, 'OOM command not allowed', 1, true) then
    return redis.error_reply("OOM command not allowed when used memory > 'maxmemory'.")
  end
  return redis.error_reply(first.err)
end
local ms = ARGV[2]
redis.call('HSET', KEYS[2], 'source', ARGV[4], 'state', 'accepted', 'received_at', ms,
           'updated_at', ms, 'delivery_id', ARGV[5], 'content_type', ARGV[6], 'headers', ARGV[7],
           'verified', ARGV[8], 'size', tostring(#ARGV[9]), 'body', ARGV[9])
redis.call('EXPIRE', KEYS[2], '{retention}')
redis.call('RPUSH', KEYS[9], ARGV[3])
redis.call('EXPIRE', KEYS[9], '{retention}')
redis.call('ZADD', KEYS[3], ms, ARGV[1])
redis.call('ZADD', KEYS[4], ms, ARGV[1])
redis.call('ZADD', KEYS[5], ms, ARGV[1])
redis.call('ZADD', KEYS[6], ms, ARGV[1])
redis.call('PSETEX', KEYS[7], '{job_expires_ms}',
           '{{"t":null,"f":"{function}","a":["' .. ARGV[1] .. '"],"k":{{}},"et":' .. ms .. '}}')
redis.call('ZADD', KEYS[8], ms, ARGV[1])
return false
"""


def _ingest_script(dedup_window: int, retention: int) -> str:
    return _INGEST_LUA.format(dedup_window=int(dedup_window), retention=int(retention),
                              job_expires_ms=ARQ_JOB_EXPIRES_MS, function=PROCESS_JOB)


#: A job's start, as a Lua function: count the run (of an event not final yet) before anything
#: else can fail, and read the record (HGETALL's flat list). Also run by the script that takes
#: an event's job from the queue (`hub.worker.job_claim`).
START_RUN_LUA = """
local function start_run(key)
  local state = redis.call('HGET', key, 'state')
  if state and state ~= 'done' and state ~= 'partially_failed' and state ~= 'dead' then
    redis.call('HINCRBY', key, 'runs', 1)
  end
  return redis.call('HGETALL', key)
end
"""
# KEYS: the event hash.
_START_LUA = START_RUN_LUA + "return start_run(KEYS[1])\n"


_IDX_ALL_B, _PENDING_B, _ARQ_QUEUE_B = IDX_ALL.encode(), PENDING.encode(), ARQ_QUEUE.encode()
_ACCEPTED_IDX_B = state_idx("accepted").encode()
_SOURCE_KEYS: dict[str, bytes] = {}


@dataclass
class IngestResult:
    event_id: str
    duplicate: bool


def row_summary(events: list[dict[str, Any]]) -> dict[str, str]:
    """What an operator's list row shows of the parsed events: a title, the highest severity,
    the services (kept on the record so a listing never reads the events themselves)."""
    severities = sorted(str(e["severity"]) for e in events if e.get("severity"))
    services = list(dict.fromkeys(str(s) for e in events for s in e.get("services") or []))
    title = next((str(e["title"]) for e in events if e.get("title")), "")
    return {"title": title[:200], "severity": severities[0] if severities else "",
            "services": ",".join(services)[:200]}


class Store:
    """Async access to the data model above. Cheap to construct; holds no state of its own.

    `lane`: connections of the web process's own for `ingest` (`hub.storage.lane`); without
    one, `ingest` goes through the client's pool like every other command.
    """

    def __init__(self, redis: Redis, settings: Settings, lane: CommandLane | None = None) -> None:
        self.redis = redis
        self.lane = lane
        self.settings = settings  # what the store was opened with: the planner of a dry run reads it
        self.retention = int(settings.hub_retention)
        self.dedup_window = int(settings.hub_dedup_window)
        self._ingest = redis.register_script(_ingest_script(self.dedup_window, self.retention))
        self._ingest_sha = self._ingest.sha.encode()
        self._start = redis.register_script(_START_LUA)

    # -- ingress ---------------------------------------------------------------------------

    async def ingest(self, source: str, delivery_id: str, body: bytes, headers: dict[str, str],
                     content_type: str, verified: str) -> IngestResult:
        """Record + dedup + enqueue in one atomic round trip."""
        ms = now_ms()
        event_id = new_event_id(ms)
        entry = fast_dumps({"at": ms, "type": "received", "source": source, "delivery_id": delivery_id,
                            "size": len(body), "verified": verified})
        source_key = _SOURCE_KEYS.get(source) or _SOURCE_KEYS.setdefault(source, source_idx(source).encode())
        # EVALSHA straight away: redis-py's Script wrapper re-checks for a pipeline (with an
        # import) and copies the arguments on every call; constant keys go as bytes.
        command = (b"EVALSHA", self._ingest_sha, b"9", dedup_key(source, delivery_id), ev_key(event_id), _IDX_ALL_B,
                   source_key, _ACCEPTED_IDX_B, _PENDING_B, ARQ_JOB_PREFIX + event_id, _ARQ_QUEUE_B,
                   timeline_key(event_id), event_id, str(ms), entry, source, delivery_id, content_type,
                   fast_dumps(headers), verified, body)
        try:
            if self.lane is not None:
                # a repeat is harmless: the script answers it with the first event's id (dedup)
                prev = await self.lane.call(pack(command), resend=True)
            else:
                prev = await self.redis.execute_command("EVALSHA", *command[1:])
        except NoScriptError:  # a Redis that lost its script cache (restart, SCRIPT FLUSH): load, run
            keys = [dedup_key(source, delivery_id), ev_key(event_id), IDX_ALL, source_idx(source),
                    state_idx("accepted"), PENDING, ARQ_JOB_PREFIX + event_id, ARQ_QUEUE, timeline_key(event_id)]
            argv = [event_id, str(ms), entry, source, delivery_id, content_type, fast_dumps(headers), verified, body]
            prev = await self._ingest(keys=keys, args=argv)
        if prev:
            return IngestResult(prev.decode() if isinstance(prev, bytes) else prev, True)
        return IngestResult(event_id, False)

    # -- reading -----------------------------------------------------------------------------

    async def get(self, event_id: str) -> EventRecord | None:
        return self.decode_record(event_id, await self.redis.hgetall(ev_key(event_id)))

    async def start(self, event_id: str, key: str | None = None) -> EventRecord | None:
        """The record for a run of the worker, the run counted first (`runs`, while not final).

        Every job start counts, whatever happens next (a crash, a timeout, an error, a lock
        that is not one), so `Processor` can bound a poison event by HUB_MAX_EVENT_RUNS; only a
        wait for another worker's incident lock gives its count back (`hub.storage.incidents`).
        """
        flat = await self._start(keys=[key or ev_key(event_id)])  # `key`: a chunk's own record
        return self.started(event_id, flat)

    @classmethod
    def started(cls, event_id: str, flat: list[bytes]) -> EventRecord | None:
        """The record of a started run from `START_RUN_LUA`'s answer."""
        return cls.decode_record(event_id, dict(zip(flat[::2], flat[1::2], strict=True)))

    @staticmethod
    def decode_record(event_id: str, raw: dict[bytes, bytes]) -> EventRecord | None:
        """An event hash as HGETALL answers it, typed (None when the record is gone)."""
        if not raw:
            return None
        rec: dict[str, Any] = {}  # an EventRecord once every field is decoded
        for k, v in raw.items():
            key = k.decode()
            rec[key] = v if key == "body" else v.decode("utf-8", "replace")
        for key in ("received_at", "updated_at", "size", "runs"):
            if key in rec:
                rec[key] = int(rec[key])
        for key in ("headers", "events"):
            if key in rec:
                rec[key] = json.loads(rec[key])
        rec["id"] = event_id
        return rec  # type: ignore[return-value]

    async def actions(self, event_id: str) -> dict[str, ActionRecord]:
        return self.decode_actions(await self.redis.hgetall(actions_key(event_id)))

    @staticmethod
    def decode_actions(raw: dict[bytes, bytes]) -> dict[str, ActionRecord]:
        return {k.decode(): json.loads(v) for k, v in raw.items()}

    async def timeline(self, event_id: str) -> list[dict[str, Any]]:
        return [json.loads(x) for x in await self.redis.lrange(timeline_key(event_id), 0, -1)]

    # -- writing (worker) --------------------------------------------------------------------

    async def transition(self, event_id: str, received_ms: int, old: str, new: str,
                         note: dict[str, Any] | None = None, **fields: Any) -> None:
        """Move an event between states, keeping the state indexes and the pending set exact."""
        p = Batch()
        self.transition_into(p, event_id, received_ms, old, new, note, **fields)
        await p.execute(self.redis)

    def transition_into(self, p: Batch, event_id: str, received_ms: int, old: str, new: str,
                        note: dict[str, Any] | None = None, **fields: Any) -> None:
        """Queue the writes of `transition` on a batch (so other writes can share its one atomic call)."""
        ms = now_ms()
        p.hset(ev_key(event_id), mapping={"state": new, "updated_at": ms, **fields})
        if old != new:
            p.zrem(state_idx(old), event_id)
            p.zadd(state_idx(new), {event_id: received_ms})
        if new in FINAL_STATES:
            p.zrem(PENDING, event_id)
        else:
            p.zadd(PENDING, {event_id: ms})
        p.rpush(timeline_key(event_id), dumps({"at": ms, "type": "state", "state": new, **(note or {})}))
        p.expire(timeline_key(event_id), self.retention)

    @staticmethod
    def record_parsed_into(p: Batch, event_id: str, received_ms: int, events: list[dict[str, Any]]) -> None:
        ms = now_ms()
        kinds = sorted({e["kind"] for e in events})
        p.hset(ev_key(event_id), mapping={"events": dumps(events), "kinds": ",".join(kinds), **row_summary(events)})
        for kind in kinds:
            p.zadd(kind_idx(kind), {event_id: received_ms})
            p.sadd(KINDS, kind)
        p.rpush(timeline_key(event_id), dumps({"at": ms, "type": "parsed", "events": len(events), "kinds": kinds}))

    async def add_timeline(self, event_id: str, entry: dict[str, Any]) -> None:
        p = Batch()
        self.add_timeline_into(p, event_id, entry)
        await p.execute(self.redis)

    def add_timeline_into(self, p: Batch, event_id: str, entry: dict[str, Any]) -> None:
        p.rpush(timeline_key(event_id), dumps({"at": now_ms(), **entry}))
        p.expire(timeline_key(event_id), self.retention)

    async def save_action(self, event_id: str, record: ActionRecord, timeline: dict[str, Any] | None = None,
                          also: Callable[[Any], None] | None = None) -> None:
        """Write an action record (and its dead-letter entry) in one atomic batch (`hub.storage.batch`).

        `also` queues more writes into that batch (what a success records on its incident).
        """
        ms = now_ms()
        p = Batch()
        self.save_action_into(p, event_id, record, timeline, ms)
        if also is not None:
            also(p)
        await p.execute(self.redis)

    def save_action_into(self, p: Batch, event_id: str, record: ActionRecord,
                         timeline: dict[str, Any] | None = None, ms: int | None = None) -> None:
        """Queue `save_action`'s writes on a batch (so other writes can share it)."""
        ms = ms or now_ms()
        dead_member = f"{event_id}/{record['id']}"
        p.hset(actions_key(event_id), record["id"], dumps(record))
        p.expire(actions_key(event_id), self.retention)
        if record["state"] == "dead":
            p.zadd(DEAD, {dead_member: ms})
        else:
            p.zrem(DEAD, dead_member)
        if timeline:
            p.rpush(timeline_key(event_id), dumps({"at": ms, **timeline}))

    async def touch(self, event_id: str) -> None:
        await self.redis.zadd(PENDING, {event_id: now_ms()}, xx=True)

    # -- sweeping ----------------------------------------------------------------------------

    async def stuck(self, older_than_ms: int, limit: int = 500) -> list[str]:
        ids = await self.redis.zrangebyscore(PENDING, "-inf", older_than_ms, start=0, num=limit)
        return [i.decode() for i in ids]

    async def trim_indexes(self) -> int:
        """Drop index entries older than the retention (their records have expired)."""
        cutoff = now_ms() - self.retention * 1000
        kinds = [k.decode() for k in await self.redis.smembers(KINDS)]
        from hub.core.registry import sources

        keys = [IDX_ALL, DEAD, *(state_idx(s) for s in STATES),
                *(source_idx(s) for s in (*sources(), *HUB_SOURCES)),
                *(kind_idx(k) for k in kinds)]
        async with self.redis.pipeline(transaction=False) as p:
            for key in keys:
                p.zremrangebyscore(key, "-inf", cutoff)
            p.zremrangebyscore(WORKERS, "-inf", now_ms() - 3600_000)
            removed = await p.execute()
        return sum(removed)

    # -- workers -----------------------------------------------------------------------------

    async def heartbeat(self, worker_id: str) -> None:
        await self.redis.zadd(WORKERS, {worker_id: now_ms()})

    async def forget_worker(self, worker_id: str) -> None:
        """A worker stopping says so: it is not counted for the rest of its heartbeat window."""
        await self.redis.zrem(WORKERS, worker_id)

    async def live_workers(self, within_s: float = 30) -> int:
        return int(await self.redis.zcount(WORKERS, now_ms() - int(within_s * 1000), "+inf"))
