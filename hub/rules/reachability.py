"""Workflows and steps that can never run, found before anything runs (`validate` warnings).

Two ways a rule is dead while every name in it is valid:

- its `if` asks for an event kind its workflow's `on` never delivers (`on: [alert.firing]`
  with `if: {kind: incident.declared}`), or a step's `if` asks for a kind its workflow
  excludes. Only `kind` keys are reasoned about (inside `all`, `any` and a `not` of kinds
  alone); any other key is taken as able to hold;
- a step shares its action identity with an earlier step that has no `if` of its own: the
  earlier one is planned whenever the later one would be, and an identity runs once, so the
  later one never does. Across workflows the same holds when the earlier workflow has no
  `if`, is scoped the same way (`per`) and listens on every kind the later one does.

These are warnings, not errors: the file still loads (a dead rule is a mistake, not a danger).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass

from hub.core.events import Kind
from hub.rules.model import Condition, HubConfig, Step, Workflow
from hub.rules.problems import Path_

ALL_KINDS = frozenset(k.value for k in Kind)


def expand(patterns: Iterable[str]) -> set[str]:
    """The event kinds a list of kinds or patterns (`alert.*`) names."""
    return {k for k in ALL_KINDS if any(fnmatch.fnmatchcase(k, p) for p in patterns)}


def possible(cond: Condition | None, kinds: set[str]) -> set[str]:
    """Of `kinds`, those under which `cond` may hold, judging by its `kind` keys only."""
    if cond is None:
        return set(kinds)
    out = set(kinds)
    if cond.kind is not None:
        out &= expand(cond.kind)
    for sub in cond.all or []:
        out = possible(sub, out)
    if cond.any:
        out = set().union(*(possible(sub, out) for sub in cond.any))
    neg = cond.not_
    if neg is not None and neg.kind is not None and set(neg.model_dump(exclude_none=True, by_alias=True)) == {"kind"}:
        out -= expand(neg.kind)
    return out


@dataclass(frozen=True)
class Member:
    """An action a top-level step plans: itself, or one of its group."""

    path: Path_
    step_id: str
    identity: str
    conditional: bool
    repeating: bool


def members(wi: int, wf: Workflow) -> list[Member]:
    out = []
    for si, step in enumerate(wf.do):
        subs: list[tuple[Path_, Step]] = [(("workflows", wi, "do", si, "do", gi), sub)
                                          for gi, sub in enumerate(step.do or [])]
        if not step.do:
            subs = [(("workflows", wi, "do", si), step)]
        for path, sub in subs:
            if sub.id is None or sub.action is None:
                continue
            identity = sub.identity or f"{wf.name}:{sub.id}"
            out.append(Member(path, sub.id, identity, conditional=bool(step.if_ or (step.do and sub.if_)),
                              repeating=step.every is not None))
    return out


def unreachable(config: HubConfig) -> list[tuple[Path_, str, str]]:
    """(path, message, hint) for each workflow or step that can never run."""
    out: list[tuple[Path_, str, str]] = []
    live: list[tuple[int, Workflow, set[str]]] = []
    for wi, wf in enumerate(config.workflows):
        if not wf.enabled:
            continue
        listened = expand(wf.on)
        if not listened:
            continue  # an unknown kind: already an error
        kinds = possible(wf.if_, listened)
        if not kinds:
            out.append((("workflows", wi, "if"), f"workflow {wf.name!r} never runs: its `if` asks for an event kind "
                        f"its `on` does not list ({', '.join(wf.on)})", "add the kind to `on`, or remove it from `if`"))
            continue
        live.append((wi, wf, kinds))
        for si, step in enumerate(wf.do):
            step_kinds = possible(step.if_, kinds)
            if not step_kinds:
                out.append((("workflows", wi, "do", si, "if"), f"step {step.id!r} never runs: its `if` asks for an "
                            f"event kind workflow {wf.name!r} never runs on ({', '.join(sorted(kinds))})",
                            "move the step to a workflow on that kind, or fix the kind"))
                continue
            for gi, sub in enumerate(step.do or []):
                if not possible(sub.if_, step_kinds):
                    out.append((("workflows", wi, "do", si, "do", gi, "if"), f"step {sub.id!r} never runs: its `if` "
                                f"asks for an event kind its group never runs on ({', '.join(sorted(step_kinds))})",
                                "fix the kind"))
    out += _shadowed(live)
    return out


def _shadowed(live: list[tuple[int, Workflow, set[str]]]) -> list[tuple[Path_, str, str]]:
    out: list[tuple[Path_, str, str]] = []
    #: identity (with its scope) → (the always-planned member that owns it, its workflow, the kinds it runs on)
    owners: dict[tuple[str, str, bool], list[tuple[Member, Workflow, set[str]]]] = {}
    for wi, wf, kinds in live:
        mine: list[Member] = []
        for m in members(wi, wf):
            found = None
            for earlier in mine:  # the same workflow: an earlier unconditional step with the same identity
                if earlier.identity == m.identity and earlier.repeating == m.repeating and not earlier.conditional:
                    found = f"step {earlier.step_id!r} before it"
                    break
            if found is None:
                for owner, owner_wf, owner_kinds in owners.get((wf.per, m.identity, m.repeating), []):
                    if owner_wf.if_ is None and kinds <= owner_kinds:
                        found = f"step {owner.step_id!r} of workflow {owner_wf.name!r}, which runs on every event " \
                                "this one does,"
                        break
            if found is not None and not (m.identity.startswith(f"{wf.name}:")):
                out.append((m.path, f"step {m.step_id!r} never runs: {found} has the same identity "
                            f"{m.identity!r} and no `if`, and an identity runs once",
                            "give one of them its own `identity`, or the earlier one an `if` that excludes this case"))
            mine.append(m)
        for m in mine:
            if not m.conditional:
                owners.setdefault((wf.per, m.identity, m.repeating), []).append((m, wf, kinds))
    return out
