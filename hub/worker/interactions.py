"""Escalate now (a button: `hub.ingress.interactions`): fire the incident's next escalation timer early.

An escalation is a delayed step that stops on acknowledgement (`unless: acknowledged`); the
next one is the listed timer of such a step due first. Firing it early rewrites its queued
job with `early: true` and moves it to now: `Timers.fire` then runs it without waiting for its
delay (every other check holds: still listed, the incident open and unacknowledged), once, as
any timer. A click when none is pending changes nothing. Each is audited with the person's id.
"""

from __future__ import annotations

from typing import Any

from hub.operators import audit
from hub.rules.engine import guard_names
from hub.storage.event_store import ARQ_JOB_PREFIX, ARQ_QUEUE, now_ms
from hub.worker.timers import job_bytes

#: click → the timer it fires, so a retried job never fires the one after it as well.
_CHOSEN = "hub:interaction:escalated:"

# KEYS: job key, queue. ARGV: job id, job bytes, score ms. 1 when the queued timer was moved.
_EARLY = """
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
"""


async def escalate_now(ctx: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """The arq job: `spec` is {incident, by, via, at, click} (click: the job's id)."""
    processor = ctx["processor"]
    redis = processor.store.redis
    key, by = str(spec["incident"]), str(spec["by"])
    incidents = processor.timers.incidents
    state = await incidents.get(key) or {}
    timer_id, why = None, "no escalation pending"
    if state.get("resolved_at"):
        why = "the incident is resolved"
    elif state.get("acknowledged_at"):
        why = "the incident is acknowledged"
    else:
        chosen = await redis.get(_CHOSEN + str(spec.get("click") or ""))  # a retried job: the same timer
        pending = []
        for tid, t in (await incidents.timers(key)).items():
            found = processor.rules.step_for(t.get("workflow", ""), t.get("group", ""))
            if found is not None and "acknowledged" in guard_names(found[1].unless):
                pending.append((int(t.get("due_ms") or 0), tid, t))
        if chosen is not None:
            pending = [p for p in pending if p[1] == chosen.decode()]
        for _, tid, t in sorted(pending):
            timer = {k: v for k, v in t.items() if k != "due_ms"}
            if chosen is None and spec.get("click"):
                await redis.set(_CHOSEN + str(spec["click"]), tid, ex=3600)
            ms = now_ms()
            if await redis.eval(_EARLY, 2, ARQ_JOB_PREFIX + tid, ARQ_QUEUE, tid,
                                job_bytes({**timer, "early": True}, ms), ms):
                timer_id = tid
                break
    detail: dict[str, Any] = {"via": spec.get("via"), "changed": timer_id is not None}
    if timer_id:
        detail["timer"] = timer_id
        await incidents.note(key, {"type": "escalate_now", "by": by, "timer": timer_id})
    else:
        detail["reason"] = why
    await audit.record(redis, by, "escalate", key, **detail)
    return {"incident": key, "timer": timer_id, "reason": None if timer_id else why}
