"""Checks that relate one place of the rules file to another, each reported where it happens.

Pydantic checks shapes; these check meaning: names that must exist (teams, actions, event
kinds, sources, earlier steps), templates that must parse and read known names, secrets
that should come from the environment.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from typing import Any

from pydantic import BaseModel

from hub.core import envref
from hub.core.events import Kind
from hub.core.registry import connector_classes
from hub.rules import context, templating
from hub.rules.model import Condition, HubConfig, Step, Workflow
from hub.rules.problems import Path_, Positions, Problem, dotted
from hub.rules.reachability import unreachable

#: Actions the hub performs itself (not through a connector).
BUILTIN_ACTIONS = {"hub": {"cancel_timers"}}
#: Roots of `exists:` paths.
EXISTS_ROOTS = ("event", "incident", "service", "team", "deploy")


def known_actions() -> dict[str, set[str] | None]:
    """connector name → the action names it declares (and the hub's own actions)."""
    out: dict[str, set[str] | None] = {k: set(v) for k, v in BUILTIN_ACTIONS.items()}
    out.update({name: set(cls.action_names) for name, cls in connector_classes().items()})
    return out


def _example_actions() -> str:
    """A hint naming two real actions (the last two connectors' first actions)."""
    names = [f"{n}.{sorted(a)[0]}" for n, a in sorted(known_actions().items()) if a and n != "hub"]
    return "e.g. " + " or ".join(names[-2:]) if names else "e.g. hub.cancel_timers"


class _Checker:
    def __init__(self, config: HubConfig, data: dict[str, Any], positions: Positions) -> None:
        self.config = config
        self.data = data
        self.positions = positions
        self.problems: list[Problem] = []
        self.env = envref.environment()

    def add(self, path: Path_, message: str, hint: str = "", *, key: bool = False, severity: str = "error",
            text_line: int = 0) -> None:
        """`text_line`: the line inside a template, placed exactly when the value is a `|` block."""
        line, col = self.positions.find(path, key=key)
        if text_line and tuple(path) in self.positions.literal:
            line += text_line
        self.problems.append(Problem(line, col, dotted(path), message, hint, severity))

    # -- catalog -------------------------------------------------------------------------------

    def catalog(self) -> None:
        cat = self.config.catalog
        seen_alias: dict[str, str] = {}
        for name, svc in cat.services.items():
            base = ("catalog", "services", name)
            if svc.team and svc.team not in cat.teams:
                self.add((*base, "team"), f"unknown team {svc.team!r}", _suggest(svc.team, cat.teams, "teams"))
            for i, alias in enumerate([name, *svc.aliases]):
                folded = alias.casefold()
                other = seen_alias.get(folded)
                if other and other != name:
                    where = (*base, "aliases", i - 1) if i else base
                    self.add(where, f"alias {alias!r} is also used by service {other!r}",
                             "an alias must name one service")
                seen_alias.setdefault(folded, name)
            self.secrets("service", base, svc)
        fields = [f for cls in connector_classes().values() for f in cls.catalog_fields if f.templates_read]
        for f in fields:
            if "catalog" in f.on:
                self.restricted(("catalog", f.name), getattr(cat, f.name), f.templates_read)
        for name, svc in cat.services.items():
            for f in fields:
                if "service" in f.on and getattr(svc, f.name, None) is not None:
                    self.restricted(("catalog", "services", name, f.name), getattr(svc, f.name), f.templates_read)
        for name, team in cat.teams.items():
            base = ("catalog", "teams", name)
            self.secrets("team", base, team)
            if team.manager:
                self.secrets("contact", (*base, "manager"), team.manager)
            for i, level in enumerate(team.escalation):
                self.secrets("level", (*base, "escalation", i), level)
        self.source_options()

    def secrets(self, place: str, base: Path_, entry: Any) -> None:
        """The `env:` references of the connectors' keys on one catalog entry."""
        for cls in connector_classes().values():
            for f in cls.catalog_fields:
                if place in f.on and f.secret_ref:
                    self.secret((*base, f.name), getattr(entry, f.name, None))

    def secret(self, path: Path_, value: str | None) -> None:
        """A secret reference: valid, and set where the settings are read (environment or `.env`).

        An unset `env:NAME` is an error, not a warning: the worker would otherwise page with
        the global key instead of the one the file names. `env:NAME?` may be unset.
        """
        if not value:
            return
        ref = envref.parse(value)
        if envref.looks_like_ref(value) and ref is None:
            self.add(path, f"{value!r} is not a valid environment reference",
                     "write env:NAME (letters, digits, _), or env:NAME? when it may be unset")
        elif ref is not None and envref.lookup(ref.name, self.env) is None:
            if ref.optional:
                self.add(path, f"environment variable {ref.name} is not set: this falls back (env:{ref.name}?)",
                         "the fallback is recorded on the incident's timeline when it happens", severity="warning")
            else:
                self.add(path, f"environment variable {ref.name} is not set (neither in the environment nor "
                               "in .env)",
                         f"set {ref.name} where the worker runs (or in .env), or write env:{ref.name}? to let "
                         "it fall back")
        elif ref is None:
            self.add(path, "a secret is written in the file", "prefer env:NAME and set NAME in the environment",
                     severity="warning")

    def restricted(self, path: Path_, value: Any, allowed: tuple[str, ...]) -> None:
        """Text that may read only `allowed` (public wording: only the service's public name), so
        nothing internal reaches a public page."""
        texts = value.model_dump() if isinstance(value, BaseModel) else {"": value}
        for field, text in texts.items():
            at = (*path, field) if field else path
            try:
                names = templating.references(text)[0] if templating.is_template(text) else set()
            except templating.TemplateProblem as e:
                self.add(at, f"template syntax: {e}")
                continue
            except Exception as e:  # a Jinja syntax error
                self.add(at, f"template syntax: {e}")
                continue
            for other in sorted(names - set(allowed)):
                self.add(at, f"public wording cannot read {other!r}",
                         "the page is public: only " + ", ".join("{{ " + n + " }}" for n in allowed)
                         + " (the service's public name) is available")

    def source_options(self) -> None:
        from hub.core.registry import sources

        known = sources()
        for name, options in self.config.catalog.sources.items():
            path = ("catalog", "sources", name)
            src = known.get(name)
            if src is None:
                self.add(path, f"unknown source {name!r}", _suggest(name, known, "sources"), key=True)
                continue
            for problem in src.check_options(options):
                named = [k for k in options if re.search(rf"(?<![\w]){re.escape(str(k))}(?![\w])", problem)]
                if not named:
                    self.add(path, f"{name} option: {problem}")
                    continue
                where: Path_ = (*path, named[0])
                entry = re.search(rf"{re.escape(named[0])}\[['\"]?([^'\"\]]+)['\"]?\]", problem)
                sub = options.get(named[0])
                if entry and isinstance(sub, dict) and entry.group(1) in sub:
                    where = (*where, entry.group(1))
                self.add(where, f"{name} option: {problem}", key=problem.startswith("unknown"))

    # -- workflows ---------------------------------------------------------------------------

    def workflows(self) -> None:
        names: dict[str, int] = {}
        for wi, wf in enumerate(self.config.workflows):
            base: Path_ = ("workflows", wi)
            if wf.name in names:
                self.add((*base, "name"), f"workflow name {wf.name!r} is used twice",
                         f"the other is workflows[{names[wf.name]}]; names are part of action identities")
            names.setdefault(wf.name, wi)
            for ki, kind in enumerate(wf.on):
                self.kind((*base, "on", ki) if "on" in self.data["workflows"][wi] and
                          isinstance(self.data["workflows"][wi]["on"], list) else (*base, "on"), kind)
            if wf.if_:
                self.condition((*base, "if"), wf.if_)
            self.steps(base, wf)

    def kind(self, path: Path_, kind: str) -> None:
        kinds = [k.value for k in Kind]
        if any(ch in kind for ch in "*?[") and fnmatch.filter(kinds, kind):
            return
        if kind not in kinds:
            self.add(path, f"unknown event kind {kind!r}", _suggest(kind, kinds, "kinds"))

    def steps(self, base: Path_, wf: Workflow) -> None:
        earlier: list[str] = []  # steps that run when the event is processed, in order
        ids: dict[str, Path_] = {}
        for si, step in enumerate(wf.do):
            spath = (*base, "do", si)
            if step.do:
                self.step(spath, step, list(earlier), ids, in_group=False)
                group_earlier = list(earlier)  # a group reads the immediate steps and its own earlier ones
                for gi, sub in enumerate(step.do):
                    self.step((*spath, "do", gi), sub, group_earlier, ids, in_group=True)
            else:
                readable = list(earlier)
                self.step(spath, step, readable, ids, in_group=False)
                if not step.delayed:
                    earlier.append(step.id or "")
            if step.every is not None and step.unless is None:
                self.add((*spath, "every"), "a repeating step without `unless` repeats until the incident "
                         "is resolved", "add `unless: resolved` to say so", severity="warning")

    def step(self, path: Path_, step: Step, earlier: list[str], ids: dict[str, Path_], *, in_group: bool) -> None:
        """Check one step; `earlier` is what its templates may read (a group member appends itself)."""
        assert step.id is not None
        if step.id in ids:
            self.add((*path, "id"), f"step id {step.id!r} is used twice in this workflow",
                     "give each step its own `id`")
        ids.setdefault(step.id, path)
        if in_group and (step.do or step.after is not None or step.every is not None or step.unless is not None):
            self.add(path, "a step inside a group cannot be a group or have its own after/every/unless",
                     "put the timing on the group")
        if step.if_:
            self.condition((*path, "if"), step.if_)
        if step.unless:
            self.condition((*path, "unless"), step.unless)
        if not step.action:
            return
        self.action((*path, "action"), step.action)
        for name, value in step.with_.items():
            for text in templating.strings(value):
                self.template((*path, "with", name), text, earlier)
        for name, value in step.record.items():
            for text in templating.strings(value):
                self.template((*path, "record", name), text, earlier, extra=("result", "params"))
        if in_group:
            earlier.append(step.id)

    def action(self, path: Path_, name: str) -> None:
        actions = known_actions()
        connector, dot, action = name.partition(".")
        if not dot or not action:
            self.add(path, f"{name!r} is not connector.action", _example_actions())
            return
        if connector not in actions:
            self.add(path, f"unknown connector {connector!r}", _suggest(connector, actions, "connectors"))
            return
        known = actions[connector]
        if known is not None and action not in known:
            full = [f"{connector}.{a}" for a in sorted(known)]
            self.add(path, f"{connector} has no action {action!r}", _suggest(name, full, "actions"))

    def template(self, path: Path_, text: str, earlier: list[str], extra: tuple[str, ...] = ()) -> None:
        try:
            names, steps = templating.references(text)
        except templating.TemplateProblem as e:
            self.add(path, str(e), "templates look like {{ event.title }}; the hub's filters: "
                     + ", ".join(templating.HUB_FILTERS) + ", plus Jinja's (default, lower, join, length, …)")
            return
        roots = (*templating.ROOTS, *extra)
        for name in sorted(names - set(roots)):
            self.add(path, f"unknown template variable {name!r}", _suggest(name, roots, "variables"))
        reported: set[str] = set()
        for ref, line in templating.attribute_paths(text):
            if ref[0] not in roots:
                continue  # reported above, or a name the template assigns itself
            found = _unknown_field(ref)
            if found and found[0] not in reported:
                reported.add(found[0])
                self.add(path, *found[1:], text_line=line)
        for sid in sorted(steps - set(earlier)):
            self.add(path, f"steps.{sid} is not an earlier step that has run by then",
                     "a step reads the results of the steps before it that are not delayed: "
                     + (", ".join(earlier) or "none here"))

    def condition(self, path: Path_, cond: Condition) -> None:
        for i, p in enumerate(cond.exists or []):
            root = p.split(".", 1)[0]
            where = (*path, "exists", i) if len(cond.exists or []) > 1 else (*path, "exists")
            if root not in EXISTS_ROOTS:
                self.add(where, f"exists: {p!r} does not start with one of {', '.join(EXISTS_ROOTS)}")
                continue
            found = _unknown_field(tuple(int(x) if x.isdigit() else x for x in p.split(".")))
            if found:
                self.add(where, *found[1:])
        for i, kind in enumerate(cond.kind or []):
            self.kind((*path, "kind", i), kind)
        services = self.config.catalog.services
        known = {n.casefold() for n in services} | {a.casefold() for s in services.values() for a in s.aliases}
        for name in cond.service or []:
            if services and name.casefold() not in known:
                self.add((*path, "service"), f"service {name!r} is not in the catalog",
                         _suggest(name, services, "services"), severity="warning")
        for name in cond.team or []:
            if name not in self.config.catalog.teams:
                self.add((*path, "team"), f"unknown team {name!r}", _suggest(name, self.config.catalog.teams, "teams"))
        for key in ("any", "all"):
            for i, sub in enumerate(getattr(cond, key) or []):
                self.condition((*path, key, i), sub)
        if cond.not_:
            self.condition((*path, "not"), cond.not_)


def _unknown_field(ref: tuple[str | int | None, ...]) -> tuple[str, str, str] | None:
    """(dotted name, message, hint) when a lookup names a field the context does not have."""
    if ref[0] == "steps":  # steps.<id>.state|result|params; the id is checked on its own
        if len(ref) < 3:
            return None
        miss = context.lookup(ref[2:], context.STEP_VIEW)
        miss = (miss[0] + 2, miss[1]) if miss else None
    else:
        miss = context.lookup(ref, context.schema())
    if miss is None:
        return None
    index, known = miss
    dotted = ".".join(str(p) if p is not None else "[…]" for p in ref[:index + 1])
    parent = ".".join(str(p) for p in ref[:index])
    close = difflib.get_close_matches(str(ref[index]), sorted(known), n=1, cutoff=0.6)
    message = f"unknown variable {dotted}" + (f"; did you mean {parent}.{close[0]}?" if close else "")
    hint = f"{parent} has: {', '.join(sorted(known))}" if known else f"{parent} is a list: index it, e.g. {parent}[0]"
    return dotted, message, hint


def _suggest(name: str, known: Any, what: str) -> str:
    options = sorted(str(k) for k in known)
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    return f"known {what}: {', '.join(options)}" if options else f"no {what} are defined"


def check(config: HubConfig, data: dict[str, Any], positions: Positions, *, workflows: bool = True) -> list[Problem]:
    """Problems of meaning; `workflows=False` when the workflows are the (already checked) defaults."""
    c = _Checker(config, data, positions)
    c.catalog()
    if workflows:
        c.workflows()
        if not any(p.severity == "error" for p in c.problems):  # reasoned about only once the names are valid
            for path, message, hint in unreachable(config):
                c.add(path, message, hint, severity="warning")
    return c.problems
