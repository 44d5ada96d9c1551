"""Executing one event's run: enter (lock), commit, run the steps, finish.

`process()` is idempotent: it may run twice (arq is at-least-once, the sweeper re-enqueues,
a worker may be killed mid-way) and each run only advances what is not final yet:

- events of one incident are processed one at a time (a Redis lock per incident key);
- on its first run an event *pins* what it saw (the incident before it, the episode) to its
  record and advances the incident in the same transaction, so later runs plan exactly the
  same actions and never apply the event to the incident twice;
- each action identity is *claimed* by the first event that plans it (`hub.worker.claims`);
- delayed steps become timers (`hub.worker.timers`), run when they are due;
- a delivery of more alerts than fit one job is worked in chunk jobs (`hub.worker.chunks`),
  each run like an event of its own over its slice of the alerts; past a limit alerts are
  dropped, counted and noted on the timeline;
- a run that has used its time budget stops between actions and comes back in a fresh job
  (`hub.worker.steps`), so a slow upstream never runs a job into its timeout.

What to do is decided by the `Planner` (read-only); what it writes about the incident by the
`Recorder`; the steps are run by the `StepRunner`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from hub.core import metrics
from hub.core.events import NormalisedEvent
from hub.storage.batch import Batch
from hub.storage.event_store import FINAL_STATES, PENDING, Store, actions_key, ev_key, now_ms
from hub.storage.incidents import PAGE_KINDS, Entered, IncidentStore, incident_key
from hub.worker import flapping as flap_run
from hub.worker.chunks import Chunks, bounds, chunk_key
from hub.worker.claims import Claims
from hub.worker.grouping import Correlator
from hub.worker.heartbeats import Heartbeats
from hub.worker.job_claim import current_job
from hub.worker.planner import PIN_FIELD, Planner
from hub.worker.quiet import QUIET_FIELD, Quiet
from hub.worker.recording import Recorder, Saves
from hub.worker.steps import StepRunner
from hub.worker.timers import Timers
from hub.worker.turns import Turns

log = logging.getLogger("hub.worker.processor")  # the name log filters already know

#: Seconds an incident lock is held at most by default (a killed worker's lock lapses after this);
#: the worker uses its job timeout plus a margin, after which arq has cancelled the job anyway.
LOCK_LEASE_S = 90.0
#: Seconds to wait before trying again when another worker holds the incident.
LOCK_RETRY_S = 0.2
#: What a chunk run reads of its event's record: not the stored events (megabytes for a large
#: group), and the body only when the worker has not normalised it yet.
CHUNK_RUN_FIELDS = ("source", "state", "received_at", "updated_at", "headers", "content_type", "chunks")


@dataclass(frozen=True)
class Chunk:
    """The slice of a delivery's events one chunk job works (`hub.worker.chunks`)."""

    index: int
    lo: int
    key: str  # the chunk's record (state, runs, pin), in place of the event's


