"""Decide: the actions a list of normalised events causes, given the catalog, workflows and state.

`Rules.plan(events, world)` is a pure function of its inputs: the processor loads the
`World` (incident state, claims, recent deploys) and pins what it saw to the event, so a
re-run of the same event plans the same actions with the same identities. Step parameters
that read earlier steps' results are rendered just before the action runs
(`PlannedStep.render`); in a dry run they show as `<steps.open.result.id>`.

Identity of an action instance: `<scope>:<workflow>:<step>` (or `<scope>:<identity>` when
steps share one), where scope is the incident and its episode (`<source>:abc#2`), the event
fingerprint (`per: fingerprint`) or the event itself (`per: event`). A repeating step adds
`#<occurrence>`. The identity is the action's id on the event and its idempotency key.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from connectors.base import CatalogView
from hub.core import envref, registry
from hub.core.events import NormalisedEvent, Severity
from hub.rules import templating
from hub.rules.conditions import Facts, kind_matches, matches, recent_deploys
from hub.rules.grouping import deferred
from hub.rules.model import PAGERS, Condition, Contact, HubConfig, Service, Step, Team, Workflow
from hub.rules.problems import Loaded
from hub.storage.flapping import FlapContext
from hub.storage.incidents import advance, duration_ms, incident_key
from hub.storage.storm import StormPolicy
from hub.storage.storm import quiet as storm_is_quiet
from hub.worker.actions import PlannedAction

#: How far back deploys are offered to conditions and templates.
DEPLOY_LOOKBACK_S = 24 * 3600


@dataclass
class World:
    """Everything besides the events that a plan depends on."""

    event_id: str = "ev_simulated"
    received_ms: int = 0
    now_ms: int = 0
    #: Incident key per event index (page events resolved through aliases), None when none.
    keys: list[str | None] = field(default_factory=list)
    #: The incident before this event, per key (pinned on the event's first run).
    incidents: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    #: Episode chosen for each key on the first run.
    episodes: dict[str, int] = field(default_factory=dict)
    #: subject → identity → id of the event that owns it.
    claims: dict[str, dict[str, str]] = field(default_factory=dict)
    #: Recent deploys (any service), newest first.
    deploys: list[dict[str, Any]] = field(default_factory=list)
    #: Connectors that are configured (no missing settings).
    configured: set[str] = field(default_factory=set)
    #: Incident keys whose resolve, held by this event for flapping, is released now (`hub.worker.flapping`).
    released: set[str] = field(default_factory=set)


@dataclass
class TimerSpec:
    """When a delayed step fires: `after`/`every` as seconds or per-severity seconds."""

    after: float | dict[str, float]
    every: float | dict[str, float] | None
    unless: Condition | None
    group: str
    anchor_ms: int

    def delay(self, severity: str | None, occurrence: int = 1) -> float | None:
        """Seconds after the anchor for this severity (None: this severity does not run it)."""
        spec = self.after if occurrence == 1 or self.every is None else self.every
        if isinstance(spec, dict):
            return spec.get(severity or "") if severity else None
        return float(spec)


@dataclass(eq=False)
class PlannedStep(PlannedAction):
    """A PlannedAction with what the processor needs to render, record, claim and time it."""

    step_id: str = ""
    event_index: int = 0
    incident_key: str | None = None
    subject: str = ""
    template: dict[str, Any] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)
    needs: tuple[str, ...] = ()
    #: Steps read only for their outcome (`steps.<id>.state` / `.error`): waited for, not required.
    watches: tuple[str, ...] = ()
    timer: TimerSpec | None = None
    timer_id: str | None = None
    occurrence: int = 1
    builtin: bool = False
    #: Set when the plan is for display only and a parameter could not be rendered.
    render_error: str | None = None

    def render(self, steps: Mapping[str, Any], incident: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Final parameters: templates over the context, current incident and earlier results."""
        ctx = dict(self.context)
        ctx["steps"] = dict(steps)
        if incident is not None:
            ctx["incident"] = incident_view(incident)
        return _drop_none(templating.render_params(self.template, ctx, markup_for(self.connector, self.action)))

    def fallback(self) -> str | None:
        """Why this step's target is the global one although the catalog names its own, else None.

        Only an `env:NAME?` reference can be unset by now (a plain `env:NAME` is an error at
        start); the connector then uses its global setting, and that must be said.
        """
        target = registry.global_target(self.connector)
        if target is None or self.params.get(target[0]) or target[0] not in self.template:
            return None
        text = " ".join(templating.strings(self.template[target[0]]))
        unset = []
        for root in ("service", "team"):
            view = self.context.get(root) or {}
            for path, name in (view.get("unset_env") or {}).items():
                if f"{root}.{path}" in text:
                    unset.append(f"{root} {view.get('name') or '?'} has {path}: env:{name}? and {name} is not set")
        if not unset:
            return None
        return f"fell back to the global {target[1]} because " + "; ".join(unset)

    def render_record(self, params: Mapping[str, Any], result: Mapping[str, Any],
                      steps: Mapping[str, Any], incident: Mapping[str, Any] | None) -> dict[str, Any]:
        ctx = dict(self.context)
        ctx.update(steps=dict(steps), params=dict(params), result=dict(result))
        if incident is not None:
            ctx["incident"] = incident_view(incident)
        return _drop_none(templating.render_value(self.record, ctx))


