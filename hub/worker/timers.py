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

When a timer fires it re-checks the world (see `Timers.fire`): the incident still open, its
`unless` guard (acknowledged, resolved, …) not holding, the delay for the incident's
*current* severity elapsed. A severity change moves queued timers earlier (`move_earlier`,
`Timers.rearm`); a later deadline is honoured by the timer deferring itself when it fires.

The queue functions below speak arq's job format; `Timers` is the worker's side: arming a
delayed step (`arm`), cancelling (`cancel`), firing (`fire`), and the timeline lines of each.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from arq import Retry
from redis.asyncio import Redis

from hub.core import metrics
from hub.core.events import NormalisedEvent
from hub.rules.conditions import matches
from hub.rules.engine import PlannedStep, World, timer_spec
from hub.rules.grouping import is_deferred
from hub.storage.batch import Batch
from hub.storage.event_store import ACTION_FINAL, ARQ_JOB_PREFIX, ARQ_QUEUE, Store, now_ms
from hub.storage.incidents import IncidentStore
from hub.worker.claims import Claims
from hub.worker.planner import Planner
from hub.worker.recording import Recorder

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


#: Runs a timer's steps (`StepRunner.execute` with `fire=True`): (records, seconds to come back).
RunSteps = Callable[..., Awaitable[tuple[list[dict[str, Any]], float | None]]]


