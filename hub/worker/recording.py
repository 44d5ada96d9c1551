"""Recording: what an event does to its incident, and what the hub writes about it.

- the first run's commit: the incidents after the event (and their timeline lines), the pin
  of what the event saw, the deploys it announces (`prepare_commit`, `commit_into`);
- the parsed events on the event's record, alerts dropped past HUB_MAX_ALERTS_PER_EVENT;
- outcomes the hub decides itself (skipped, dead) as action records (`decide`);
- what a step's `record:` copies from its result into the incident (`record_writes`), saved
  in the same write as the step's success where the runner allows it;
- the timeline lines of a fallback (`note_fallback`, `fallback_paged`).

Writes are queued on the caller's `Batch` where they can share its atomic write.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC
from typing import Any

from hub.core import metrics
from hub.core.events import Kind, NormalisedEvent
from hub.core.registry import recorded_fields
from hub.rules.conditions import recent_deploys
from hub.rules.engine import PlannedStep, World
from hub.storage import alert_groups, flapping, storm
from hub.storage.batch import Batch
from hub.storage.event_store import Store, dumps, ev_key, now_ms
from hub.storage.incidents import DEPLOY_KINDS, IncidentStore
from hub.worker import flapping as flap_run
from hub.worker.actions import ActionRunner, OnSuccess
from hub.worker.grouping import joined_changes
from hub.worker.planner import PIN_FIELD, Planner

log = logging.getLogger("hub.worker.recording")

#: An incident is linked to deploys of its services this recent when it opens.
LINK_DEPLOYS_S = 3600

#: A change that is no timeline line: an alert that joined a storming incident (`hub.storage.storm`).
STORM_JOIN = "storm_join"
#: Per incident key: its record after the event, and the timeline lines for what changed.
Saves = dict[str, tuple[dict[str, Any], list[dict[str, Any]]]]


class Recorder:
    def __init__(self, store: Store, incidents: IncidentStore, planner: Planner, runner: ActionRunner) -> None:
        self.store = store
        self.incidents = incidents
        self.planner = planner
        self.runner = runner

    # -- the first run's commit ------------------------------------------------------------------

    async def prepare_commit(self, rec: dict[str, Any], events: list[NormalisedEvent], world: World
                             ) -> tuple[Saves, set[str]]:
        """First run only: the incidents after the event (and their timeline), deploys remembered."""
        rules = self.planner.rules
        saves: Saves = {}
        severity_changed: set[str] = set()
        storm_policy = rules.storm_policy()
        for ev, key, before, after in rules.states(events, world):
            if not key or not after:
                continue
            first_before = saves[key][0] if key in saves else before
            if after.get("episode") != (first_before or {}).get("episode"):
                linked = recent_deploys([d for d in world.deploys if str(d.get("service", "")).casefold() in
                                         {s.casefold() for s in rules.canonical_services(after["services"])}],
                                        LINK_DEPLOYS_S, world.received_ms)
                after["deploys"] = [dict(d) for d in linked[:5]]
            changes = incident_changes(before, after, rec["id"])
            if alert_groups.group_of(ev):  # the alert kept on its group's incident
                changes.append(alert_groups.member_entry(ev, rec["id"], int(rec["received_at"])))
            changes += joined_changes(ev, key, saves[key][0] if key in saves else before, after, rec["id"])
            flaps = flapping.changes(before, after, rec["id"])
            if any(c["type"] == "resolution_hold_cleared" and c["flap"] for c in flaps):  # it would have paged
                metrics.PAGES_SUPPRESSED.labels("flapping").inc()
            changes += flaps
            if storm_policy is not None and ev.kind == Kind.ALERT_FIRING:
                changes.append({"type": STORM_JOIN, "event": ev})  # kept for a summary, not a timeline line
            if any(c["type"] == "opened" for c in changes):
                metrics.INCIDENTS_OPENED.labels(after.get("kind") or "incident").inc()
            if before and before.get("severity") != after.get("severity") and before.get("episode") == \
                    after.get("episode"):
                severity_changed.add(key)
            prev_changes = saves[key][1] if key in saves else []
            saves[key] = (after, prev_changes + changes)
        for ev in events:  # idempotent, so before the pin: a crash in between cannot lose it
            if ev.kind in DEPLOY_KINDS:
                await self.remember_deploy(ev, rec)
        return saves, severity_changed

    def commit_into(self, p: Batch, rec: dict[str, Any], world: World, saves: Saves, record_key: str) -> None:
        """Pin what was seen (on the event's or the chunk's record) and advance the incidents,
        in the caller's transaction."""
        pin = {"keys": world.keys, "before": world.incidents, "episodes": world.episodes}
        p.hset(record_key, PIN_FIELD, dumps(pin))
        storm_policy = self.planner.rules.storm_policy()
        for key, (after, changes) in saves.items():
            for c in changes:
                if c["type"] == STORM_JOIN:  # one alert of a storm: its summary counts it
                    storm.commit_into(p, key, c["event"], c["event"].fingerprint, after, storm_policy,
                                      world.received_ms, self.incidents.retention)
            changes = [c for c in changes if c["type"] != STORM_JOIN]
            self.incidents.save_into(p, key, after, changes)
            flap_run.commit_into(p, key, world.incidents.get(key), after, rec["id"], record_key)

    async def remember_deploy(self, ev: NormalisedEvent, rec: dict[str, Any]) -> None:
        rules = self.planner.rules
        keep = rules.config.catalog.deploy_history
        for deploy in deploy_entries(rules.canonical_services(ev.services), ev, int(rec["received_at"])):
            await self.incidents.record_deploy(deploy, keep)

    def parsed_into(self, p: Batch, rec: dict[str, Any], events: list[NormalisedEvent], total: int) -> int:
        """The parsed events on the record; alerts dropped past the limit noted. How many were."""
        self.store.record_parsed_into(p, rec["id"], rec["received_at"], [e.model_dump(mode="json") for e in events])
        dropped = total - len(events)
        if dropped > 0:
            limit = self.planner.max_per_event
            p.hset(ev_key(rec["id"]), "truncated_alerts", dropped)
            self.store.add_timeline_into(p, rec["id"], {
                "type": "truncated", "alerts": total, "kept": len(events), "dropped": dropped,
                "limit": limit, "setting": "HUB_MAX_ALERTS_PER_EVENT"})
            log.warning("event %s: %d of its %d alerts dropped (HUB_MAX_ALERTS_PER_EVENT=%s)", rec["id"], dropped,
                        total, limit)
        return max(0, dropped)

    # -- action records the hub decides ------------------------------------------------------------

    def previewed(self, step: PlannedStep) -> PlannedStep:
        """`step` with its parameters as far as known before running: what a record of a step
        decided without running it (skipped, dead, scheduled) shows the operator."""
        if not step.params and step.template:
            step.params = self.planner.rules.preview(step)
        return step

    def new_record(self, step: PlannedStep) -> dict[str, Any]:
        """A fresh action record for a step decided without running it."""
        return self.runner.new_record(self.previewed(step))

    async def decide(self, event_id: str, step: PlannedStep, record: dict[str, Any] | None, state: str,
                     why: str, pending: Batch | None = None, **extra: Any) -> dict[str, Any]:
        """Record an outcome the hub decided itself (no call out): skipped, dead, cancelled.

        With `pending` it is queued there: nothing outside depends on it, and a run that
        dies before its next write simply decides it again.
        """
        rec = record or self.new_record(step)
        if rec["state"] == state and rec.get("error") == why:
            return rec
        rec.update(state=state, error=why, next_at=None, **extra)
        timeline = {"type": "action", "action": rec["id"], "name": rec["name"], "state": state, "error": why}
        if pending is not None:
            self.store.save_action_into(pending, event_id, rec, timeline)
        else:
            await self.store.save_action(event_id, rec, timeline)
        return rec

    # -- a step's `record:` into its incident --------------------------------------------------------

    def apply_record(self, step: PlannedStep, record: dict[str, Any], view: Mapping[str, Any],
                     incident: dict[str, Any] | None, pending: Batch) -> dict[str, Any] | None:
        """Copy what a step's `record:` asks for from its result into the incident (queued on `pending`)."""
        incident, queue = self.record_writes(step, record, view, incident)
        if queue is not None:
            queue(pending)
        return incident

    def on_success(self, step: PlannedStep, view: Mapping[str, Any], incident: dict[str, Any] | None,
                   applied: dict[str, dict[str, Any] | None]) -> OnSuccess:
        """For the runner: what a success records on the incident, saved with the success."""
        def on_success(record: dict[str, Any]) -> Callable[[Any], None] | None:
            try:
                applied["incident"], queue = self.record_writes(step, record, view, incident)
            except Exception:  # never in the way of recording the success; applied after it instead
                applied.pop("incident", None)
                return None
            return queue
        return on_success

    def record_writes(self, step: PlannedStep, record: dict[str, Any], view: Mapping[str, Any],
                      incident: dict[str, Any] | None
                      ) -> tuple[dict[str, Any] | None, Callable[[Any], None] | None]:
        """The incident after a step's `record:`, and what queues its writes (None: nothing to write)."""
        key = step.incident_key
        if not key or incident is None:
            return incident, None
        try:
            updates, aliases = record_updates(step, record.get("result") or {}, view, incident)
        except Exception as e:
            failed = {"type": "record_failed", "action": step.id, "error": str(e)}
            return incident, lambda p: self.incidents.update_noted_into(p, key, {}, failed)
        if not updates and not aliases:
            return incident, None
        entry = {"type": "recorded", "action": step.id, **{k: v for k, v in updates.items() if k != "escalated_at"}}

        def queue(p: Any) -> None:
            for alias in aliases:
                self.incidents.alias_into(p, alias, key)
            if updates:
                self.incidents.update_noted_into(p, key, updates, entry)

        return ({**incident, **updates} if updates else incident), queue

    # -- fallback lines ------------------------------------------------------------------------------

    def note_fallback(self, event_id: str, step: PlannedStep, why: str, pending: Batch) -> None:
        """Say on both timelines that a step goes to the global target, not the catalog's own."""
        entry = {"type": "fallback", "action": step.id, "name": step.name, "reason": why}
        self.store.add_timeline_into(pending, event_id, entry)
        if step.incident_key:
            self.incidents.note_into(pending, step.incident_key, {**entry, "event_id": event_id})
        log.warning("%s of %s: %s", step.name, event_id, why)

    def fallback_paged(self, page: PlannedStep, step: PlannedStep) -> OnSuccess | None:
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


def record_updates(step: PlannedStep, result: Mapping[str, Any], view: Mapping[str, Any],
                   incident: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """What a succeeded step's `record:` changes on its incident, and the aliases it adds (pure;
    raises when a value cannot be rendered). Shared by the worker and `incident-hub test`."""
    values = step.render_record(step.params, result, view, incident)
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
    return updates, aliases


def deploy_entries(services: list[str], ev: NormalisedEvent, received_ms: int) -> list[dict[str, Any]]:
    """What is remembered of a deploy event, once per (catalog) service it names."""
    a = ev.attributes
    return [{"service": service, "environment": ev.environment or "", "sha": a.get("sha", ""),
             "ref": a.get("ref", ""), "author": a.get("author", ""), "url": a.get("url", ""),
             "repository": a.get("repository", ""), "state": ev.kind.split(".")[-1], "title": ev.title,
             "fingerprint": ev.fingerprint, "at": deploy_time(ev, received_ms)} for service in services]


def deploy_time(ev: NormalisedEvent, received_ms: int) -> int:
    """When a deploy happened: the sender's own time (the deployment status's creation time),
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


def incident_changes(before: dict[str, Any] | None, after: dict[str, Any], event_id: str) -> list[dict[str, Any]]:
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
