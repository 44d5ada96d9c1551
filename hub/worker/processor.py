"""One event's trip through the worker: parse → normalise → decide → act → record.

`process()` is idempotent: it may run twice (arq is at-least-once, the sweeper re-enqueues,
a worker may be killed mid-way) and each run only advances what is not final yet:

- events of one incident are processed one at a time (a Redis lock per incident key);
- on its first run an event *pins* what it saw (the incident before it, the episode) to its
  record and advances the incident in the same transaction, so later runs plan exactly the
  same actions and never apply the event to the incident twice;
- each action identity is *claimed* by the first event that plans it (`hub:claims:*`): a
  later event of the same incident skips what another event already owns (one page per
  incident episode, one Jira issue per follow-up);
- delayed steps become timers (`hub.timers`); `fire_timer` runs them when they are due;
- a delivery of more alerts than fit one job is worked in chunk jobs (`hub.chunks`), each
  run like an event of its own over its slice of the alerts; past a limit alerts are dropped,
  counted and noted on the timeline;
- a run that has used its time budget stops between actions and comes back in a fresh job,
  so a slow upstream never runs a job into its timeout (which loses the run until the
  sweeper notices).
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from multidict import CIMultiDict

from hub.core import metrics
from hub.core.events import NormalisedEvent
from hub.core.registry import recorded_fields, sources, superseded_by_resolution
from hub.rules import Rules
from hub.rules.conditions import matches, recent_deploys
from hub.rules.engine import DEPLOY_LOOKBACK_S, PlannedStep, World, configured_connectors, timer_spec
from hub.storage.batch import Batch
from hub.storage.event_store import ACTION_FINAL, FINAL_STATES, PENDING, Store, actions_key, dumps, ev_key, now_ms
from hub.storage.incidents import DEPLOY_KINDS, PAGE_KINDS, Entered, IncidentStore, incident_key
from hub.worker import fallback, timers
from hub.worker.actions import ActionRunner, OnSuccess, PlannedAction
from hub.worker.chunks import Chunks, bounds, chunk_key

log = logging.getLogger("hub.worker.processor")

#: Seconds an incident lock is held at most by default (a killed worker's lock lapses after this);
#: the worker uses its job timeout plus a margin, after which arq has cancelled the job anyway.
LOCK_LEASE_S = 90.0
#: Seconds to wait before trying again when another worker holds the incident.
LOCK_RETRY_S = 0.2
#: An incident is linked to deploys of its services this recent when it opens.
LINK_DEPLOYS_S = 3600
#: Large deliveries whose normalised events a worker keeps at hand: each chunk job of one
#: would otherwise parse the whole body again (a 1 MiB group: ~0.3 s of CPU) on every run.
NORMALISED_CACHE = 4
#: What a chunk run reads of its event's record: not the stored events (megabytes for a large
#: group), and the body only when the worker has not normalised it yet.
CHUNK_RUN_FIELDS = ("source", "state", "received_at", "updated_at", "headers", "content_type", "chunks")
PIN_FIELD = "incident_ctx"


@dataclass(frozen=True)
class Chunk:
    """The slice of a delivery's events one chunk job works (`hub.worker.chunks`)."""

    index: int
    lo: int
    key: str  # the chunk's record (state, runs, pin), in place of the event's