class Timers:
    """Arm, cancel and fire the delayed steps of incidents (the worker's side of the queue above)."""

    def __init__(self, store: Store, incidents: IncidentStore, planner: Planner, recorder: Recorder,
                 claims: Claims, *, lock_lease: float, lock_retry: float) -> None:
        self.store = store
        self.incidents = incidents
        self.planner = planner
        self.recorder = recorder
        self.claims = claims
        self.lock_lease = lock_lease
        self.lock_retry = lock_retry

    @staticmethod
    def spec(rec: dict[str, Any], step: PlannedStep) -> dict[str, Any]:
        assert step.timer is not None
        return {"timer": step.timer_id, "event_id": rec["id"], "workflow": step.workflow, "group": step.timer.group,
                "index": step.event_index, "key": step.incident_key, "occurrence": step.occurrence,
                "anchor_ms": step.timer.anchor_ms}

    # -- arming and cancelling ----------------------------------------------------------------------

    async def arm(self, rec: dict[str, Any], group: list[PlannedStep], existing: dict[str, dict[str, Any]],
                  incident: dict[str, Any] | None) -> list[dict[str, Any]]:
        """Schedule a delayed step's timer (records its actions as pending), unless it already ran."""
        first = group[0]
        if all((existing.get(s.id) or {}).get("state") in ACTION_FINAL for s in group) and existing.get(first.id):
            return []
        assert first.timer is not None and first.timer_id is not None
        severity = (incident or {}).get("severity") or first.context["event"].get("severity")
        delay = first.timer.delay(severity, first.occurrence)
        due = (first.timer.anchor_ms + int(delay * 1000)) if delay is not None else \
            now_ms() + int(DORMANT_RECHECK_S * 1000)
        spec = self.spec(rec, first)
        if first.incident_key:
            await self.incidents.add_timer(first.incident_key, first.timer_id, {**spec, "due_ms": due})
        queued = await schedule(self.store.redis, spec, due, self.store.retention)
        out = []
        for step in group:
            if existing.get(step.id):
                continue
            record = self.recorder.new_record(step)
            record.update(scheduled_for=due, timer=first.timer_id)
            await self.store.save_action(rec["id"], record, {
                "type": "timer", "timer": first.timer_id, "action": step.id, "name": record["name"],
                "state": "scheduled", "due_at": due, "workflow": first.workflow, "step": first.timer.group})
            existing[step.id] = record
        if queued and first.incident_key:
            await self.incidents.note(first.incident_key, {"type": "timer_scheduled", "timer": first.timer_id,
                                                           "due_at": due, "event_id": rec["id"]})
        return out

    async def cancel(self, key: str, reason: str, only: list[str] | None = None) -> int:
        """Cancel the incident's timers (or those of the named steps); each leaves a timeline line."""
        cancelled = 0
        for timer_id, spec in (await self.incidents.timers(key)).items():
            if only and spec.get("group") not in only:
                continue
            await unschedule(self.store.redis, timer_id)
            if not await self.incidents.remove_timer(key, timer_id):
                continue
            cancelled += 1
            await self.close_actions(spec, "skipped", f"cancelled: {reason}")
            await self.incidents.note(key, {"type": "timer_cancelled", "timer": timer_id, "reason": reason})
            await self.store.add_timeline(spec["event_id"], {"type": "timer", "timer": timer_id, "state": "cancelled",
                                                             "reason": reason})
        return cancelled

    async def close_actions(self, spec: dict[str, Any], state: str, why: str) -> None:
        """Mark the still-pending actions of a timer final (cancelled or not needed)."""
        records = await self.store.actions(spec["event_id"])
        for record in records.values():
            if record.get("timer") == spec["timer"] and record["state"] not in ACTION_FINAL:
                record.update(state=state, error=why, next_at=None)
                await self.store.save_action(spec["event_id"], record, {
                    "type": "action", "action": record["id"], "name": record["name"], "state": state, "error": why})

    async def rearm(self, key: str, incident: dict[str, Any]) -> None:
        """The severity changed: bring forward any timer now due earlier."""
        severity = incident.get("severity")
        for timer_id, spec in (await self.incidents.timers(key)).items():
            found = self.planner.rules.step_for(spec["workflow"], spec["group"])
            if found is None or found[1].after is None:
                continue
            delay = timer_spec(found[1], int(spec["anchor_ms"])).delay(severity, int(spec.get("occurrence", 1)))
            if delay is None:
                continue
            due = int(spec["anchor_ms"]) + int(delay * 1000)
            if await move_earlier(self.store.redis, timer_id, due):
                await self.incidents.add_timer(key, timer_id, {**spec, "due_ms": due})
                await self.incidents.note(key, {"type": "timer_moved", "timer": timer_id, "due_at": due,
                                                "severity": severity})

    # -- firing ---------------------------------------------------------------------------------------

    async def fire(self, spec: dict[str, Any], run: RunSteps) -> tuple[str, float | None]:
        """A timer is due: re-check the world, then run its actions with `run`.
        (outcome, seconds to come back)."""
        key = spec.get("key")
        token = await self.incidents.lock([key], self.lock_lease) if key else ""
        if token is None:
            return "busy", self.lock_retry
        try:
            return await self._fire(spec, run)
        finally:
            if token and key:
                await self.incidents.unlock([key], token)

    async def _fire(self, spec: dict[str, Any], run: RunSteps) -> tuple[str, float | None]:
        timer_id, key, event_id = spec["timer"], spec.get("key"), spec["event_id"]
        if key and timer_id not in await self.incidents.timers(key):
            return "not listed (cancelled or already fired)", None
        rec = await self.store.get(event_id)
        if rec is None:
            await self.drop(key, timer_id, "its event expired")
            return "event expired", None
        rules = self.planner.rules
        ev = self.planner.normalise(rec)[int(spec["index"])]
        incident = await self.incidents.get(key) if key else None
        now = now_ms()
        world = World(event_id=event_id, received_ms=int(rec["received_at"]), now_ms=now,
                      keys=[key] * (int(spec["index"]) + 1), incidents={key: incident} if key else {},
                      configured=self.planner.configured())
        steps = rules.timer_steps(spec["workflow"], spec["group"], int(spec["index"]), ev, key, incident, world,
                                  int(spec.get("occurrence", 1)))
        if not steps:
            await self.close_actions(spec, "skipped", "skipped: the step is no longer in the rules")
            await self.drop(key, timer_id, "the step is no longer in the rules")
            return "gone from the rules", None
        for s in steps:  # the timer's own anchor, not the firing time
            assert s.timer is not None
            s.timer.anchor_ms = int(spec["anchor_ms"])
        existing = await self.store.actions(event_id)
        if all((existing.get(s.id) or {}).get("state") in ACTION_FINAL for s in steps):
            await self.drop(key, timer_id, None)
            return "already fired", None
        timer = steps[0].timer
        assert timer is not None
        if incident and incident.get("resolved_at"):
            if any(wf.name == spec.get("workflow") and is_deferred(rules.config.grouping, wf)
                   for wf in rules.config.workflows):  # resolved within `grouping.defer`
                metrics.PAGES_SUPPRESSED.labels("deferral").inc()
            await self.close_actions(spec, "skipped", "not needed: the incident is resolved")
            await self.drop(key, timer_id, "the incident is resolved")
            return "incident resolved", None
        _, facts = rules.context(int(spec["index"]), ev, key, incident, world)
        if timer.unless is not None and matches(timer.unless, facts):
            held = [n for n, sub in zip(steps[0].unless, timer.unless.any or [], strict=False) if matches(sub, facts)]
            why = ", ".join(held) if held and steps[0].unless != ("condition",) else "its unless condition holds"
            await self.close_actions(spec, "skipped", f"not needed: {why}")
            await self.drop(key, timer_id, f"not needed: {why}")
            return f"not needed: {why}", None
        severity = (incident or {}).get("severity") or (ev.severity.value if ev.severity else None)
        delay = timer.delay(severity, int(spec.get("occurrence", 1)))
        if spec.get("early"):  # escalate now (`hub.worker.interactions`): due whatever its delay
            pass
        elif delay is None:
            return f"dormant: no delay for {severity}", DORMANT_RECHECK_S
        elif (due := int(spec["anchor_ms"]) + int(delay * 1000)) > now + 200:
            return "not due yet", (due - now) / 1000
        for s in steps:  # connector deadlines count from the firing, not from the event hours ago
            record = existing.get(s.id)
            if record and record["state"] == "pending" and not record.get("attempts"):
                record["round_started_at"] = now
        pending = Batch()
        try:
            results, wait = await run(rec, steps, existing, pending, fire=True)
        finally:
            await pending.flush(self.store.redis)
        if wait is not None:
            return "retrying", wait
        await self.drop(key, timer_id, None, fired=True, event_id=event_id)
        if any(r["state"] == "dead" for r in results):
            fresh = await self.store.get(event_id)
            if fresh and fresh["state"] == "done":
                await self.store.transition(event_id, fresh["received_at"], "done", "partially_failed",
                                            {"timer": timer_id, "error": "a delayed action failed"})
        if timer.every is not None:
            await self._next_occurrence(rec, ev, key, spec, world)
        return "fired", None

    async def _next_occurrence(self, rec: dict[str, Any], ev: NormalisedEvent, key: str | None,
                               spec: dict[str, Any], world: World) -> None:
        incident = await self.incidents.get(key) if key else None
        if incident and incident.get("resolved_at"):
            return
        occurrence = int(spec.get("occurrence", 1)) + 1
        world.received_ms = now_ms()  # the next one counts from now
        steps = self.planner.rules.timer_steps(spec["workflow"], spec["group"], int(spec["index"]), ev, key,
                                               incident, world, occurrence)
        if not steps:
            return
        steps = await self.claims.claim(rec["id"], steps)
        if steps:
            await self.arm(rec, steps, await self.store.actions(rec["id"]), incident)

    async def drop(self, key: str | None, timer_id: str, why: str | None, *, fired: bool = False,
                   event_id: str | None = None) -> None:
        """Unlist the timer and say so on the timelines, in one atomic write (a worker stopped
        in between would otherwise leave it unlisted with no line saying it fired)."""
        p = Batch()
        if key:
            self.incidents.remove_timer_into(p, key, timer_id)
            entry = {"type": "timer_fired" if fired else "timer_dropped", "timer": timer_id}
            if why:
                entry["reason"] = why
            self.incidents.note_into(p, key, entry)
        if event_id:
            self.store.add_timeline_into(p, event_id, {"type": "timer", "timer": timer_id,
                                                       "state": "fired" if fired else "dropped"})
        await p.execute(self.store.redis)
