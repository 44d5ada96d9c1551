"""One test case's world, in memory: webhooks planned in order, each seeing what the earlier ones left.

`incident-hub test` plans through the worker's `Planner` (the one planning path), with an
in-memory stand-in for the `IncidentStore` it reads: no Redis, nothing sent. After each
webhook it keeps what the worker would have written, as if every planned action had
succeeded:

- the incidents after the events (`Rules.states`, the worker's own state machine), the
  aliases and the fields the steps' `record:` writes (`record_updates`; a value only the
  real call answers is written as a placeholder, `<result.incident_id>`);
- the action identities the events claimed (so a second firing of an alert pages nobody);
- deploys (`deploy_entries`) and deploy quiet periods (`deploy_quiet.next_window`);
- correlation across sources (`grouping:`), as `hub.worker.grouping` decides it.

Maintenance windows from the rules file and deploy quiet periods hold alerts back as in the
worker (`hub.worker.quiet`). Not modelled: timers firing (a case asserts which timers a
webhook starts, not what they do later), held alerts released when their window ends,
windows made at run time through the API, and a connector's real answers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from multidict import CIMultiDict

from hub.core.events import Kind, NormalisedEvent
from hub.rules import Rules
from hub.rules.engine import PlannedStep
from hub.rules.grouping import is_deferred, values
from hub.rules.maintenance import file_windows_open, quietable
from hub.rules.templating import strings
from hub.storage.incidents import DEPLOY_KINDS, incident_key
from hub.worker.deploy_quiet import DEPLOY_KINDS as QUIET_KINDS
from hub.worker.deploy_quiet import next_window, window_id
from hub.worker.heartbeats import watchdog_of
from hub.worker.planner import Planner, source_of
from hub.worker.quiet import facts, holding, runtime_open
from hub.worker.recording import deploy_entries, record_updates

_RESULT_FIELD = re.compile(r"\bresult\.([A-Za-z_][A-Za-z0-9_]*)|\bresult\[['\"]([^'\"]+)['\"]\]")


class MemoryIncidents:
    """What `Planner` reads of an `IncidentStore`, kept in memory for one case."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self.aliases: dict[str, str] = {}
        self.claimed: dict[str, dict[str, str]] = {}
        self.deploy_log: list[dict[str, Any]] = []

    async def resolve(self, name: str) -> str | None:
        if name in self.records:
            return name
        return self.aliases.get(name)

    async def get_many(self, keys: Iterable[str]) -> dict[str, dict[str, Any] | None]:
        return {k: self.records.get(k) for k in keys}

    async def deploys(self, services: Iterable[str], since_ms: int) -> list[dict[str, Any]]:
        names = {s.casefold() for s in services}
        found = [d for d in self.deploy_log if d["service"].casefold() in names and int(d["at"]) >= since_ms]
        return sorted(found, key=lambda d: -int(d.get("at", 0)))

    async def claims(self, subjects: Iterable[str]) -> dict[str, dict[str, str]]:
        return {s: dict(self.claimed.get(s, {})) for s in subjects}


@dataclass
class Outcome:
    """What one webhook did, as the worker would have done it."""

    events: list[NormalisedEvent]
    #: The incident of each event (after aliases and correlation).
    keys: list[str | None]
    #: Each event's incident before it (None: none yet).
    before: list[dict[str, Any] | None]
    #: Each event's incident after it.
    after: list[dict[str, Any] | None]
    #: The actions that would run (claimed by this webhook, not held back), timers included.
    planned: list[PlannedStep]
    #: Event index → the window (or heartbeat) that held it back.
    held: dict[int, str] = field(default_factory=dict)
    #: Workflows whose immediate steps `grouping.defer` made wait.
    deferred: list[str] = field(default_factory=list)