class Executor:
    """The run of an event (or of one of its chunks), from its job's start to its final state."""

    def __init__(self, store: Store, incidents: IncidentStore, planner: Planner, recorder: Recorder,
                 claims: Claims, steps: StepRunner, timers: Timers, chunks: Chunks, *, max_runs: int = 8,
                 lock_lease: float = LOCK_LEASE_S, max_per_job: int | None = None,
                 quiet: Quiet | None = None) -> None:
        self.store = store
        self.incidents = incidents
        self.planner = planner
        self.recorder = recorder
        self.claims = claims
        self.steps = steps
        self.timers = timers
        self.chunks = chunks
        self.max_runs = max_runs
        #: Longest an incident stays locked by a worker that died holding it (job timeout + margin).
        self.lock_lease = lock_lease
        #: HUB_MAX_ALERTS_PER_JOB: a delivery of more events is worked in chunk jobs (None: never).
        self.max_per_job = max_per_job
        #: Maintenance windows (`hub.worker.quiet`): the steps of the alerts one holds back are dropped.
        self.quiet = quiet or Quiet(store.redis, lambda: planner.rules,
                                    Heartbeats(store, lambda: planner.rules))
        #: `grouping:` in hub.yaml: a firing alert may join an open incident (an alias) before entering.
        self.correlator = Correlator(store.redis, store.retention)
        #: Jobs of this process that want a busy incident wait in line for it (`hub.worker.turns`).
        self.turns = Turns()

    async def process(self, event_id: str, *, force: bool = False, chunk: int | None = None) -> float | None:
        """Advance the event (or its chunk `chunk`); seconds until it should run again, or None.

        Round trips on the common path: count the run and read the record (`Store.start`:
        every job start counts, so a poison event ends as a dead letter after
        HUB_MAX_EVENT_RUNS whatever fails; done by the script that took the event's job when
        it did, `hub.worker.job_claim`); one script that resolves the incidents, locks them
        and re-reads the record, its actions and the incidents; one transaction for
        processing + pin + incident + parsed + claims; the actions; one transaction that
        finishes the event, releases the locks and ends the job.
        """
        if chunk is not None:
            return await self._run_chunk(event_id, chunk, force)
        job = current_job.get()
        started = job.started_run(event_id) if job is not None else None  # by the script that took the job
        # counts this run before anything can fail
        rec = self.store.started(event_id, started) if started is not None else await self.store.start(event_id)
        if rec is None:
            return None  # expired past retention: nothing left to do
        if rec["state"] in FINAL_STATES:
            return None
        runs = int(rec.get("runs") or 0)
        if runs > self.max_runs:
            error = f"worker crashed or timed out {runs - 1} times on this event (runs that never finished)"
            if rec.get("last_error"):
                error += f"; last error: {rec['last_error']}"
            await self._finish(rec, "dead", {"error": error})
            return None
        try:
            return await self._run(rec, force)
        except Exception as e:  # the run stays counted; say why for the dead letter it may become
            with contextlib.suppress(Exception):
                await self.store.redis.hset(ev_key(event_id), "last_error", f"{type(e).__name__}: {e}"[:500])
            raise

    async def _run(self, rec: dict[str, Any], force: bool) -> float | None:
        event_id = rec["id"]
        try:
            events, total = self.planner.normalised(rec)
            pinned = json.loads(rec[PIN_FIELD])["keys"] if rec.get(PIN_FIELD) else None
        except Exception as e:  # the ingress validated it, so this is a parser bug: keep it visible
            return await self._parse_failed(rec, e)
        if rec.get("chunks") or (pinned is None and self.max_per_job is not None and len(events) > self.max_per_job):
            return await self._fan_out(rec, events, total, force)
        if pinned is not None:
            names: list[str | None] = list(pinned)
            pages = [False] * len(names)
        else:
            names = await self.correlator.names(self.planner.rules, events, [incident_key(ev) for ev in events])
            pages = [ev.kind in PAGE_KINDS for ev in events]
        entered = await self._enter(ev_key(event_id), actions_key(event_id), names, pages, resolve=pinned is None,
                                    windows=QUIET_FIELD not in rec)  # read for a first maintenance decision
        if not entered.locked:
            if entered.blocked != "busy":  # never clears by itself: the run stays counted
                await self.store.redis.hset(ev_key(event_id), "last_error",
                                            f"the lock of incident {entered.lock_keys!r} is a Redis "
                                            f"{entered.blocked}, not a lock")
            return LOCK_RETRY_S
        try:
            fresh = self.store.decode_record(event_id, entered.record)
            if fresh is None:
                return None
            return await self._process(fresh, events, force, entered, total=total)
        finally:
            await self._leave(entered)

    async def _enter(self, event_key: str, actions_key: str, names: list[str | None], pages: list[bool], *,
                     resolve: bool, windows: bool = False) -> Entered:
        """Lock the event's incidents (`IncidentStore.enter`); when one is busy, wait in this
        process's line for it (`hub.worker.turns`) for a while before giving up."""
        entered = await self.incidents.enter(event_key, actions_key, names, pages, self.lock_lease, resolve=resolve,
                                             windows=windows)
        deadline = time.monotonic() + self.turns.max_wait
        while not entered.locked and entered.blocked == "busy":
            key, left = Turns.key(entered.lock_keys), deadline - time.monotonic()
            if key is None or left <= 0 or not await self.turns.wait(key, left):
                break
            entered = await self.incidents.enter(event_key, actions_key, names, pages, self.lock_lease,
                                                 resolve=resolve, recount=True, windows=windows)
        return entered

    async def _leave(self, entered: Entered) -> None:
        """Let the incidents go (unless the final write did) and wake whoever waits for them here."""
        try:
            if entered.lock_keys and not entered.released:
                await self.incidents.unlock(entered.lock_keys, entered.token)
        finally:  # a failed unlock lapses with its lease; the line here is woken either way
            self.turns.release(entered.lock_keys)

    # -- chunks ------------------------------------------------------------------------------

    async def _chunk_run_record(self, event_id: str) -> dict[str, Any] | None:
        """The event's record as a chunk run needs it (`CHUNK_RUN_FIELDS`, the body if not cached)."""
        raw = await self.store.redis.hmget(ev_key(event_id), CHUNK_RUN_FIELDS)
        rec = self.store.decode_record(event_id, {f.encode(): v for f, v in zip(CHUNK_RUN_FIELDS, raw, strict=True)
                                                  if v is not None})
        if rec is None or "state" not in rec:
            return None
        if self.planner.cached(rec) is None:
            rec["body"] = await self.store.redis.hget(ev_key(event_id), "body") or b""
        return rec

    async def _run_chunk(self, event_id: str, index: int, force: bool) -> float | None:
        """A chunk job: the event's record is read, not counted (each chunk counts its own runs
        on its own record, in `_process_chunk`)."""
        rec = await self._chunk_run_record(event_id)
        if rec is None:
            return None
        try:
            events, _ = self.planner.normalised(rec)
        except Exception as e:  # the ingress validated it, so this is a parser bug: keep it visible
            return await self._parse_failed(rec, e)
        try:
            return await self._process_chunk(rec, events, index, force)
        except Exception as e:  # the chunk's run stays counted; say why for the dead letter it may become
            with contextlib.suppress(Exception):
                await self.store.redis.hset(chunk_key(event_id, index), "last_error", f"{type(e).__name__}: {e}"[:500])
            raise

    async def _fan_out(self, rec: dict[str, Any], events: list[NormalisedEvent], total: int,
                       force: bool) -> None:
        """Split the delivery into chunk jobs (once; a replay sets the same chunks going again),
        then queue every chunk not final yet. A rerun (the sweeper's) only queues again what
        is neither final nor queued, so it is how a lost or timed-out chunk job comes back."""
        event_id, state = rec["id"], rec["state"]
        count = int(rec.get("chunks") or 0)
        if not count or state == "accepted":
            p = Batch()
            if not count:
                size = int(self.max_per_job or len(events) or 1)
                slices = bounds(len(events), size)
                count = len(slices)
                note = {"chunks": count, "per_job": size}
            else:  # a replay
                size, slices, note = int(rec.get("chunk_size") or 0), None, {"chunks": count, "replay": True}
            if state != "processing":
                self.store.transition_into(p, event_id, rec["received_at"], state, "processing")
            dropped = 0
            if "events" not in rec:
                dropped = self.recorder.parsed_into(p, rec, events, total)
            self.chunks.plan_into(p, event_id, count, size, slices)
            self.store.add_timeline_into(p, event_id, {"type": "fanned_out", "events": len(events), **note})
            await p.execute(self.store.redis)
            if dropped:
                metrics.ALERTS_TRUNCATED.labels(rec["source"]).inc(dropped)
            finished: dict[int, str] = {}
        else:
            finished = await self.chunks.finished(event_id, count)
        todo = [i for i in range(count) if i not in finished]
        if todo:
            await self.chunks.enqueue(event_id, todo, force)
            # this run ended normally: a sweeper rerun that only queues chunks again must not use
            # up the event's runs while its chunks (each counting their own) are still working
            await self.store.redis.hset(ev_key(event_id), mapping={"runs": 0, "last_error": ""})
        else:
            await self._complete(rec)
        return None

    async def _process_chunk(self, rec: dict[str, Any], events: list[NormalisedEvent], index: int,
                             force: bool) -> float | None:
        """One chunk job: `process` over the chunk's slice, with the chunk's record in place of
        the event's (its state, runs and pin), the event's actions and timeline."""
        event_id = rec["id"]
        key = chunk_key(event_id, index)
        meta = await self.store.start(event_id, key)  # counts the chunk's run before anything can fail
        if meta is None or "lo" not in meta:
            return None  # expired, or the event was never split
        if meta["state"] in FINAL_STATES:
            await self._complete(rec)  # idempotent: in case the run that finished it stopped short
            return None
        lo, hi = int(meta["lo"]), int(meta["hi"])
        runs = int(meta.get("runs") or 0)
        if runs > self.max_runs:
            error = f"worker crashed or timed out {runs - 1} times on this chunk (runs that never finished)"
            if meta.get("last_error"):
                error += f"; last error: {meta['last_error']}"
            await self._finish(rec, "dead", {"error": error}, chunk=Chunk(index, lo, key))
            return None
        part = events[lo:hi]
        pinned = json.loads(meta[PIN_FIELD])["keys"] if meta.get(PIN_FIELD) else None
        if pinned is not None:
            names: list[str | None] = list(pinned)
            pages = [False] * len(names)
        else:
            names = await self.correlator.names(self.planner.rules, part, [incident_key(ev) for ev in part])
            pages = [ev.kind in PAGE_KINDS for ev in part]
        # the chunk's record stands in for the event's (state, runs, pin); its actions are read
        # by id once planned, not the whole event's (`_process`)
        entered = await self._enter(key, key, names, pages, resolve=pinned is None)
        if not entered.locked:
            return LOCK_RETRY_S
        try:
            fresh = self.store.decode_record(event_id, entered.record)
            if fresh is None:
                return None
            merged = {k: v for k, v in rec.items() if k not in (PIN_FIELD, "runs", "error")}
            merged.update(fresh)
            return await self._process(merged, part, force, entered, chunk=Chunk(index, lo, key))
        finally:
            await self._leave(entered)

    async def _complete(self, rec: dict[str, Any]) -> None:
        """The event's final state once every chunk has one (only the call that made it counts)."""
        final = await self.chunks.complete(rec["id"])
        if final is not None:
            metrics.EVENTS_FINISHED.labels(rec["source"], final).inc()
            metrics.PROCESSING_SECONDS.labels(rec["source"]).observe(
                max(0.0, time.time() - rec["received_at"] / 1000))

    # -- one run under the locks ---------------------------------------------------------------

    async def _parse_failed(self, rec: dict[str, Any], e: Exception) -> None:
        state = rec["state"]
        if state != "processing":
            await self.store.transition(rec["id"], rec["received_at"], state, "processing")
        await self._finish(rec, "dead", {"error": f"parse failed: {type(e).__name__}: {e}"}, "processing")
        return None

    async def _process(self, rec: dict[str, Any], events: list[NormalisedEvent], force: bool,
                       entered: Entered, *, total: int | None = None, chunk: Chunk | None = None) -> float | None:
        """`chunk`: a chunk's run (`rec` merges the event and the chunk's own record)."""
        event_id = rec["id"]  # `rec` was read under the lock: pinned context may be new
        record_key = chunk.key if chunk else ev_key(event_id)
        state = rec["state"]
        if state in FINAL_STATES:
            return None

        world = await self.planner.world(rec, events, entered)
        first_run = PIN_FIELD not in rec
        if not first_run:  # a held resolve of a flapping alert, released by the sweeper (`hub.worker.flapping`)
            world.released = flap_run.releasable(rec, entered.incidents)
            for key in world.released:  # resolved as the incident is now (a page or an outside id
                world.incidents[key] = entered.incidents.get(key)  # recorded after the resolve came)
        try:  # rendered when run (`Recorder.previewed` else)
            steps = self.planner.decide(events, world, preview=False, first=chunk.lo if chunk else 0)
        except Exception as e:  # a rules bug must stay visible, not loop
            log.exception("planning %s failed", event_id)
            if state != "processing" and chunk is None:
                await self.store.transition(event_id, rec["received_at"], state, "processing")
            await self._finish(rec, "dead", {"error": f"planning failed: {type(e).__name__}: {e}"}, "processing",
                               entered=entered, chunk=chunk)
            return None
        first = chunk.lo if chunk else 0
        held, held_now = await self.quiet.decide(rec, events, first, entered.windows)
        if held:
            steps = [s for s in steps if s.event_index not in held]
        saves: Saves = {}
        severity_changed: set[str] = set()
        if first_run:
            saves, severity_changed = await self.recorder.prepare_commit(rec, events, world)
        # One transaction: processing, the pin and the incidents, the parsed events, the claims.
        p = Batch()
        if chunk is not None:
            if state != "processing":
                p.hset(record_key, mapping={"state": "processing", "updated_at": now_ms()})
        elif state != "processing":
            self.store.transition_into(p, event_id, rec["received_at"], state, "processing")
        if first_run:
            self.recorder.commit_into(p, rec, world, saves, record_key)
        dropped = 0
        if "events" not in rec and chunk is None:
            dropped = self.recorder.parsed_into(p, rec, events, len(events) if total is None else total)
        if held_now:
            self.quiet.commit_into(p, rec, record_key, events, held, first)
        released: dict[str, dict[str, Any]] = {}
        for key in sorted(world.released):
            if (done := flap_run.release_into(p, self.incidents, key, entered.incidents.get(key) or {},
                                              event_id)) is not None:
                released[key] = done
        claims = self.claims.claim_into(p, event_id, steps)
        await p.execute(self.store.redis)
        if held_now:
            self.quiet.count(rec["source"], held)
            await self.quiet.pinged(events, held, first)
            await self.quiet.deploys(rec, events)
        if dropped:
            metrics.ALERTS_TRUNCATED.labels(rec["source"]).inc(dropped)
        state = "processing"
        for key in severity_changed:
            await self.timers.rearm(key, saves[key][0])
        planned_steps = len(steps)
        steps = await self.claims.kept(event_id, steps, claims, note=first_run)

        known: dict[str, dict[str, Any] | None] = dict(entered.incidents)
        for key, (after, _changes) in saves.items():  # the records as the transaction left them (HSET merges)
            known[key] = {**(known.get(key) or {}), **after}
        for key, updates in released.items():
            known[key] = {**(known.get(key) or {}), **updates}
        if chunk is not None:  # only this chunk's records, not every chunk's
            ids = list(dict.fromkeys(s.id for s in steps))
            raw = await self.store.redis.hmget(actions_key(event_id), ids) if ids else []
            existing = {i: json.loads(r) for i, r in zip(ids, raw, strict=True) if r is not None}
        else:
            existing = self.store.decode_actions(entered.actions)
        pending = Batch()  # action records that ride along with the run's last write
        results, wait = await self.steps.execute(rec, steps, existing, pending, force=force, known=known)
        self.claims.unclaim_not_configured(event_id, steps, results, pending)
        if wait is not None:
            pending.hset(record_key, mapping={"runs": 0, "last_error": ""})
            pending.zadd(PENDING, {event_id: now_ms()}, xx=True)
            self.incidents.unlock_into(pending, entered)
            await pending.flush(self.store.redis)
            entered.released = True
            return wait
        states = {r["state"] for r in results}
        final = "dead" if states == {"dead"} else "partially_failed" if "dead" in states else "done"
        note: dict[str, Any] = {"actions": len(results)}
        if not results:
            note["reason"] = (self.quiet.reason(held) if held else flap_run.held_reason(saves, event_id) or
                              self.planner.no_action_reason(rec, events, planned_steps))
        await self._finish(rec, final, note, state, entered=entered, pending=pending, chunk=chunk)
        return None

    async def _finish(self, rec: dict[str, Any], final: str, note: dict[str, Any], old: str | None = None, *,
                      entered: Entered | None = None, pending: Batch | None = None,
                      chunk: Chunk | None = None) -> None:
        """The final state; the incidents' locks (when given) are released in the same transaction,
        with the action records still `pending`. A chunk's is its own; the last chunk to finish
        makes the event's (`hub.worker.chunks`)."""
        p = pending if pending is not None else Batch()
        if chunk is not None:
            self.chunks.finish_into(p, rec["id"], chunk.index, final, note.get("error"))
            self.store.add_timeline_into(p, rec["id"], {"type": "chunk", "chunk": chunk.index, "state": final, **note})
        else:
            self.store.transition_into(p, rec["id"], rec["received_at"], old or rec["state"], final, note,
                                       runs=0, last_error="", **({"error": note["error"]} if "error" in note else {}),
                                       **({"reason": note["reason"]} if "reason" in note else {}))
        if entered is not None:
            self.incidents.unlock_into(p, entered)
        job = current_job.get()
        if job is not None and job.job_id == rec["id"] and chunk is None:
            job.into(p)  # this event's own job ends in the same write (`hub.worker.job_claim`)
        else:
            job = None
        await p.execute(self.store.redis)
        if job is not None:
            job.written()
        if entered is not None:
            entered.released = True
        if chunk is not None:
            await self._complete(rec)
            return
        metrics.EVENTS_FINISHED.labels(rec["source"], final).inc()
        metrics.PROCESSING_SECONDS.labels(rec["source"]).observe(max(0.0, time.time() - rec["received_at"] / 1000))