@lru_cache(maxsize=256)
def markup_for(connector: str, action: str) -> dict[str, str]:
    """{param: hub.core.escape format} the connector declares for this action (escaped when rendered)."""
    from hub.core.registry import connector_classes

    cls = connector_classes().get(connector)
    return dict(getattr(cls, "markup", {}).get(action) or {}) if cls is not None else {}


def _drop_none(params: dict[str, Any]) -> dict[str, Any]:
    """A parameter that renders to nothing is left out, so the connector's default applies."""
    return {k: v for k, v in params.items() if v is not None and v != ""}


def configured_connectors(settings: Any) -> set[str]:
    """Connectors whose settings are complete (`missing_config()` is None), without building a client."""
    from hub.core.registry import connector_classes

    out = set()
    for name, cls in connector_classes().items():
        try:
            connector = cls(settings, None, None)  # type: ignore[arg-type]
            if connector.missing_config() is None:
                out.add(name)
                out |= connector.modes()
        except Exception:  # a connector that cannot tell without a client counts as not configured
            continue
    return out


def env_value(ref: str | None, env: Mapping[str, str] | None = None) -> str | None:
    """`env:NAME` → the variable's value (None when unset); a literal stays as written."""
    return envref.resolve(ref, env)


def _unset(refs: Mapping[str, str | None], env: Mapping[str, str]) -> dict[str, str]:
    """Of the catalog's secret references, those written but unset here: path → variable."""
    out: dict[str, str] = {}
    for path, value in refs.items():
        ref = envref.parse(value)
        if ref is not None and envref.lookup(ref.name, env) is None:
            out[path] = ref.name
    return out


#: The manager of a team that names none (every key at its default).
_NO_CONTACT = Contact()
#: What a name outside the catalog gets (read only, like every catalog entry).
_NO_SERVICE, _NO_TEAM = Service(), Team()


def _secret_refs(place: str, entry: Any, prefix: str = "") -> dict[str, str | None]:
    """The `env:` references the connectors' keys hold on one catalog entry: path → value."""
    if entry is None:
        return {}
    return {prefix + name: getattr(entry, name, None) for _cls, refs in registry.catalog_places(place) for name in refs}