class Scenario:
    """Webhooks of one case, planned in order over one in-memory world."""

    def __init__(self, rules: Rules, configured: set[str]) -> None:
        self.rules = rules
        self.store = MemoryIncidents()
        self.planner = Planner(rules, incidents=self.store, configured=lambda: set(configured))  # type: ignore[arg-type]
        #: Correlation values → (claimed at ms, the incident that claimed them).
        self.correlation: dict[str, tuple[int, str]] = {}
        #: Deploy quiet periods by window id (as stored at run time).
        self.windows: dict[str, dict[str, Any]] = {}
        self._n = 0

    async def deliver(self, source: str, body: bytes, headers: dict[str, str], content_type: str,
                      at_ms: int) -> Outcome:
        """Plan one webhook at `at_ms` and keep what it leaves (raises the source's BadPayload)."""
        self._n += 1
        hdrs = CIMultiDict(headers)
        for name, value in source_of(source).guess_headers(body).items():
            hdrs.setdefault(name, value)
        rec = {"id": f"ev_test_{self._n}", "source": source, "body": body, "headers": hdrs,
               "content_type": content_type, "received_at": at_ms}
        return await self.deliver_record(rec)

    async def deliver_record(self, rec: dict[str, Any]) -> Outcome:
        """Plan one event record (id, source, body, headers, content_type, received_at) and keep
        what it leaves: `deliver`'s second half, and `incident-hub rules diff`'s way in for
        events recorded in Redis (their stored headers as they are)."""
        at_ms = int(rec["received_at"])
        events = self.planner.normalise(rec)
        self._correlate(events, at_ms)
        world = await self.planner.world(rec, events)
        steps = await self.planner.owned(rec["id"], self.planner.decide(events, world))
        held = self._held(events, at_ms)
        kept = [s for s in steps if s.event_index not in held]
        states = self.rules.states(events, world)
        self._commit(rec["id"], events, states, kept, at_ms)
        grouping = self.rules.config.grouping
        by_name = {wf.name: wf for wf in self.rules.config.workflows}
        deferred = sorted({s.workflow for s in kept if s.workflow in by_name
                           and is_deferred(grouping, by_name[s.workflow])})
        return Outcome(events=events, keys=[k for _ev, k, _b, _a in states], before=[b for *_x, b, _a in states],
                       after=[a for *_x, a in states], planned=kept, held=held, deferred=deferred)

    # -- what the worker does around the plan ----------------------------------------------------

    def _correlate(self, events: list[NormalisedEvent], at_ms: int) -> None:
        """`hub.worker.grouping`: a firing alert with no incident of its own joins an open one."""
        grouping = self.rules.config.grouping
        if grouping is None or not grouping.by:
            return
        done: set[str] = set()
        for ev in events:
            name = incident_key(ev)
            if ev.kind != Kind.ALERT_FIRING or not name or name in done:
                continue
            done.add(name)
            found = values(grouping, ev, self.rules.canonical_services)
            if found is None or name in self.store.records:
                continue
            joined = "\x1f".join(found)
            since, target = self.correlation.get(joined, (0, ""))
            if target == name:
                continue
            is_open = False
            if target:
                state = self.store.records.get(target)
                if state is None:
                    is_open = at_ms - since <= grouping.window * 1000
                elif state.get("kind") == "alert":
                    is_open = not state.get("resolved_at") or \
                        at_ms - int(state.get("declared_at") or 0) <= grouping.window * 1000
            if is_open:
                self.store.aliases[name] = target
            else:
                self.correlation[joined] = (at_ms, name)
                self.store.aliases.pop(name, None)

    def _held(self, events: list[NormalisedEvent], at_ms: int) -> dict[int, str]:
        """`hub.worker.quiet`: the events an open window (or a Watchdog heartbeat) holds back."""
        windows = file_windows_open(self.rules.config.maintenance, at_ms) + runtime_open(self.windows.values(), at_ms)
        out: dict[int, str] = {}
        for i, ev in enumerate(events):
            if not quietable(ev.kind, ev.source):
                continue
            if (beat := watchdog_of(self.rules, ev)) is not None:
                out[i] = f"heartbeat {beat}"
            elif (w := holding(windows, facts(self.rules, ev))) is not None:
                out[i] = w.name
        return out

    def _commit(self, event_id: str, events: list[NormalisedEvent], states: list[Any], kept: list[PlannedStep],
                at_ms: int) -> None:
        """What the worker writes: incidents, claims, deploys, quiet periods, the steps' `record:`."""
        for _ev, key, _before, after in states:
            if key and after:
                self.store.records[key] = after
        for s in kept:
            self.store.claimed.setdefault(s.subject, {}).setdefault(s.id, event_id)
        for ev in events:
            services = self.rules.canonical_services(list(ev.services))
            if ev.kind in DEPLOY_KINDS:
                self.store.deploy_log += deploy_entries(services, ev, at_ms)
            if ev.kind in QUIET_KINDS:
                for service in services:
                    window = next_window(self.rules, ev, service, self.windows.get(window_id(service)), at_ms)
                    if window is not None:
                        self.windows[window["id"]] = window
        for s in kept:  # as if each immediate step succeeded; a timer's record waits for it to fire
            if s.timer is not None or not s.record or not s.incident_key:
                continue
            incident = self.store.records.get(s.incident_key)
            if incident is None:
                continue
            try:
                updates, aliases = record_updates(s, placeholder_result(s.record), {}, incident)
            except Exception:  # the worker notes it on the timeline; a plan has nothing to keep
                continue
            self.store.records[s.incident_key] = {**incident, **updates}
            for alias in aliases:
                if alias != s.incident_key:
                    self.store.aliases[alias] = s.incident_key


def placeholder_result(record: dict[str, Any]) -> dict[str, str]:
    """A stand-in for a call's answer: each `result.NAME` the record reads, as `<result.NAME>`."""
    out: dict[str, str] = {}
    for text in strings(record):
        for m in _RESULT_FIELD.finditer(text):
            name = m.group(1) or m.group(2)
            out[name] = f"<result.{name}>"
    return out
