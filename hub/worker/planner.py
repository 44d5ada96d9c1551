"""Deciding, read-only: an event's record → its normalised events, its world, its plan.

The one planning path of the hub: the worker (`hub.worker.executor`), a dry-run replay
(`hub.operators.replay.dry_run`) and `incident-hub simulate` all plan through `Planner`, so
what an operator previews is what a worker would do. Nothing here writes to Redis: the
world is read (or pinned on the record), claims are read, never taken (`hub.worker.claims`
takes them). A planner without an `IncidentStore` plans offline, as `simulate` does: every
event the first of its incident, no deploys, no claims.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from multidict import CIMultiDict

from hub.core.events import NormalisedEvent
from hub.core.interactions import SOURCE as INTERACTION_SOURCE
from hub.core.interactions import InteractionEvents
from hub.core.registry import sources
from hub.rules import Rules
from hub.rules.conditions import kind_matches
from hub.rules.engine import DEPLOY_LOOKBACK_S, PlannedStep, World, configured_connectors
from hub.rules.heartbeats import SOURCE as HEARTBEAT_SOURCE
from hub.rules.heartbeats import HeartbeatSource
from hub.rules.storm_source import SOURCE as STORM_SOURCE
from hub.rules.storm_source import StormSource
from hub.storage.incidents import PAGE_KINDS, Entered, IncidentStore, incident_key

#: Large deliveries whose normalised events a worker keeps at hand: each chunk job of one
#: would otherwise parse the whole body again (a 1 MiB group: ~0.3 s of CPU) on every run.
NORMALISED_CACHE = 4
#: The record field where an event's first run pins what it saw (keys, incidents before, episodes).
PIN_FIELD = "incident_ctx"


def source_of(name: str) -> Any:
    """The parser of a recorded event's source: a webhook source, or the hub's own heartbeats,
    interactions (buttons: `hub.core.interactions`) and storm summaries."""
    if name == HEARTBEAT_SOURCE and name not in sources():
        return HeartbeatSource()
    if name == INTERACTION_SOURCE and name not in sources():
        return InteractionEvents()
    if name == STORM_SOURCE and name not in sources():
        return StormSource()
    return sources()[name]


def connectors_configured(connectors: dict[str, Any]) -> Callable[[], set[str]]:
    """`configured` for a planner over built connectors: those with their settings."""
    def configured() -> set[str]:
        out = set()
        for name, connector in connectors.items():
            try:
                if connector.missing_config() is None:
                    out.add(name)
                    out |= connector.modes()
            except Exception:  # a connector that cannot say is treated as not configured
                continue
        return out
    return configured


def settings_configured(settings: Any) -> Callable[[], set[str]]:
    """`configured` from the settings alone (no connector built)."""
    def configured() -> set[str]:
        return configured_connectors(settings)
    return configured


class Planner:
    """Normalise, build the world, plan, keep the steps this event owns. No side effects.

    `rules` may be replaced (a SIGHUP reload); everything that reads rules in the worker
    reads them here.
    """

    def __init__(self, rules: Rules, *, incidents: IncidentStore | None = None,
                 configured: Callable[[], set[str]] | None = None,
                 max_per_event: int | None = None, max_per_job: int | None = None) -> None:
        self.rules = rules
        self.incidents = incidents
        self._configured = configured or set  # none given: plans as if nothing were configured
        #: HUB_MAX_ALERTS_PER_EVENT: events of one delivery past this are dropped (None: none are).
        self.max_per_event = max_per_event
        #: HUB_MAX_ALERTS_PER_JOB: deliveries over it are kept normalised for their chunk runs.
        self.max_per_job = max_per_job
        self._normalised: OrderedDict[tuple[str, int, Rules], tuple[list[NormalisedEvent], int]] = OrderedDict()

    def configured(self) -> set[str]:
        """Connectors with their settings."""
        return self._configured()

    # -- normalising -----------------------------------------------------------------------------

    def normalise(self, rec: dict[str, Any]) -> list[NormalisedEvent]:
        return self.normalised(rec)[0]

    def normalised(self, rec: dict[str, Any]) -> tuple[list[NormalisedEvent], int]:
        """The delivery's events, cut to HUB_MAX_ALERTS_PER_EVENT, and how many it had.

        A large delivery's are kept for its next chunk runs: the body never changes, and the
        source options only with the rules (a reload brings a new `Rules`, so a new key)."""
        if (hit := self.cached(rec)) is not None:
            return hit
        cache_key = self._cache_key(rec)
        src = source_of(rec["source"])
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

    def cached(self, rec: dict[str, Any]) -> tuple[list[NormalisedEvent], int] | None:
        hit = self._normalised.get(key := self._cache_key(rec))
        if hit is not None:
            self._normalised.move_to_end(key)
        return hit

    # -- the world -------------------------------------------------------------------------------

    async def keys(self, events: list[NormalisedEvent]) -> list[str | None]:
        """The incident of each event, following aliases (a page the hub did not send has none)."""
        out: list[str | None] = []
        for ev in events:
            raw = incident_key(ev)
            found = await self.incidents.resolve(raw) if raw and self.incidents is not None else None
            out.append(found or (None if ev.kind in PAGE_KINDS else raw))
        return out

    async def world(self, rec: dict[str, Any], events: list[NormalisedEvent],
                    entered: Entered | None = None) -> World:
        """What the plan reads: pinned on the event's first run, loaded from Redis before that.

        `entered`: what the run's way in already resolved and read under the locks.
        """
        received = int(rec["received_at"])
        if self.incidents is None:  # offline: no history, as `simulate` shows it
            return World(event_id=rec["id"], received_ms=received, now_ms=received, configured=self.configured())
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
        names: list[str] = []
        for ev in events:
            names += self.rules.canonical_services(ev.services) + list(ev.services)
        for state in before.values():
            names += list((state or {}).get("services") or [])
        deploys = await self.incidents.deploys(set(names), received - DEPLOY_LOOKBACK_S * 1000) if names else []
        return World(event_id=rec["id"], received_ms=received, now_ms=received, keys=keys, incidents=before,
                     episodes=dict(episodes), deploys=deploys, configured=self.configured())

    # -- planning --------------------------------------------------------------------------------

    def decide(self, events: list[NormalisedEvent], world: World, *, preview: bool = True,
               first: int = 0) -> list[PlannedStep]:
        """The rules' plan for these events in this world (pure)."""
        return self.rules.plan(events, world, preview=preview, first=first)

    async def owned(self, event_id: str, steps: Iterable[PlannedStep]) -> list[PlannedStep]:
        """The steps no other event has claimed yet (claims read, not taken)."""
        steps = list(steps)
        if self.incidents is None:
            return steps
        claims = await self.incidents.claims({s.subject for s in steps})
        return [s for s in steps if claims.get(s.subject, {}).get(s.id, event_id) == event_id]

    async def plan(self, rec: dict[str, Any]) -> tuple[list[NormalisedEvent], list[PlannedStep]]:
        """Normalise and decide, without side effects (the worker, dry-run replay and simulate)."""
        events = self.normalise(rec)
        world = await self.world(rec, events)
        return events, await self.owned(rec["id"], self.decide(events, world))

    def no_action_reason(self, rec: dict[str, Any], events: list[NormalisedEvent], planned: int) -> str:
        """Why an event caused no action, in words an operator can act on."""
        if not events:
            src = source_of(rec["source"])
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
        configured = self.configured()
        for ev in events:
            # a workflow for a connector (or mode) this hub has not configured is not worth naming
            listening = [wf.name for wf in self.rules.config.workflows
                         if wf.enabled and kind_matches(ev.kind, wf.on)
                         and (wf.if_ is None or wf.if_.configured is None
                              or all(c in configured for c in wf.if_.configured))]
            what = f"{ev.kind}" + (f" {ev.severity.value}" if ev.severity else "")
            parts.append(f"{what}: no workflow listens on {ev.kind}" if not listening else
                         f"{what}: the conditions of {', '.join(listening)} did not hold")
        return "no workflow matched: " + "; ".join(parts)