def incident_view(state: Mapping[str, Any] | None) -> dict[str, Any]:
    """The incident as templates see it: the record plus derived fields, every field present."""
    base: dict[str, Any] = {f: None for f in (
        "key", "kind", "source", "title", "severity", "status", "status_category", "episode", "declared_at",
        "acknowledged_at", "acknowledged_by", "resolved_at", "resolution", "escalated_at", "page_dedup_key",
        "paged_by", "flapping")}
    base.update(registry.incident_result_fields())
    # alert_count: alerts that joined the incident (`grouping:`), None when none did
    base.update(services=[], deploys=[], links=[], escalation_level=0, alert_count=None)
    if state:
        base.update(state)
    ms = duration_ms(dict(state)) if state else None
    base["duration_s"] = ms // 1000 if ms is not None else None
    base["acknowledged"] = bool(base.get("acknowledged_at"))
    base["resolved"] = bool(base.get("resolved_at"))
    base["url"] = next((link["href"] for link in base["links"] if isinstance(link, dict)), "")
    # a post-mortem document the incident already links (a source's post-mortem link)
    base["postmortem_url"] = next((link["href"] for link in base["links"] if isinstance(link, dict)
                                   and link.get("text") == "post-mortem"), None)
    return base


class Rules:
    """A loaded rules file: catalog lookups and planning."""

    def __init__(self, loaded: Loaded | HubConfig) -> None:
        if isinstance(loaded, HubConfig):
            self.config, self.source, self.warnings = loaded, "<in memory>", []
        else:
            self.config, self.source, self.warnings = loaded.config, loaded.source, loaded.warnings
        if self.config.grouping is not None and self.config.grouping.defer:  # alert workflows wait
            self.config = self.config.model_copy(update={"workflows": deferred(self.config.workflows,
                                                                               self.config.grouping.defer)})
        self._aliases: dict[str, str] = {}
        for name, svc in self.config.catalog.services.items():
            for alias in (name, *svc.aliases):
                self._aliases.setdefault(alias.casefold(), name)
        # per step of these rules (by id, the step kept with it): what its parameters read of
        # earlier steps, and its guard's names. They depend on the rules alone.
        self._step_reads: dict[int, tuple[Step, tuple[str, ...], tuple[str, ...]]] = {}
        self._guards: dict[int, tuple[Step, tuple[str, ...]]] = {}
        self.loaded_at = time.time()

    # -- catalog -------------------------------------------------------------------------------

    def source_options(self, source: str) -> dict[str, Any]:
        """The catalog's options for one inbound source (severity maps, label names, …)."""
        return dict(self.config.catalog.sources.get(source) or {})

    def canonical_services(self, names: list[str]) -> list[str]:
        """Catalog names for the raw names (aliases resolved; unknown names kept as they are)."""
        out: list[str] = []
        for name in names:
            canon = self._aliases.get(name.casefold(), name)
            if canon not in out:
                out.append(canon)
        return out

    def _catalog_view(self, place: str, entry: Any, ctx: CatalogView) -> dict[str, Any]:
        """What the connectors show of their keys on one catalog entry."""
        out: dict[str, Any] = {}
        for cls, _refs in registry.catalog_places(place):
            out.update(cls.catalog_view(place, entry, ctx))
        return out

    def service_view(self, name: str | None, world: World) -> dict[str, Any]:
        svc = self.config.catalog.services.get(name or "") or _NO_SERVICE
        in_catalog = name in self.config.catalog.services
        env = envref.environment()
        ctx = CatalogView(env, self.config.catalog, name, in_catalog, svc.display_name or name or "our service",
                          templating.render_value)
        # catalog text is the operator's (kept as written in markup); an unknown name is the payload's
        return templating.trusted({
            "description": svc.description, "aliases": list(svc.aliases), "team": svc.team,
            **self._catalog_view("service", svc, ctx),
            "fallback_pager": svc.fallback_pager,
            "unset_env": _unset(_secret_refs("service", svc), env),
        }) | {"name": templating.Trusted(name) if in_catalog and name else (name or ""), "in_catalog": in_catalog,
              "display_name": templating.Trusted(svc.display_name or name) if in_catalog and (svc.display_name or name)
              else (name or "")}

    def team_view(self, name: str | None) -> dict[str, Any]:
        team = self.config.catalog.teams.get(name or "") or _NO_TEAM
        env = envref.environment()
        ctx = CatalogView(env, self.config.catalog, name, name in self.config.catalog.teams)
        contact = team.manager or _NO_CONTACT
        manager = {**contact.model_dump(), **self._catalog_view("contact", contact, ctx)}
        refs = {**_secret_refs("team", team), **_secret_refs("contact", team.manager, "manager.")}
        for i, lvl in enumerate(team.escalation):
            refs.update(_secret_refs("level", lvl, f"escalation[{i}]."))
        return templating.trusted({
            "name": name or "", "description": team.description,
            **self._catalog_view("team", team, ctx), "manager": manager,
            "fallback_pager": team.fallback_pager,
            "escalation": [{"level": i + 1, "name": lvl.name or f"level {i + 1}",
                            **self._catalog_view("level", lvl, ctx)} for i, lvl in enumerate(team.escalation)],
            "unset_env": _unset(refs, env),
        })

    @staticmethod
    def pager(service: Mapping[str, Any], team: Mapping[str, Any], configured: set[str]) -> str:
        """The first pager (`PAGERS` order) with its own target for the service or team; else the
        first one, unless it is not configured and another is."""
        classes = registry.connector_classes()
        for name in PAGERS:
            if classes[name].has_own_target(service, team):
                return name
        if PAGERS[0] not in configured:
            for name in PAGERS[1:]:
                if name in configured:
                    return name
        return PAGERS[0]

    # -- planning ------------------------------------------------------------------------------

    def plan(self, events: list[NormalisedEvent], world: World | None = None, *,
             preview: bool = True, first: int = 0) -> list[PlannedStep]:
        """Every action instance these events cause, in workflow and step order, per event.

        `preview=False` leaves `params` empty (the worker renders them when it runs a step,
        and previews only what it records without running: see `Rules.preview`).
        `first`: the index of `events[0]` in its delivery, when they are one chunk of it
        (`hub.worker.chunks`): event indexes name actions and timers, so they stay the delivery's.
        """
        world = world or World(received_ms=_now_ms(), now_ms=_now_ms())
        planned: list[PlannedStep] = []
        seen: set[str] = set()
        for index, (ev, key, before, after) in enumerate(self.states(events, world), start=first):
            for ps in self._plan_event(index, ev, key, before, after, world, preview):
                if ps.id not in seen:  # one identity once: alerts of one group share their incident's page
                    seen.add(ps.id)
                    planned.append(ps)
        return planned

    def states(self, events: list[NormalisedEvent], world: World
               ) -> list[tuple[NormalisedEvent, str | None, dict[str, Any] | None, dict[str, Any] | None]]:
        """Per event: (event, incident key, incident before, incident after). Fills `world.episodes`."""
        out = []
        current: dict[str, dict[str, Any] | None] = dict(world.incidents)
        flap = self.config.flapping
        policy = flap.policy() if flap is not None else None
        storm_policy = self.storm_policy()
        for index, ev in enumerate(events):
            key = world.keys[index] if index < len(world.keys) else incident_key(ev)
            before = current.get(key) if key else None
            ctx = FlapContext(policy, key in world.released, world.event_id)
            after = (advance(before, ev, key, world.received_ms, episode=world.episodes.get(key), flap=ctx,
                             storm_policy=storm_policy) if key else None) or None
            if key and after:
                current[key] = after
                world.episodes.setdefault(key, int(after.get("episode", 1)))
            out.append((ev, key, before, after))
        return out

    def context(self, index: int, ev: NormalisedEvent, key: str | None, after: dict[str, Any] | None,
                world: World) -> tuple[dict[str, Any], Facts]:
        """The template context and the condition facts for one event."""
        raw_services = list(ev.services) or list((after or {}).get("services") or [])
        services = self.canonical_services(raw_services)
        views = [self.service_view(s, world) for s in services] or [self.service_view(None, world)]
        team_names = list(dict.fromkeys(v["team"] for v in views if v["team"]))
        team = self.team_view(team_names[0] if team_names else None)
        service_names = {s.casefold() for s in services} | {s.casefold() for s in raw_services}
        deploys = [d for d in world.deploys if str(d.get("service", "")).casefold() in service_names]
        linked = recent_deploys(deploys, DEPLOY_LOOKBACK_S, world.now_ms)
        event = ev.model_dump(mode="json")
        event.update(id=world.event_id, index=index, received_at=world.received_ms)
        ctx: dict[str, Any] = {
            "event": event, "incident": incident_view(after), "service": views[0], "services": views,
            "team": team, "steps": {}, "deploy": linked[0] if linked else {}, "deploys": linked,
            "now": datetime.fromtimestamp(world.now_ms / 1000, UTC).isoformat(timespec="seconds"),
            "occurrence": 1, "workflow": "",
        }
        facts = Facts(event=ev, incident=after, before=world.incidents.get(key) if key else None,
                      services=services + [s for s in raw_services if s not in services], teams=team_names,
                      pager=(after or {}).get("paged_by") or self.pager(views[0], team, world.configured),
                      configured=world.configured,
                      deploys=deploys, now_ms=world.now_ms, values=ctx)
        return ctx, facts

    def storm_policy(self) -> StormPolicy | None:
        """`grouping:`'s storm control (None: no `grouping:` in hub.yaml)."""
        grouping = self.config.grouping
        return grouping.storm_policy() if grouping is not None else None

    def _plan_event(self, index: int, ev: NormalisedEvent, key: str | None, before: dict[str, Any] | None,
                    after: dict[str, Any] | None, world: World, preview: bool = True) -> list[PlannedStep]:
        ctx, facts = self.context(index, ev, key, after, world)
        facts.before = before
        out: list[PlannedStep] = []
        # a storm (`hub.storage.storm`): an alert that only adds to the incident's alerts says nothing per event
        storm_quiet = storm_is_quiet(before, after, ev, self.storm_policy(), world.received_ms)
        for wf in self.config.workflows:
            if not wf.enabled or not kind_matches(ev.kind, wf.on):
                continue
            if storm_quiet and wf.per == "event":
                continue
            if not matches(wf.if_, facts):
                continue
            wf_ctx = {**ctx, "workflow": wf.name}
            for step in wf.do:
                if not matches(step.if_, facts):
                    continue
                out.extend(self._steps(wf, step, index, ev, key, after, wf_ctx, facts, world, preview=preview))
        return out

    def scope(self, wf: Workflow, ev: NormalisedEvent, key: str | None, after: dict[str, Any] | None,
              index: int, world: World) -> tuple[str, str]:
        """(subject, scope) of a workflow's actions for this event."""
        if wf.per == "incident" and key and after:
            return key, f"{key}#{after.get('episode', 1)}"
        if wf.per == "event":
            return ev.fingerprint, f"{world.event_id}.{index}"
        return ev.fingerprint, ev.fingerprint

    def _steps(self, wf: Workflow, step: Step, index: int, ev: NormalisedEvent, key: str | None,
               after: dict[str, Any] | None, ctx: dict[str, Any], facts: Facts, world: World,
               occurrence: int = 1, *, preview: bool = True) -> list[PlannedStep]:
        subject, scope = self.scope(wf, ev, key, after, index, world)
        members = step.do if step.do else [step]
        timer = None
        timer_id = None
        suffix = f"#{occurrence}" if step.every is not None else ""
        if step.after is not None:
            timer = timer_spec(step, world.received_ms)
            timer_id = f"timer:{scope}:{wf.name}:{step.id}{suffix}"
        out = []
        guard = self._guards.get(id(step))
        if guard is None or guard[0] is not step:
            guard = self._guards[id(step)] = (step, guard_names(step.unless))
        unless = guard[1]
        for sub in members:
            if step.do and not matches(sub.if_, facts):
                continue
            reads = self._step_reads.get(id(sub))
            if reads is None or reads[0] is not sub:
                reads = self._step_reads[id(sub)] = (sub, tuple(sorted(_needs(sub.with_))),
                                                     tuple(sorted(_watches(sub.with_))))
            assert sub.action is not None and sub.id is not None
            connector, _, action = sub.action.partition(".")
            identity = f"{scope}:{sub.identity}" if sub.identity else f"{scope}:{wf.name}:{sub.id}"
            identity += suffix
            severity = (after or {}).get("severity") or (ev.severity.value if ev.severity else None)
            delay = timer.delay(severity, occurrence) if timer else 0.0
            ps = PlannedStep(
                id=identity, connector=connector, action=action, idempotency_key=identity,
                delay=float(delay or 0.0), unless=unless, workflow=wf.name,
                step_id=sub.id, event_index=index, incident_key=key, subject=subject,
                template=dict(sub.with_), record=dict(sub.record), context={**ctx, "occurrence": occurrence},
                needs=reads[1], watches=reads[2],
                timer=timer, timer_id=timer_id, occurrence=occurrence,
                builtin=connector == "hub")
            if preview:
                ps.params = self.preview(ps)
            out.append(ps)
        return out

    def step_for(self, workflow: str, group: str) -> tuple[Workflow, Step] | None:
        """A workflow's top-level step by id (what a firing timer runs), if it still exists."""
        for wf in self.config.workflows:
            if wf.name == workflow:
                for step in wf.do:
                    if step.id == group:
                        return wf, step
        return None

    def timer_steps(self, workflow: str, group: str, index: int, ev: NormalisedEvent, key: str | None,
                    state: dict[str, Any] | None, world: World, occurrence: int) -> list[PlannedStep] | None:
        """The actions of a delayed step, planned afresh when its timer fires (None: gone from the rules)."""
        found = self.step_for(workflow, group)
        if found is None:
            return None
        wf, step = found
        ctx, facts = self.context(index, ev, key, state, world)
        return self._steps(wf, step, index, ev, key, state, {**ctx, "workflow": wf.name}, facts, world, occurrence)

    @staticmethod
    def preview(ps: PlannedStep) -> dict[str, Any]:
        """Parameters as far as they can be known before running (earlier results as placeholders)."""
        ctx = dict(ps.context)
        ctx["steps"] = templating.PlaceholderSteps()
        try:
            return _drop_none(templating.render_params(ps.template, ctx, markup_for(ps.connector, ps.action)))
        except Exception as e:  # shown in dry runs; the real render reports it on the action
            ps.render_error = f"{type(e).__name__}: {e}"
            return dict(ps.template)


