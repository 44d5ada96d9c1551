"""Timers: delayed steps, reminders and escalation checks as arq deferred jobs.

A timer is one arq job `run_timer` with a stable job id (`timer:<scope>:<workflow>:<step>`,
plus `#<n>` for a repeating step's n-th occurrence) and a JSON spec as its only argument.
It lives in Redis (AOF), so it survives worker and Redis restarts. It never fires twice:

- the job id is unique while queued, and its result is kept for HUB_RETENTION after it ran,
  so scheduling it again is a no-op (`schedule` checks both, atomically);
- each incident lists its live timers (`hub:incident:{key}:timers`); a timer that is no
  longer listed (cancelled, or already fired) does nothing;
- the actions it runs are recorded on the event that armed it, and a final action record
  is never performed again.

When a timer fires it re-checks the world (see `Processor.fire_timer`): the incident still
open, its `unless` guard (acknowledged, resolved, …) not holding, the delay for the
incident's *current* severity elapsed. A severity change moves queued timers earlier
(`move_earlier`); a later deadline is honoured by the timer deferring itself when it fires.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from arq import Retry
from redis.asyncio import Redis

from hub.storage.event_store import ARQ_JOB_PREFIX, ARQ_QUEUE, now_ms

log = logging.getLogger("hub.worker.timers")

TIMER_JOB = "run_timer"
ARQ_RESULT_PREFIX = "arq:result:"
#: How long a timer whose severity has no delay waits before looking again (severity may rise).
DORMANT_RECHECK_S = 300.0

# KEYS: job key, result key, queue. ARGV: job id, job bytes, score ms, expiry ms.
_SCHEDULE = """
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('PSETEX', KEYS[1], ARGV[4], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
return 1
"""

# Move a queued job earlier (never later, never re-queue one that is running or gone).
_EARLIER = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then return 0 end
if tonumber(ARGV[2]) < tonumber(score) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
  return 1
end
return 0
"""


def job_bytes(spec: dict[str, Any], enqueue_ms: int) -> bytes:
    """The job in arq's format, JSON-serialised (the worker's deserializer is JSON)."""
    return json.dumps({"t": None, "f": TIMER_JOB, "a": [spec], "k": {}, "et": enqueue_ms},
                      separators=(",", ":"), default=str).encode()


async def schedule(redis: Redis, spec: dict[str, Any], due_ms: int, retention_s: float) -> bool:
    """Queue the timer for `due_ms` unless it is queued or has already run. True when queued now."""
    timer_id = spec["timer"]
    ms = now_ms()
    expiry = max(0, due_ms - ms) + int(retention_s * 1000)
    done = await redis.eval(_SCHEDULE, 3, ARQ_JOB_PREFIX + timer_id, ARQ_RESULT_PREFIX + timer_id, ARQ_QUEUE,
                            timer_id, job_bytes(spec, ms), max(due_ms, ms), expiry)
    return bool(done)


async def unschedule(redis: Redis, timer_id: str) -> bool:
    """Take a queued timer out of the queue (a running one finishes, then finds itself unlisted)."""
    async with redis.pipeline(transaction=True) as p:
        p.zrem(ARQ_QUEUE, timer_id)
        p.delete(ARQ_JOB_PREFIX + timer_id)
        removed, _ = await p.execute()
    return bool(removed)


async def due_at(redis: Redis, timer_id: str) -> int | None:
    score = await redis.zscore(ARQ_QUEUE, timer_id)
    return int(score) if score is not None else None


async def move_earlier(redis: Redis, timer_id: str, due_ms: int) -> bool:
    return bool(await redis.eval(_EARLIER, 1, ARQ_QUEUE, timer_id, max(due_ms, now_ms())))


#: Seconds before arq's job timeout at which a firing gives up and asks to run again.
TIMEOUT_MARGIN_S = 2.0


async def run_timer(ctx: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any] | None:
    """The arq job: fire the timer now, or come back when the processor says.

    arq counts a job that runs past its timeout as finished, and a finished timer is never
    queued again; so a firing that runs long (several slow actions in a row) stops itself
    just before the timeout and asks to run again. Its finished actions are recorded and
    are not repeated; the next run continues with the rest.
    """
    settings = ctx.get("settings")
    budget = max(1.0, float(getattr(settings, "hub_job_timeout", 60.0)) - TIMEOUT_MARGIN_S)
    try:
        outcome, defer = await asyncio.wait_for(ctx["processor"].fire_timer(spec), budget)
    except TimeoutError:
        log.warning("timer %s ran for %.0fs; running it again to finish", spec.get("timer"), budget)
        raise Retry(defer=1) from None
    if defer is not None:
        raise Retry(defer=defer)
    return {"timer": spec.get("timer"), "outcome": outcome}


def timer_step(timer_id: str) -> tuple[str, str]:
    """(workflow, step) of a timer id `timer:<scope>:<workflow>:<step>[#n]`, for operators.

    Workflow names and step ids cannot contain `:`, so the last two parts are theirs."""
    parts = timer_id.rsplit(":", 2)
    if len(parts) < 3 or not parts[0].startswith("timer"):
        return "", timer_id
    return parts[1], parts[2]
