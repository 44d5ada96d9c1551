"""Bounded fan-out: a delivery with many alerts is worked in chunks, each its own arq job.

One alert-group delivery may carry thousands of alerts. Worked in one job, every
alert waited on every other one's outbound calls, a job timeout lost the run, and the next
run came only when the sweeper noticed. Past `HUB_MAX_ALERTS_PER_JOB` alerts the worker
instead splits the event's alerts into slices and queues one `process_chunk` job per slice;
each runs like an event of its own (its incidents' locks, its pin, its runs, the same
per-action claims and records) and the event is final when every chunk is.

Keys (under the event's own ``hub:ev:{id}``, so they expire with it; event ids are the
hub's own, never a sender's text):

=================================  ======  ===============================================
``hub:ev:{id}:chunk:{k}``          hash    chunk k: state, runs, lo/hi (its slice of the
                                           normalised events), incident_ctx (its pin),
                                           error
``hub:ev:{id}:chunks``             hash    k → the chunk's final state, written with it
=================================  ======  ===============================================

The event record holds ``chunks`` (how many) and ``chunk_size``. Chunk k's job id is
``{event id}:chunk:{k}``: queueing it again while it waits or runs is a no-op, so the
sweeper and a rerun of the event may both ask for it.

Completion is one script: the first caller to find every chunk final moves the event to
its final state (dead if every chunk is dead, partially_failed if any is dead or partially
failed, else done); later callers find it final and do nothing.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from hub.storage.batch import Batch
from hub.storage.event_store import (
    ARQ_JOB_EXPIRES_MS,
    ARQ_JOB_PREFIX,
    ARQ_QUEUE,
    PENDING,
    STATES,
    arq_job,
    ev_key,
    now_ms,
    state_idx,
    timeline_key,
)

CHUNK_JOB = "process_chunk"
ARQ_RESULT_PREFIX = "arq:result:"


def chunk_key(event_id: str, index: int) -> str:
    return f"{ev_key(event_id)}:chunk:{index}"


def results_key(event_id: str) -> str:
    return f"{ev_key(event_id)}:chunks"


def job_id(event_id: str, index: int) -> str:
    return f"{event_id}:chunk:{index}"


def bounds(total: int, size: int) -> list[tuple[int, int]]:
    """The [lo, hi) slices of `total` alerts, `size` at most each."""
    return [(lo, min(lo + size, total)) for lo in range(0, total, size)]


# arq's enqueue_job, atomically: no new job while one with this id waits, runs or has a result.
# KEYS: job key, result key, queue. ARGV: job bytes, expiry ms, score ms, job id.
_ENQUEUE = """
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('PSETEX', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
return 1
"""

# KEYS: event hash, chunk results, timeline, pending, then the state indexes in STATES order.
# ARGV: now ms, timeline TTL s, event id. Returns the final state when this call made the event final.
_COMPLETE = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state or state == 'done' or state == 'partially_failed' or state == 'dead' then return false end
local n = tonumber(redis.call('HGET', KEYS[1], 'chunks') or '0')
if n == 0 or redis.call('HLEN', KEYS[2]) < n then return false end
local dead, failed = 0, 0
for _, v in ipairs(redis.call('HVALS', KEYS[2])) do
  if v == 'dead' then dead = dead + 1 elseif v == 'partially_failed' then failed = failed + 1 end
end
local final = 'done'
if dead == n then final = 'dead' elseif dead + failed > 0 then final = 'partially_failed' end
redis.call('HSET', KEYS[1], 'state', final, 'updated_at', ARGV[1], 'runs', 0)
local received = redis.call('HGET', KEYS[1], 'received_at')
local states = {'accepted', 'processing', 'done', 'partially_failed', 'dead'}
for i, s in ipairs(states) do
  if s == state then redis.call('ZREM', KEYS[4 + i], ARGV[3]) end
  if s == final then redis.call('ZADD', KEYS[4 + i], received, ARGV[3]) end
end
redis.call('ZREM', KEYS[4], ARGV[3])
redis.call('RPUSH', KEYS[3], cjson.encode({at = tonumber(ARGV[1]), type = 'state', state = final, chunks = n,
                                           chunks_dead = dead, chunks_partially_failed = failed}))
redis.call('EXPIRE', KEYS[3], ARGV[2])
return final
"""


class Chunks:
    """Reads and writes of the chunk keys above. Cheap to construct."""

    def __init__(self, redis: Redis, retention_s: float) -> None:
        self.redis = redis
        self.retention = int(retention_s)
        self._enqueue = redis.register_script(_ENQUEUE)
        self._complete = redis.register_script(_COMPLETE)

    def plan_into(self, p: Batch, event_id: str, count: int, size: int,
                  slices: list[tuple[int, int]] | None = None) -> None:
        """Queue the chunk records, ready to run. With `slices` (the first time) their slices
        are written; without (a replay) they keep theirs, and their pins, so the same actions
        are planned again."""
        p.hset(ev_key(event_id), mapping={"chunks": count, "chunk_size": size})
        for index in range(count):
            fields: dict[str, Any] = {"state": "accepted", "runs": 0}
            if slices is not None:
                fields.update(lo=slices[index][0], hi=slices[index][1])
            p.hset(chunk_key(event_id, index), mapping=fields)
            p.hdel(chunk_key(event_id, index), "error")
            p.expire(chunk_key(event_id, index), self.retention)
        p.hdel(results_key(event_id), *(str(i) for i in range(count)))

    def finish_into(self, p: Batch, event_id: str, index: int, final: str, error: str | None) -> None:
        """Queue chunk `index`'s final state (its record and the event's list of finished chunks)."""
        ms = now_ms()
        fields: dict[str, Any] = {"state": final, "runs": 0, "updated_at": ms}
        if error:
            fields["error"] = error
            p.hset(ev_key(event_id), "error", f"chunk {index}: {error}")
        p.hset(chunk_key(event_id, index), mapping=fields)
        p.hset(results_key(event_id), str(index), final)
        p.expire(results_key(event_id), self.retention)
        p.zadd(PENDING, {event_id: ms}, xx=True)  # progress: not stuck

    async def finished(self, event_id: str, count: int) -> dict[int, str]:
        """The chunks already final, and their states."""
        raw = await self.redis.hgetall(results_key(event_id))
        return {int(k): v.decode() for k, v in raw.items() if int(k) < count}

    async def get(self, event_id: str, index: int) -> dict[bytes, bytes]:
        return await self.redis.hgetall(chunk_key(event_id, index))

    async def enqueue(self, event_id: str, indexes: list[int], force: bool = False) -> int:
        """Queue the chunk jobs that are not waiting or running already; how many were queued."""
        queued = 0
        ms = now_ms()
        for index in indexes:
            jid = job_id(event_id, index)
            args: list[Any] = [event_id, index, True] if force else [event_id, index]
            queued += int(await self._enqueue(
                keys=[ARQ_JOB_PREFIX + jid, ARQ_RESULT_PREFIX + jid, ARQ_QUEUE],
                args=[arq_job(CHUNK_JOB, args, ms), ARQ_JOB_EXPIRES_MS, ms, jid]))
        return queued

    async def complete(self, event_id: str, retention_s: int | None = None) -> str | None:
        """Make the event final if every chunk is; the final state when this call did."""
        keys = [ev_key(event_id), results_key(event_id), timeline_key(event_id), PENDING,
                *(state_idx(s) for s in STATES)]
        out = await self._complete(keys=keys, args=[now_ms(), retention_s or self.retention, event_id])
        if not out:
            return None
        return out.decode() if isinstance(out, bytes) else str(out)