def timer_spec(step: Step, anchor_ms: int) -> TimerSpec:
    assert step.after is not None
    return TimerSpec(after=_seconds(step.after), every=_seconds(step.every) if step.every is not None else None,
                     unless=step.unless, group=step.id or "", anchor_ms=anchor_ms)


def _seconds(spec: Any) -> float | dict[str, float]:
    if isinstance(spec, dict):
        return {(k.value if isinstance(k, Severity) else str(k)): float(v) for k, v in spec.items()}
    return float(spec)


def guard_names(cond: Condition | None) -> tuple[str, ...]:
    if cond is None:
        return ()
    names = [k for sub in (cond.any or []) for k, v in sub.model_dump(exclude_none=True, by_alias=True).items()
             if v is True]
    return tuple(names) or ("condition",)


def _needs(value: Any) -> set[str]:
    """Steps whose result the parameters read (they must have succeeded)."""
    out: set[str] = set()
    for text in templating.strings(value):
        try:
            out |= templating.references(text)[1] - templating.outcome_reads(text)
        except templating.TemplateProblem:
            continue
    return out


def _watches(value: Any) -> set[str]:
    """Steps the parameters read only for their outcome (state, error), unless a result is read too."""
    out: set[str] = set()
    for text in templating.strings(value):
        try:
            out |= templating.outcome_reads(text)
        except templating.TemplateProblem:
            continue
    return out - _needs(value)


def _now_ms() -> int:
    return int(time.time() * 1000)