class Processor:
    def __init__(self, store: Store, rules: Rules, runner: ActionRunner, max_runs: int = 8, *,
                 lock_lease: float = LOCK_LEASE_S, max_per_job: int | None = None,
                 max_per_event: int | None = None, budget: float | None = None) -> None:
        self.store = store
        self.rules = rules
        self.runner = runner
        self.max_runs = max_runs
        #: Longest an incident stays locked by a worker that died holding it (job timeout + margin).
        self.lock_lease = lock_lease
        #: HUB_MAX_ALERTS_PER_JOB: a delivery of more events is worked in chunk jobs (None: never).
        self.max_per_job = max_per_job
        #: HUB_MAX_ALERTS_PER_EVENT: events of one delivery past this are dropped (None: none are).
        self.max_per_event = max_per_event
        #: Seconds a run may spend on actions before it stops and continues in a fresh job
        #: (None: no limit); the worker leaves room for one more step before its job timeout.
        self.budget = budget
        self.incidents = IncidentStore(store.redis, store.retention)
        self.chunks = Chunks(store.redis, store.retention)
        self._normalised: OrderedDict[tuple[str, int, Rules], tuple[list[NormalisedEvent], int]] = OrderedDict()

    # -- deciding ------------------------------------------------------------------------------

    def normalise(self, rec: dict[str, Any]) -> list[NormalisedEvent]:
        return self._normalise(rec)[0]

    def _normalise(self, rec: dict[str, Any]) -> tuple[list[NormalisedEvent], int]:
        """The delivery's events, cut to HUB_MAX_ALERTS_PER_EVENT, and how many it had.

        A large delivery's are kept for its next chunk runs: the body never changes, and the
        source options only with the rules (a reload brings a new `Rules`, so a new key)."""
        if (hit := self._cached(rec)) is not None:
            return hit
        cache_key = self._cache_key(rec)
        src = sources()[rec["source"]]
        headers = CIMultiDict(rec.get("headers") or {})
        payload = src.parse(rec["body"], headers, rec.get("content_type", "application/json"))
        events = src.normalise(payload, headers, self.rules.source_options(rec["source"]))
        total = len(events)
        if self.max_per_event is not None and total > self.max_per_event:
            events = events[:self.max_per_event]
        if self.max_per_job is not None and len(events) > self.max_per_job:
            self._normalised[cache_key] = (events, total)
            while len(self._normalised) > NORMALISED_CACHE:
                self._normalised.popitem(last=False)
        return events, total

    def _cache_key(self, rec: dict[str, Any]) -> tuple[str, int, Rules]:
        return rec["id"], int(rec.get("received_at") or 0), self.rules  # Rules hash by identity

    def _cached(self, rec: dict[str, Any]) -> tuple[list[NormalisedEvent], int] | None:
        hit = self._normalised.get(key := self._cache_key(rec))
        if hit is not None:
            self._normalised.move_to_end(key)
        return hit

    async def _chunk_run_record(self, event_id: str) -> dict[str, Any] | None:
        """The event's record as a chunk run needs it (`CHUNK_RUN_FIELDS`, the body if not cached)."""
        raw = await self.store.redis.hmget(ev_key(event_id), CHUNK_RUN_FIELDS)
        rec = self.store.decode_record(event_id, {f.encode(): v for f, v in zip(CHUNK_RUN_FIELDS, raw, strict=True)
                                                  if v is not None})
        if rec is None or "state" not in rec:
            return None
        if self._cached(rec) is None:
            rec["body"] = await self.store.redis.hget(ev_key(event_id), "body") or b""
        return rec

    async def plan(self, rec: dict[str, Any]) -> tuple[list[NormalisedEvent], list[PlannedAction]]:
        """Normalise and decide, without side effects (also used by dry-run replay and simulate)."""
        events = self.normalise(rec)
        world = await self.world(rec, events)
        steps = self.rules.plan(events, world)
        claims = await self.incidents.claims({s.subject for s in steps})
        return events, [s for s in steps if claims.get(s.subject, {}).get(s.id, rec["id"]) == rec["id"]]

    async def keys(self, events: list[NormalisedEvent]) -> list[str | None]:
        """The incident of each event, following aliases (a page the hub did not send has none)."""
        out: list[str | None] = []
        for ev in events:
            raw = incident_key(ev)
            found = await self.incidents.resolve(raw) if raw else None
            out.append(found or (None if ev.kind in PAGE_KINDS else raw))
        return out

    def configured(self) -> set[str]:
        """Connectors with their settings (a planner without connectors asks the settings)."""
        if not self.runner.connectors:
            from hub.core.settings import SettingsError, get_settings

            try:
                return configured_connectors(get_settings())
            except SettingsError:
                return set()
        out = set()
        for name, connector in self.runner.connectors.items():
            try:
                if connector.missing_config() is None:
                    out.add(name)
            except Exception:  # a connector that cannot say is treated as not configured
                continue
        return out

    async def world(self, rec: dict[str, Any], events: list[NormalisedEvent],
                    entered: Entered | None = None) -> World:
        """What the plan reads: pinned on the event's first run, loaded from Redis before that.

        `entered`: what the run's way in already resolved and read under the locks.
        """
        pinned = json.loads(rec[PIN_FIELD]) if rec.get(PIN_FIELD) else None
        if pinned:
            keys = pinned["keys"]
            before = pinned["before"]
            episodes = pinned["episodes"]
        elif entered is not None:
            keys = list(entered.keys)
            before = {k: entered.incidents.get(k) for k in keys if k}
            episodes = {}
        else:
            keys = await self.keys(events)
            before = await self.incidents.get_many(k for k in keys if k)
            episodes = {}
        received = int(rec["received_at"])
        names: list[str] = []
        for ev in events:
            names += self.rules.canonical_services(ev.services) + list(ev.services)
        for state in before.values():
            names += list((state or {}).get("services") or [])
        deploys = await self.incidents.deploys(set(names), received - DEPLOY_LOOKBACK_S * 1000) if names else []
        return World(event_id=rec["id"], received_ms=received, now_ms=received, keys=keys, incidents=before,
                     episodes=dict(episodes), deploys=deploys, configured=self.configured())

    # -- acting ------------------------------------------------------------------------------

    async def process(self, event_id: str, *, force: bool = False, chunk: int | None = None) -> float | None:
        """Advance the event (or its chunk `chunk`); seconds until it should run again, or None.

        Round trips on the common path: count the run and read the record (`Store.start`:
        every job start counts, so a poison event ends as a dead letter after
        HUB_MAX_EVENT_RUNS whatever fails); one script that resolves the incidents, locks them
        and re-reads the record, its actions and the incidents; one transaction for
        processing + pin + incident + parsed + claims; the actions; one transaction that
        finishes the event and releases the locks.
        """
        if chunk is not None:
            return await self._run_chunk(event_id, chunk, force)
        rec = await self.store.start(event_id)  # counts this run before anything can fail
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
            events, total = self._normalise(rec)
            pinned = json.loads(rec[PIN_FIELD])["keys"] if rec.get(PIN_FIELD) else None
        except Exception as e:  # the ingress validated it, so this is a parser bug: keep it visible
            return await self._parse_failed(rec, e)
        if rec.get("chunks") or (pinned is None and self.max_per_job is not None and len(events) > self.max_per_job):
            return await self._fan_out(rec, events, total, force)
        if pinned is not None:
            names: list[str | None] = list(pinned)
            pages = [False] * len(names)
        else:
            names = [incident_key(ev) for ev in events]
            pages = [ev.kind in PAGE_KINDS for ev in events]
        entered = await self.incidents.enter(ev_key(event_id), actions_key(event_id), names, pages,
                                             self.lock_lease, resolve=pinned is None)
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
            if entered.lock_keys and not entered.released:
                await self.incidents.unlock(entered.lock_keys, entered.token)

    # -- chunks ------------------------------------------------------------------------------

    async def _run_chunk(self, event_id: str, index: int, force: bool) -> float | None:
        """A chunk job: the event's record is read, not counted (each chunk counts its own runs
        on its own record, in `_process_chunk`)."""
        rec = await self._chunk_run_record(event_id)
        if rec is None or rec["state"] in FINAL_STATES:
            return None
        try:
            events, _ = self._normalise(rec)
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
                dropped = self._record_parsed_into(p, rec, events, total)
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
            names = [incident_key(ev) for ev in part]
            pages = [ev.kind in PAGE_KINDS for ev in part]
        # the chunk's record stands in for the event's (state, runs, pin); its actions are read
        # by id once planned, not the whole event's (`_process`)
        entered = await self.incidents.enter(key, key, names, pages, self.lock_lease, resolve=pinned is None)
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
            if entered.lock_keys and not entered.released:
                await self.incidents.unlock(entered.lock_keys, entered.token)

    async def _complete(self, rec: dict[str, Any]) -> None:
        """The event's final state once every chunk has one (only the call that made it counts)."""
        final = await self.chunks.complete(rec["id"])
        if final is not None:
            metrics.EVENTS_FINISHED.labels(rec["source"], final).inc()
            metrics.PROCESSING_SECONDS.labels(rec["source"]).observe(
                max(0.0, time.time() - rec["received_at"] / 1000))

    def _record_parsed_into(self, p: Batch, rec: dict[str, Any], events: list[NormalisedEvent], total: int) -> int:
        """The parsed events on the record; alerts dropped past the limit noted. How many were."""
        self.store.record_parsed_into(p, rec["id"], rec["received_at"], [e.model_dump(mode="json") for e in events])
        dropped = total - len(events)
        if dropped > 0:
            p.hset(ev_key(rec["id"]), "truncated_alerts", dropped)
            self.store.add_timeline_into(p, rec["id"], {
                "type": "truncated", "alerts": total, "kept": len(events), "dropped": dropped,
                "limit": self.max_per_event, "setting": "HUB_MAX_ALERTS_PER_EVENT"})
            log.warning("event %s: %d of its %d alerts dropped (HUB_MAX_ALERTS_PER_EVENT=%s)", rec["id"], dropped,
                        total, self.max_per_event)
        return max(0, dropped)

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

        world = await self.world(rec, events, entered)
        try:  # rendered when run (`_previewed` else)
            steps = self.rules.plan(events, world, preview=False, first=chunk.lo if chunk else 0)
        except Exception as e:  # a rules bug must stay visible, not loop
            log.exception("planning %s failed", event_id)
            if state != "processing" and chunk is None:
                await self.store.transition(event_id, rec["received_at"], state, "processing")
            await self._finish(rec, "dead", {"error": f"planning failed: {type(e).__name__}: {e}"}, "processing",
                               entered=entered, chunk=chunk)
            return None
        first_run = PIN_FIELD not in rec
        saves: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
        severity_changed: set[str] = set()
        if first_run:
            saves, severity_changed = await self._prepare_commit(rec, events, world)
        # One transaction: processing, the pin and the incidents, the parsed events, the claims.
        p = Batch()
        if chunk is not None:
            if state != "processing":
                p.hset(record_key, mapping={"state": "processing", "updated_at": now_ms()})
        elif state != "processing":
            self.store.transition_into(p, event_id, rec["received_at"], state, "processing")
        if first_run:
            self._commit_into(p, rec, world, saves, record_key)
        dropped = 0
        if "events" not in rec and chunk is None:
            dropped = self._record_parsed_into(p, rec, events, len(events) if total is None else total)
        for step in steps:
            self.incidents.claim_into(p, step.subject, step.id, event_id)
        replies = await p.execute(self.store.redis)
        if dropped:
            metrics.ALERTS_TRUNCATED.labels(rec["source"]).inc(dropped)
        state = "processing"
        owners = replies[len(replies) - 3 * len(steps):][1::3] if steps else []
        for key in severity_changed:
            await self._rearm(key, saves[key][0])
        planned_steps = len(steps)
        steps = await self._kept(event_id, steps, [o.decode() for o in owners], note=first_run)

        known: dict[str, dict[str, Any] | None] = dict(entered.incidents)
        for key, (after, _changes) in saves.items():  # the records as the transaction left them (HSET merges)
            known[key] = {**(known.get(key) or {}), **after}
        if chunk is not None:  # only this chunk's records, not every chunk's
            ids = list(dict.fromkeys(s.id for s in steps))
            raw = await self.store.redis.hmget(actions_key(event_id), ids) if ids else []
            existing = {i: json.loads(r) for i, r in zip(ids, raw, strict=True) if r is not None}
        else:
            existing = self.store.decode_actions(entered.actions)
        pending = Batch()  # action records that ride along with the run's last write
        results, wait = await self.execute(rec, steps, existing, pending, force=force, known=known)
        self._unclaim_not_configured(event_id, steps, results, pending)
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
            note["reason"] = self.no_action_reason(rec, events, planned_steps)
        await self._finish(rec, final, note, state, entered=entered, pending=pending, chunk=chunk)
        return None

    def _unclaim_not_configured(self, event_id: str, steps: list[PlannedStep], results: list[dict[str, Any]],
                                pending: Batch) -> None:
        """Give back the identities of actions skipped because their connector (or target) is not
        configured: once it is, a resend or the incident's next event performs them.

        Only this run's claims (`steps` are the ones this event owns), and not delayed steps (a
        timer's group is armed once per incident). Deleting is safe without a compare: a claim
        is only ever set if absent, and only its owner deletes it.
        """
        by_id = {r["id"]: r for r in results}
        released = [s for s in steps if s.timer is None and (by_id.get(s.id) or {}).get("state") == "skipped"
                    and by_id[s.id].get("not_configured")]
        if not released:
            return
        for step in released:
            self.incidents.unclaim_into(pending, step.subject, step.id)
        self.store.add_timeline_into(pending, event_id, {
            "type": "not_claimed", "actions": [s.id for s in released],
            "reason": "skipped as not configured: a later event or a resend of the same one performs it"})

    def no_action_reason(self, rec: dict[str, Any], events: list[NormalisedEvent], planned: int) -> str:
        """Why an event caused no action, in words an operator can act on."""
        if not events:
            src = sources()[rec["source"]]
            headers = CIMultiDict(rec.get("headers") or {})
            try:
                payload = src.parse(rec["body"], headers, rec.get("content_type", "application/json"))
                why = src.no_events_reason(payload, headers, self.rules.source_options(rec["source"]))
            except Exception as e:  # the reason must never fail the event
                why = f"{type(e).__name__}: {e}"
            return f"no events: {why}"
        if planned:
            return "already done: another event of the incident owns every action (see already_done)"
        parts = []
        for ev in events:
            listening = [wf.name for wf in self.rules.config.workflows
                         if wf.enabled and any(fnmatch.fnmatchcase(ev.kind, k) for k in wf.on)]
            what = f"{ev.kind}" + (f" {ev.severity.value}" if ev.severity else "")
            parts.append(f"{what}: no workflow listens on {ev.kind}" if not listening else
                         f"{what}: the conditions of {', '.join(listening)} did not hold")
        return "no workflow matched: " + "; ".join(parts)

    async def _prepare_commit(self, rec: dict[str, Any], events: list[NormalisedEvent], world: World
                              ) -> tuple[dict[str, tuple[dict[str, Any], list[dict[str, Any]]]], set[str]]:
        """First run only: the incidents after the event (and their timeline), deploys remembered."""
        saves: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
        severity_changed: set[str] = set()
        for _ev, key, before, after in self.rules.states(events, world):
            if not key or not after:
                continue
            first_before = saves[key][0] if key in saves else before
            if after.get("episode") != (first_before or {}).get("episode"):
                linked = recent_deploys([d for d in world.deploys if str(d.get("service", "")).casefold() in
                                         {s.casefold() for s in self.rules.canonical_services(after["services"])}],
                                        LINK_DEPLOYS_S, world.received_ms)
                after["deploys"] = [dict(d) for d in linked[:5]]
            changes = _changes(before, after, rec["id"])
            if before and before.get("severity") != after.get("severity") and before.get("episode") == \
                    after.get("episode"):
                severity_changed.add(key)
            prev_changes = saves[key][1] if key in saves else []
            saves[key] = (after, prev_changes + changes)
        for ev in events:  # idempotent, so before the pin: a crash in between cannot lose it
            if ev.kind in DEPLOY_KINDS:
                await self._remember_deploy(ev, rec)
        return saves, severity_changed

    def _commit_into(self, p: Batch, rec: dict[str, Any], world: World,
                     saves: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]], record_key: str) -> None:
        """Pin what was seen (on the event's or the chunk's record) and advance the incidents,
        in the caller's transaction."""
        pin = {"keys": world.keys, "before": world.incidents, "episodes": world.episodes}
        p.hset(record_key, PIN_FIELD, dumps(pin))
        for key, (after, changes) in saves.items():
            self.incidents.save_into(p, key, after, changes)

    async def _remember_deploy(self, ev: NormalisedEvent, rec: dict[str, Any]) -> None:
        keep = self.rules.config.catalog.deploy_history
        for service in self.rules.canonical_services(ev.services):
            a = ev.attributes
            await self.incidents.record_deploy({
                "service": service, "environment": ev.environment or "", "sha": a.get("sha", ""),
                "ref": a.get("ref", ""), "author": a.get("author", ""), "url": a.get("url", ""),
                "repository": a.get("repository", ""), "state": ev.kind.split(".")[-1], "title": ev.title,
                "fingerprint": ev.fingerprint, "at": deploy_time(ev, int(rec["received_at"]))}, keep)

    async def _claim(self, event_id: str, steps: list[PlannedStep], *, note: bool = False) -> list[PlannedStep]:
        """Keep the steps this event owns; note the ones another event of the incident already has."""
        if not steps:
            return []
        p = Batch()
        for step in steps:
            self.incidents.claim_into(p, step.subject, step.id, event_id)
        replies = await p.execute(self.store.redis)
        return await self._kept(event_id, steps, [o.decode() for o in replies[1::3]], note=note)

    async def _kept(self, event_id: str, steps: list[PlannedStep], owners: list[str], *, note: bool
                    ) -> list[PlannedStep]:
        kept, owned = [], {}
        for step, owner in zip(steps, owners, strict=True):
            if owner == event_id:
                kept.append(step)
            else:
                owned[step.id] = owner
        if owned and note:
            await self.store.add_timeline(event_id, {"type": "already_done", "actions": owned})
        return kept

    async def execute(self, rec: dict[str, Any], steps: list[PlannedStep], existing: dict[str, dict[str, Any]],
                      pending: Batch, *, force: bool = False, fire: bool = False,
                      known: Mapping[str, dict[str, Any] | None] | None = None
                      ) -> tuple[list[dict[str, Any]], float | None]:
        """Run immediate steps in order (and delayed ones when `fire`); schedule the other delayed ones.

        `known`: incident records the caller has just read or written under their locks.
        `pending`: where records that may wait for the caller's next write are queued (see
        `ActionRunner.run`); the caller sends it.

        Returns the records of the actions that ran or were decided now, and seconds until
        the next retry when some are still retrying (None when all are final).
        """
        event_id = rec["id"]
        results: list[dict[str, Any]] = []
        done: dict[tuple[str, int], dict[str, Any]] = {}  # (workflow, event index) → steps view
        waits: list[int] = []
        incidents: dict[str, dict[str, Any] | None] = dict(known or {})
        scheduled: set[str] = set()
        planned = {(s.workflow, s.event_index, s.step_id) for s in steps}
        started = time.monotonic()
        progressed = False  # a step advanced in this run (not only read back, or still parked)
        for step in steps:
            if progressed and self.budget is not None and time.monotonic() - started > self.budget:
                # out of time: what ran is recorded; a fresh job goes on from the next step
                metrics.RUNS_YIELDED.inc()
                waits.append(now_ms())
                break
            view = done.setdefault((step.workflow, step.event_index), {})
            key = step.incident_key
            if key and key not in incidents:
                incidents[key] = await self.incidents.get(key)
            if step.timer is not None and not fire:
                if step.timer_id not in scheduled:
                    scheduled.add(step.timer_id or "")
                    group = [s for s in steps if s.timer_id == step.timer_id]
                    results += await self._arm(rec, group, existing, incidents.get(key) if key else None)
                continue
            record = existing.get(step.id)
            before = (record["state"], len(record["attempts"])) if record else None
            recorded = False
            blocked = self._blocked(step, view, planned)
            if blocked is not None:
                state, why = blocked
                if state == "wait":
                    waits.append(now_ms() + 250)
                    continue
                record = await self._decide(event_id, step, record, "dead", why, pending=pending)
            elif (stale := self._superseded(step, record, rec, incidents.get(key) if key else None, force)):
                record = await self._decide(event_id, step, record, "skipped", stale, pending=pending)
            elif step.builtin:
                record = await self._builtin(rec, step, record, force, pending)
            else:
                try:
                    step.params = step.render(view, incidents.get(key) if key else None)
                except Exception as e:
                    record = await self._decide(event_id, step, record, "dead",
                                                f"parameters did not render: {type(e).__name__}: {e}", pending=pending)
                else:
                    first = record is None or (record["state"] == "pending" and not record.get("attempts"))
                    if first and (why := step.fallback()) and self._will_call(step):
                        self._note_fallback(event_id, step, why, pending)
                    applied: dict[str, dict[str, Any] | None] = {}
                    on_success = self._on_success(step, view, incidents.get(key), applied) \
                        if step.record and key else None
                    record = await self.runner.run(event_id, step, record, rec["received_at"], force=force,
                                                   on_success=on_success, pending=pending)
                    if "incident" in applied and key:  # recorded in the same transaction as the success
                        incidents[key] = applied["incident"]
                        recorded = True
            if record["state"] == "succeeded" and step.record and key and not recorded:
                incidents[key] = self._apply_record(step, record, view, incidents.get(key), pending)
            if fallback.is_page(step) and not step.builtin:
                extra = await self._fallback(rec, step, record, existing, pending, incidents.get(key) if key else None)
                results += extra
                waits += [int(r.get("next_at") or now_ms()) for r in extra if r["state"] == "retrying"]
            view[step.step_id] = {"state": record["state"], "result": record.get("result") or {},
                                  "params": record.get("params") or {}, "error": record.get("error")}
            results.append(record)
            progressed = progressed or (record["state"], len(record["attempts"])) != before
            if record["state"] == "retrying":
                waits.append(int(record.get("next_at") or now_ms()))
        wait = max(0.05, (min(waits) - now_ms()) / 1000) if waits else None
        return results, wait

    def _will_call(self, step: PlannedStep) -> bool:
        """The step's connector is set up for these params (so a fallback target is really used)."""
        connector = self.runner.connectors.get(step.connector)
        try:
            return connector is not None and connector.missing_config(step.params) is None
        except Exception:  # a connector that cannot say: the runner decides; say nothing here
            return False

    def _note_fallback(self, event_id: str, step: PlannedStep, why: str, pending: Batch) -> None:
        """Say on both timelines that a step goes to the global target, not the catalog's own."""
        entry = {"type": "fallback", "action": step.id, "name": step.name, "reason": why}
        self.store.add_timeline_into(pending, event_id, entry)
        if step.incident_key:
            self.incidents.note_into(pending, step.incident_key, {**entry, "event_id": event_id})
        log.warning("%s of %s: %s", step.name, event_id, why)

    async def _fallback(self, rec: dict[str, Any], page: PlannedStep, record: dict[str, Any],
                        existing: dict[str, dict[str, Any]], pending: Batch,
                        incident: dict[str, Any] | None) -> list[dict[str, Any]]:
        """A dead page: the other pager and a Slack notice (`hub.fallback`), each claimed once.

        A page that is not dead (a replay of it succeeded) closes fallback actions a forced
        replay reset, so they never go out for a page that reached its pager.
        """
        event_id = rec["id"]
        ids = fallback.fallback_ids(page.id)
        if record["state"] != "dead":
            if record["state"] in ACTION_FINAL:
                for aid in ids:
                    old = existing.get(aid)
                    if old and old["state"] not in ACTION_FINAL:
                        why = f"not needed: the page it stood in for is {record['state']}"
                        old.update(state="skipped", error=why, next_at=None)
                        self.store.save_action_into(pending, event_id, old, {
                            "type": "action", "action": aid, "name": old["name"], "state": "skipped", "error": why})
            return []
        if not fallback.enabled(page, self.rules.config.catalog.fallback_pager):
            return []
        if incident and incident.get("resolved_at") and not any(existing.get(a) for a in ids):
            return []  # recovered meanwhile: nobody needs paging any more
        error = str(record.get("error") or "no error recorded")[:300]
        other = fallback.target(page, self.configured())
        planned = [fallback.page_step(page, other, error)] if other else []
        planned.append(fallback.notice_step(page, event_id, error, other, None))
        kept = {s.id for s in await self._claim(event_id, planned)}
        out: list[dict[str, Any]] = []
        fb_record: dict[str, Any] | None = None
        for step in planned:
            if step.id not in kept:
                continue
            if step.id == ids[1]:  # worded from what the fallback page did
                step = fallback.notice_step(page, event_id, error, other, fb_record)
            current = existing.get(step.id)
            if current is None:  # its deadline counts from now, not from the event
                current = self.runner.new_record(step)
                current["round_started_at"] = now_ms()
            on_success = self._fallback_paged(page, step) if step.id == ids[0] else None
            done = await self.runner.run(event_id, step, current, rec["received_at"], pending=pending,
                                         on_success=on_success)
            existing[step.id] = done
            if step.id == ids[0]:
                fb_record = done
            out.append(done)
        return out

    def _fallback_paged(self, page: PlannedStep, step: PlannedStep) -> OnSuccess | None:
        """The incident remembers who paged and the key, so its resolution closes that alert
        (the resolve steps' `pager:` condition follows `paged_by`)."""
        key = page.incident_key
        if not key or "page_dedup_key" not in page.record:
            return None  # not the incident's page (an escalation): its own resolve steps know its key
        updates = {"paged_by": step.connector,
                   "page_dedup_key": step.params.get("alias") or step.params.get("dedup_key")}
        entry = {"type": "recorded", "action": step.id, **updates}

        def on_success(_record: dict[str, Any]) -> Callable[[Any], None]:
            return lambda p: self.incidents.update_noted_into(p, key, updates, entry)
        return on_success

    def _previewed(self, step: PlannedStep) -> PlannedStep:
        """`step` with its parameters as far as known before running: what a record of a step
        decided without running it (skipped, dead, scheduled) shows the operator."""
        if not step.params and step.template:
            step.params = self.rules.preview(step)
        return step

    @staticmethod
    def _superseded(step: PlannedStep, record: dict[str, Any] | None, rec: dict[str, Any],
                    incident: dict[str, Any] | None, force: bool) -> str | None:
        """Why a *retry* of an opening action must not go out any more, else None.

        A page or Statuspage incident still being retried when its incident resolves would
        otherwise open after the resolution (whose resolve found nothing to close yet) and
        stay open: on-call paged for an alert that already recovered.
        """
        if force or record is None or record.get("state") != "retrying" or step.name not in superseded_by_resolution():
            return None
        if not incident or not incident.get("resolved_at"):
            return None
        received, resolved = int(rec["received_at"]), int(incident["resolved_at"])
        if resolved <= received or int(incident.get("declared_at") or 0) > received:
            return None  # resolved by this event or before it, or a later episode: not superseded
        return f"skipped: the incident was resolved before this could be delivered (after {len(record['attempts'])} " \
               "failed attempts)"

    @staticmethod
    def _blocked(step: PlannedStep, view: dict[str, Any], planned: set[tuple[str, int, str]]
                 ) -> tuple[str, str] | None:
        """("wait", why) while a step it reads is unfinished; ("dead", why) if a step whose result
        it reads failed. A step read only for its outcome may have failed, or not be planned at
        all (its `if` did not hold): it then reads as state `not_run`."""
        for watched in step.watches:
            got = view.get(watched)
            if got is None and (step.workflow, step.event_index, watched) not in planned:
                view[watched] = {"state": "not_run", "error": "its condition did not hold", "result": {},
                                 "params": {}}
            elif got is None or (got["state"] not in ACTION_FINAL and got["state"] != "not_run"):
                return "wait", f"waiting for steps.{watched}"
        for need in step.needs:
            got = view.get(need)
            if got is None or got["state"] not in ACTION_FINAL:
                return "wait", f"waiting for steps.{need}"
            if got["state"] != "succeeded":
                return "dead", f"needs the result of steps.{need}, which is {got['state']}"
        return None

    async def _decide(self, event_id: str, step: PlannedStep, record: dict[str, Any] | None, state: str,
                      why: str, pending: Batch | None = None, **extra: Any) -> dict[str, Any]:
        """Record an outcome the hub decided itself (no call out): skipped, dead, cancelled.

        With `pending` it is queued there: nothing outside depends on it, and a run that
        dies before its next write simply decides it again.
        """
        rec = record or self.runner.new_record(self._previewed(step))
        if rec["state"] == state and rec.get("error") == why:
            return rec
        rec.update(state=state, error=why, next_at=None, **extra)
        timeline = {"type": "action", "action": rec["id"], "name": rec["name"], "state": state, "error": why}
        if pending is not None:
            self.store.save_action_into(pending, event_id, rec, timeline)
        else:
            await self.store.save_action(event_id, rec, timeline)
        return rec

    async def _builtin(self, rec: dict[str, Any], step: PlannedStep, record: dict[str, Any] | None,
                       force: bool, pending: Batch | None = None) -> dict[str, Any]:
        if record and record["state"] in ACTION_FINAL and not force:
            return record
        if step.action != "cancel_timers" or not step.incident_key:
            return await self._decide(rec["id"], step, record, "skipped", "skipped: no incident to act on",
                                      pending=pending)
        params = step.render({}, None)
        only = params.get("only")
        cancelled = await self.cancel_timers(step.incident_key, f"{step.workflow} ({rec['id']})",
                                             only=[only] if isinstance(only, str) else only)
        out = record or self.runner.new_record(self._previewed(step))
        out.update(state="succeeded", error=None, next_at=None, result={"cancelled": cancelled})
        await self.store.save_action(rec["id"], out, {"type": "action", "action": out["id"], "name": out["name"],
                                                      "state": "succeeded", "cancelled": cancelled})
        return out

    def _apply_record(self, step: PlannedStep, record: dict[str, Any], view: Mapping[str, Any],
                      incident: dict[str, Any] | None, pending: Batch) -> dict[str, Any] | None:
        """Copy what a step's `record:` asks for from its result into the incident (queued on `pending`)."""
        incident, queue = self._record_writes(step, record, view, incident)
        if queue is not None:
            queue(pending)
        return incident

    def _on_success(self, step: PlannedStep, view: Mapping[str, Any], incident: dict[str, Any] | None,
                    applied: dict[str, dict[str, Any] | None]) -> OnSuccess:
        """For the runner: what a success records on the incident, saved with the success."""
        def on_success(record: dict[str, Any]) -> Callable[[Any], None] | None:
            try:
                applied["incident"], queue = self._record_writes(step, record, view, incident)
            except Exception:  # never in the way of recording the success; applied after it instead
                applied.pop("incident", None)
                return None
            return queue
        return on_success

    def _record_writes(self, step: PlannedStep, record: dict[str, Any], view: Mapping[str, Any],
                       incident: dict[str, Any] | None
                       ) -> tuple[dict[str, Any] | None, Callable[[Any], None] | None]:
        """The incident after a step's `record:`, and what queues its writes (None: nothing to write)."""
        key = step.incident_key
        if not key or incident is None:
            return incident, None
        try:
            values = step.render_record(step.params, record.get("result") or {}, view, incident)
        except Exception as e:
            failed = {"type": "record_failed", "action": step.id, "error": str(e)}
            return incident, lambda p: self.incidents.update_noted_into(p, key, {}, failed)
        updates: dict[str, Any] = {}
        aliases: list[str] = []
        for name, value in values.items():
            if name == "alias":
                aliases.append(str(value))
            elif (into := getattr(recorded_fields().get(name), "append_to", None)) is not None:
                if value not in incident.get(into, []):
                    updates[into] = [*incident.get(into, []), value]
            elif name == "escalation_level":
                level = int(value)
                if level > int(incident.get("escalation_level") or 0):
                    updates.update(escalation_level=level, escalated_at=now_ms())
            elif incident.get(name) != value:
                updates[name] = value
        if not updates and not aliases:
            return incident, None
        entry = {"type": "recorded", "action": step.id, **{k: v for k, v in updates.items() if k != "escalated_at"}}

        def queue(p: Any) -> None:
            for alias in aliases:
                self.incidents.alias_into(p, alias, key)
            if updates:
                self.incidents.update_noted_into(p, key, updates, entry)

        return ({**incident, **updates} if updates else incident), queue

    # -- timers --------------------------------------------------------------------------------

    def _timer_spec(self, rec: dict[str, Any], step: PlannedStep) -> dict[str, Any]:
        assert step.timer is not None
        return {"timer": step.timer_id, "event_id": rec["id"], "workflow": step.workflow, "group": step.timer.group,
                "index": step.event_index, "key": step.incident_key, "occurrence": step.occurrence,
                "anchor_ms": step.timer.anchor_ms}

    async def _arm(self, rec: dict[str, Any], group: list[PlannedStep], existing: dict[str, dict[str, Any]],
                   incident: dict[str, Any] | None) -> list[dict[str, Any]]:
        """Schedule a delayed step's timer (records its actions as pending), unless it already ran."""
        first = group[0]
        if all((existing.get(s.id) or {}).get("state") in ACTION_FINAL for s in group) and existing.get(first.id):
            return []
        assert first.timer is not None and first.timer_id is not None
        severity = (incident or {}).get("severity") or first.context["event"].get("severity")
        delay = first.timer.delay(severity, first.occurrence)
        due = (first.timer.anchor_ms + int(delay * 1000)) if delay is not None else \
            now_ms() + int(timers.DORMANT_RECHECK_S * 1000)
        spec = self._timer_spec(rec, first)
        if first.incident_key:
            await self.incidents.add_timer(first.incident_key, first.timer_id, {**spec, "due_ms": due})
        queued = await timers.schedule(self.store.redis, spec, due, self.store.retention)
        out = []
        for step in group:
            if existing.get(step.id):
                continue
            record = self.runner.new_record(self._previewed(step))
            record.update(scheduled_for=due, timer=first.timer_id)
            await self.store.save_action(rec["id"], record, {
                "type": "timer", "timer": first.timer_id, "action": step.id, "name": record["name"],
                "state": "scheduled", "due_at": due, "workflow": first.workflow, "step": first.timer.group})
            existing[step.id] = record
        if queued and first.incident_key:
            await self.incidents.note(first.incident_key, {"type": "timer_scheduled", "timer": first.timer_id,
                                                           "due_at": due, "event_id": rec["id"]})
        return out

    async def cancel_timers(self, key: str, reason: str, only: list[str] | None = None) -> int:
        """Cancel the incident's timers (or those of the named steps); each leaves a timeline line."""
        cancelled = 0
        for timer_id, spec in (await self.incidents.timers(key)).items():
            if only and spec.get("group") not in only:
                continue
            await timers.unschedule(self.store.redis, timer_id)
            if not await self.incidents.remove_timer(key, timer_id):
                continue
            cancelled += 1
            await self._close_timer_actions(spec, "skipped", f"cancelled: {reason}")
            await self.incidents.note(key, {"type": "timer_cancelled", "timer": timer_id, "reason": reason})
            await self.store.add_timeline(spec["event_id"], {"type": "timer", "timer": timer_id, "state": "cancelled",
                                                             "reason": reason})
        return cancelled

    async def _close_timer_actions(self, spec: dict[str, Any], state: str, why: str) -> None:
        """Mark the still-pending actions of a timer final (cancelled or not needed)."""
        records = await self.store.actions(spec["event_id"])
        for record in records.values():
            if record.get("timer") == spec["timer"] and record["state"] not in ACTION_FINAL:
                record.update(state=state, error=why, next_at=None)
                await self.store.save_action(spec["event_id"], record, {
                    "type": "action", "action": record["id"], "name": record["name"], "state": state, "error": why})

    async def _rearm(self, key: str, incident: dict[str, Any]) -> None:
        """The severity changed: bring forward any timer now due earlier."""
        severity = incident.get("severity")
        for timer_id, spec in (await self.incidents.timers(key)).items():
            found = self.rules.step_for(spec["workflow"], spec["group"])
            if found is None or found[1].after is None:
                continue
            delay = timer_spec(found[1], int(spec["anchor_ms"])).delay(severity, int(spec.get("occurrence", 1)))
            if delay is None:
                continue
            due = int(spec["anchor_ms"]) + int(delay * 1000)
            if await timers.move_earlier(self.store.redis, timer_id, due):
                await self.incidents.add_timer(key, timer_id, {**spec, "due_ms": due})
                await self.incidents.note(key, {"type": "timer_moved", "timer": timer_id, "due_at": due,
                                                "severity": severity})

    async def fire_timer(self, spec: dict[str, Any]) -> tuple[str, float | None]:
        """A timer is due: re-check the world, then run its actions. (outcome, seconds to come back)."""
        key = spec.get("key")
        token = await self.incidents.lock([key], self.lock_lease) if key else ""
        if token is None:
            return "busy", LOCK_RETRY_S
        try:
            return await self._fire(spec)
        finally:
            if token and key:
                await self.incidents.unlock([key], token)

    async def _fire(self, spec: dict[str, Any]) -> tuple[str, float | None]:
        timer_id, key, event_id = spec["timer"], spec.get("key"), spec["event_id"]
        if key and timer_id not in await self.incidents.timers(key):
            return "not listed (cancelled or already fired)", None
        rec = await self.store.get(event_id)
        if rec is None:
            await self._drop(key, timer_id, "its event expired")
            return "event expired", None
        ev = self.normalise(rec)[int(spec["index"])]
        incident = await self.incidents.get(key) if key else None
        now = now_ms()
        world = World(event_id=event_id, received_ms=int(rec["received_at"]), now_ms=now,
                      keys=[key] * (int(spec["index"]) + 1), incidents={key: incident} if key else {},
                      configured=self.configured())
        steps = self.rules.timer_steps(spec["workflow"], spec["group"], int(spec["index"]), ev, key, incident, world,
                                       int(spec.get("occurrence", 1)))
        if not steps:
            await self._close_timer_actions(spec, "skipped", "skipped: the step is no longer in the rules")
            await self._drop(key, timer_id, "the step is no longer in the rules")
            return "gone from the rules", None
        for s in steps:  # the timer's own anchor, not the firing time
            assert s.timer is not None
            s.timer.anchor_ms = int(spec["anchor_ms"])
        existing = await self.store.actions(event_id)
        if all((existing.get(s.id) or {}).get("state") in ACTION_FINAL for s in steps):
            await self._drop(key, timer_id, None)
            return "already fired", None
        timer = steps[0].timer
        assert timer is not None
        if incident and incident.get("resolved_at"):
            await self._close_timer_actions(spec, "skipped", "not needed: the incident is resolved")
            await self._drop(key, timer_id, "the incident is resolved")
            return "incident resolved", None
        _, facts = self.rules.context(int(spec["index"]), ev, key, incident, world)
        if timer.unless is not None and matches(timer.unless, facts):
            held = [n for n, sub in zip(steps[0].unless, timer.unless.any or [], strict=False) if matches(sub, facts)]
            why = ", ".join(held) if held and steps[0].unless != ("condition",) else "its unless condition holds"
            await self._close_timer_actions(spec, "skipped", f"not needed: {why}")
            await self._drop(key, timer_id, f"not needed: {why}")
            return f"not needed: {why}", None
        severity = (incident or {}).get("severity") or (ev.severity.value if ev.severity else None)
        delay = timer.delay(severity, int(spec.get("occurrence", 1)))
        if delay is None:
            return f"dormant: no delay for {severity}", timers.DORMANT_RECHECK_S
        due = int(spec["anchor_ms"]) + int(delay * 1000)
        if due > now + 200:
            return "not due yet", (due - now) / 1000
        for s in steps:  # connector deadlines count from the firing, not from the event hours ago
            record = existing.get(s.id)
            if record and record["state"] == "pending" and not record.get("attempts"):
                record["round_started_at"] = now
        pending = Batch()
        try:
            results, wait = await self.execute(rec, steps, existing, pending, fire=True)
        finally:
            await pending.flush(self.store.redis)
        if wait is not None:
            return "retrying", wait
        await self._drop(key, timer_id, None, fired=True, event_id=event_id)
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
        steps = self.rules.timer_steps(spec["workflow"], spec["group"], int(spec["index"]), ev, key, incident,
                                       world, occurrence)
        if not steps:
            return
        steps = await self._claim(rec["id"], steps)
        if steps:
            await self._arm(rec, steps, await self.store.actions(rec["id"]), incident)

    async def _drop(self, key: str | None, timer_id: str, why: str | None, *, fired: bool = False,
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

    async def _finish(self, rec: dict[str, Any], final: str, note: dict[str, Any], old: str | None = None, *,
                      entered: Entered | None = None, pending: Batch | None = None,
                      chunk: Chunk | None = None) -> None:
        """The final state; the incidents' locks (when given) are released in the same transaction,
        with the action records still `pending`. A chunk's is its own; the last chunk to finish
        makes the event's (`hub.chunks`)."""
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
        await p.execute(self.store.redis)
        if entered is not None:
            entered.released = True
        if chunk is not None:
            await self._complete(rec)
            return
        metrics.EVENTS_FINISHED.labels(rec["source"], final).inc()
        metrics.PROCESSING_SECONDS.labels(rec["source"]).observe(max(0.0, time.time() - rec["received_at"] / 1000))


def deploy_time(ev: NormalisedEvent, received_ms: int) -> int:
    """When a deploy happened: the sender's own time (GitHub's deployment_status.created_at),
    never later than the hub received it; the receipt time when the sender gives none.

    A body replayed under a new delivery id so keeps its deploy's time (and is the same
    member of the deploy index: nothing new), instead of a fresh "deployed just now".
    """
    at = ev.occurred_at
    if at is None:
        return received_ms
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return min(received_ms, int(at.timestamp() * 1000))


def _changes(before: dict[str, Any] | None, after: dict[str, Any], event_id: str) -> list[dict[str, Any]]:
    """Timeline entries for what an event changed on its incident."""
    out: list[dict[str, Any]] = []
    if before is None or before.get("episode") != after.get("episode"):
        out.append({"type": "opened", "episode": after.get("episode"), "severity": after.get("severity"),
                    "event_id": event_id})
        if after.get("deploys"):
            out.append({"type": "deploys_linked", "deploys": [d.get("sha", "")[:12] for d in after["deploys"]]})
        before = {}
    for name in ("severity", "status"):
        if after.get(name) != before.get(name) and before.get(name) is not None:
            out.append({"type": f"{name}_changed", "from": before.get(name), "to": after.get(name),
                        "event_id": event_id})
    if after.get("acknowledged_at") and not before.get("acknowledged_at"):
        out.append({"type": "acknowledged", "by": after.get("acknowledged_by"), "event_id": event_id})
    if after.get("resolved_at") and not before.get("resolved_at"):
        out.append({"type": "resolved", "resolution": after.get("resolution"), "event_id": event_id})
    return out
