"""Running an event's planned steps, in order, under the locks the executor holds.

Immediate steps run through the `ActionRunner` (one action: attempts, backoff, dead letter);
delayed ones are armed as timers (`hub.worker.timers`), and run here when their timer fires.
A step waits for the steps it reads, dies when one it needs failed, is skipped when a
resolution made it pointless, and a dead page brings the fallback pager in
(`hub.worker.fallback`). A run that has used its time budget stops between steps.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from hub.core import metrics
from hub.core.registry import connector_classes, superseded_by_resolution
from hub.rules.engine import PlannedStep
from hub.storage.batch import Batch
from hub.storage.event_store import ACTION_FINAL, Store, now_ms
from hub.storage.incidents import IncidentStore
from hub.worker import fallback
from hub.worker.actions import ActionRunner
from hub.worker.claims import Claims
from hub.worker.planner import Planner
from hub.worker.recording import Recorder
from hub.worker.timers import Timers


class StepRunner:
    def __init__(self, store: Store, incidents: IncidentStore, planner: Planner, runner: ActionRunner,
                 recorder: Recorder, claims: Claims, timers: Timers, *, budget: float | None = None) -> None:
        self.store = store
        self.incidents = incidents
        self.planner = planner
        self.runner = runner
        self.recorder = recorder
        self.claims = claims
        self.timers = timers
        #: Seconds a run may spend on actions before it stops and continues in a fresh job
        #: (None: no limit); the worker leaves room for one more step before its job timeout.
        self.budget = budget

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
        recorder = self.recorder
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
                    results += await self.timers.arm(rec, group, existing, incidents.get(key) if key else None)
                continue
            record = existing.get(step.id)
            before = (record["state"], len(record["attempts"])) if record else None
            recorded = False
            blocked = self.blocked(step, view, planned)
            if blocked is not None:
                state, why = blocked
                if state == "wait":
                    waits.append(now_ms() + 250)
                    continue
                record = await recorder.decide(event_id, step, record, "dead", why, pending=pending)
            elif (stale := self.superseded(step, record, rec, incidents.get(key) if key else None, force)):
                closing = self._page_close(step, record, view, incidents.get(key) if key else None)
                if closing is not None:
                    stale += f"; {closing.name} sent in case it had gone out"
                record = await recorder.decide(event_id, step, record, "skipped", stale, pending=pending)
                if closing is not None and (existing.get(closing.id) or {}).get("state") not in ACTION_FINAL:
                    closed = existing.get(closing.id) or self.runner.new_record(closing)
                    closed = await self.runner.run(event_id, closing, closed, rec["received_at"], pending=pending)
                    existing[closing.id] = closed
                    results.append(closed)
                    if closed["state"] == "retrying":
                        waits.append(int(closed.get("next_at") or now_ms()))
            elif step.builtin:
                record = await self._builtin(rec, step, record, force, pending)
            else:
                try:
                    step.params = step.render(view, incidents.get(key) if key else None)
                except Exception as e:
                    record = await recorder.decide(event_id, step, record, "dead",
                                                   f"parameters did not render: {type(e).__name__}: {e}",
                                                   pending=pending)
                else:
                    first = record is None or (record["state"] == "pending" and not record.get("attempts"))
                    if first and (why := step.fallback()) and self._will_call(step):
                        recorder.note_fallback(event_id, step, why, pending)
                    applied: dict[str, dict[str, Any] | None] = {}
                    on_success = recorder.on_success(step, view, incidents.get(key), applied) \
                        if step.record and key else None
                    record = await self.runner.run(event_id, step, record, rec["received_at"], force=force,
                                                   on_success=on_success, pending=pending)
                    if "incident" in applied and key:  # recorded in the same transaction as the success
                        incidents[key] = applied["incident"]
                        recorded = True
            if record["state"] == "succeeded" and step.record and key and not recorded:
                incidents[key] = recorder.apply_record(step, record, view, incidents.get(key), pending)
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

    async def _fallback(self, rec: dict[str, Any], page: PlannedStep, record: dict[str, Any],
                        existing: dict[str, dict[str, Any]], pending: Batch,
                        incident: dict[str, Any] | None) -> list[dict[str, Any]]:
        """A dead page: the other pager and a chat notice (`hub.worker.fallback`), each claimed once.

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
        if not fallback.enabled(page, self.planner.rules.config.catalog.fallback_pager):
            return []
        if incident and incident.get("resolved_at") and not any(existing.get(a) for a in ids):
            return []  # recovered meanwhile: nobody needs paging any more
        error = str(record.get("error") or "no error recorded")[:300]
        other = fallback.target(page, self.planner.configured())
        planned = [fallback.page_step(page, other, error)] if other else []
        planned.append(fallback.notice_step(page, event_id, error, other, None))
        kept = {s.id for s in await self.claims.claim(event_id, planned)}
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
            on_success = self.recorder.fallback_paged(page, step) if step.id == ids[0] else None
            done = await self.runner.run(event_id, step, current, rec["received_at"], pending=pending,
                                         on_success=on_success)
            existing[step.id] = done
            if step.id == ids[0]:
                fb_record = done
            out.append(done)
        return out

    @staticmethod
    def _page_close(step: PlannedStep, record: dict[str, Any] | None, view: dict[str, Any],
                    incident: dict[str, Any] | None) -> PlannedStep | None:
        """For a dropped page that may have gone out (a run of it ended mid-call, its record
        written or not, or an attempt whose answer was lost), the action that closes it at its
        pager; None otherwise."""
        if not fallback.is_page(step) or (step.timer is not None and not (record or {}).get("attempts")):
            return None  # an armed timer: it has not gone out
        attempts = (record or {}).get("attempts") or []
        if attempts and not any(a.get("ambiguous") or (a.get("status") or 0) >= 500 for a in attempts) \
                and (record or {}).get("state") != "pending":
            return None  # every attempt was refused outright: nothing went out
        cls = connector_classes().get(step.connector)
        try:
            params = (record or {}).get("params") or step.render(view, incident)
        except Exception:  # cannot say what was sent: nothing to close by
            return None
        close = cls.page_close(params) if cls is not None else None
        if close is None:
            return None
        action, close_params = close
        ident = f"{step.id}:close"
        return PlannedStep(id=ident, connector=step.connector, action=action, params=close_params,
                           idempotency_key=ident, workflow=step.workflow, step_id=f"{step.step_id}:close",
                           event_index=step.event_index, incident_key=step.incident_key, subject=step.subject,
                           context=step.context)

    @staticmethod
    def superseded(step: PlannedStep, record: dict[str, Any] | None, rec: dict[str, Any],
                   incident: dict[str, Any] | None, force: bool) -> str | None:
        """Why a *retry* of an opening action must not go out any more, else None.

        A page or public status incident still being retried when its incident resolves would
        otherwise open after the resolution (whose resolve found nothing to close yet) and
        stay open: on-call paged for an alert that already recovered. The same holds for one
        not sent yet when a run of the event ended early (its worker killed) and the incident
        resolved before the event ran again, with or without its record written. (A first run
        never meets this: the event opened nothing in an incident resolved after it arrived.)
        """
        if force or step.name not in superseded_by_resolution() \
                or (record is not None and record.get("state") not in ("retrying", "pending")):
            return None
        if not incident or not incident.get("resolved_at"):
            return None
        received, resolved = int(rec["received_at"]), int(incident["resolved_at"])
        if resolved <= received or int(incident.get("declared_at") or 0) > received:
            return None  # resolved by this event or before it, or a later episode: not superseded
        tried = len((record or {}).get("attempts") or [])
        return "skipped: the incident was resolved before this could be delivered " + \
            (f"(after {tried} failed attempts)" if tried else "(it had not been sent)")

    @staticmethod
    def blocked(step: PlannedStep, view: dict[str, Any], planned: set[tuple[str, int, str]]
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

    async def _builtin(self, rec: dict[str, Any], step: PlannedStep, record: dict[str, Any] | None,
                       force: bool, pending: Batch | None = None) -> dict[str, Any]:
        if record and record["state"] in ACTION_FINAL and not force:
            return record
        if step.action != "cancel_timers" or not step.incident_key:
            return await self.recorder.decide(rec["id"], step, record, "skipped", "skipped: no incident to act on",
                                              pending=pending)
        params = step.render({}, None)
        only = params.get("only")
        cancelled = await self.timers.cancel(step.incident_key, f"{step.workflow} ({rec['id']})",
                                             only=[only] if isinstance(only, str) else only)
        out = record or self.recorder.new_record(step)
        out.update(state="succeeded", error=None, next_at=None, result={"cancelled": cancelled})
        await self.store.save_action(rec["id"], out, {"type": "action", "action": out["id"], "name": out["name"],
                                                      "state": "succeeded", "cancelled": cancelled})
        return out
