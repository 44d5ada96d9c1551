"""Evaluating `if:` and `unless:` conditions: plain comparisons over facts, no code."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hub.core import registry
from hub.core.events import NormalisedEvent, Severity
from hub.rules.model import Condition, DeployedWithin, SeverityRange


@dataclass
class Facts:
    """What conditions look at, for one event (or one firing timer)."""

    event: NormalisedEvent
    #: The incident after this event (None for events that belong to no incident).
    incident: Mapping[str, Any] | None
    #: The incident before this event (None when this event created it).
    before: Mapping[str, Any] | None
    services: list[str]
    teams: list[str]
    pager: str
    configured: set[str]
    deploys: list[Mapping[str, Any]]
    now_ms: int
    #: The template context, for `exists:` paths.
    values: Mapping[str, Any] = field(default_factory=dict)


def kind_matches(kind: str, patterns: Iterable[str]) -> bool:
    """`kind` matches one of the glob patterns (`alert.*`); a pattern without a wildcard is
    compared as it is (fnmatch would say the same, after a regex lookup per pattern)."""
    for p in patterns:
        if p == kind or (("*" in p or "?" in p or "[" in p) and fnmatch.fnmatchcase(kind, p)):
            return True
    return False


def matches(cond: Condition | None, f: Facts) -> bool:
    """True when every key of the condition holds (an absent condition always holds); the
    first key that does not hold decides (the checks only read)."""
    if cond is None:
        return True
    ev = f.event
    if cond.kind is not None and not kind_matches(ev.kind, cond.kind):
        return False
    if cond.source is not None and ev.source not in cond.source:
        return False
    if cond.severity is not None and not _severity(cond.severity, _current_severity(f)):
        return False
    if cond.service is not None:
        wanted = {s.casefold() for s in cond.service}
        if not any(s.casefold() in wanted for s in f.services):
            return False
    if cond.team is not None and not any(t in cond.team for t in f.teams):
        return False
    if cond.environment is not None and \
            (ev.environment or "").casefold() not in {e.casefold() for e in cond.environment}:
        return False
    if cond.status is not None and (ev.status or "").casefold() not in {s.casefold() for s in cond.status}:
        return False
    if cond.labels is not None and not all(_label(ev, k, v) for k, v in cond.labels.items()):
        return False
    if cond.attributes is not None and not all(_attribute(ev, k, v) for k, v in cond.attributes.items()):
        return False
    incident = f.incident or {}
    if cond.acknowledged is not None and bool(incident.get("acknowledged_at")) != cond.acknowledged:
        return False
    if cond.resolved is not None and bool(incident.get("resolved_at")) != cond.resolved:
        return False
    if cond.escalated is not None and bool(incident.get("escalated_at")) != cond.escalated:
        return False
    if cond.escalation_level is not None and int(incident.get("escalation_level") or 0) < cond.escalation_level:
        return False
    if cond.changed is not None and not any(_changed(name, f) for name in cond.changed):  # type: ignore[union-attr]
        return False
    if cond.exists is not None and not all(_present(lookup(f.values, p)) for p in cond.exists):
        return False
    if cond.pager is not None and f.pager != cond.pager:
        return False
    if cond.configured is not None and not all(c in f.configured for c in cond.configured):
        return False
    for name, path in registry.condition_paths():  # keys the connectors add (`CatalogField.condition_path`)
        wanted = getattr(cond, name, None)
        if wanted is not None and bool(lookup(f.values, path)) != wanted:
            return False
    if cond.deployed_within is not None and not recent_deploys(f.deploys, cond.deployed_within, f.now_ms):
        return False
    if cond.any is not None and not any(matches(c, f) for c in cond.any):
        return False
    if cond.all is not None and not all(matches(c, f) for c in cond.all):
        return False
    if cond.not_ is not None and matches(cond.not_, f):
        return False
    return True


def _current_severity(f: Facts) -> Severity | None:
    """The incident's severity when there is one (an update may omit it), else the event's."""
    if f.incident and f.incident.get("severity"):
        return Severity(f.incident["severity"])
    return f.event.severity


def _severity(spec: Any, sev: Severity | None) -> bool:
    if sev is None:
        return False
    if isinstance(spec, SeverityRange):
        return ((spec.at_least is None or sev.at_least(spec.at_least))
                and (spec.at_most is None or spec.at_most.at_least(sev)))
    if isinstance(spec, list):
        return sev in spec
    return sev == spec


def _label(ev: NormalisedEvent, key: str, wanted: str | list[str]) -> bool:
    value = ev.labels.get(key)
    if value is None:
        return False
    patterns = [wanted] if isinstance(wanted, str) else wanted
    return any(fnmatch.fnmatchcase(value.casefold(), p.casefold()) for p in patterns)


def _attribute(ev: NormalisedEvent, key: str, wanted: str | list[str]) -> bool:
    value = ev.attributes.get(key)
    if value is None:
        return False
    text = str(value).lower() if isinstance(value, bool) else str(value)
    patterns = [wanted] if isinstance(wanted, str) else wanted
    return any(fnmatch.fnmatchcase(text.casefold(), p.casefold()) for p in patterns)


_CHANGE_FIELDS = {"severity": "severity", "status": "status", "services": "services",
                  "acknowledged": "acknowledged_at", "resolved": "resolved_at", "flapping": "flapping"}


def _changed(name: str, f: Facts) -> bool:
    if f.incident is None or f.before is None:
        return False  # a new incident has nothing to change from
    key = _CHANGE_FIELDS[name]
    before, after = f.before.get(key), f.incident.get(key)
    if name in ("acknowledged", "resolved", "flapping"):
        return bool(before) != bool(after)
    return after is not None and before != after


def recent_deploys(deploys: list[Mapping[str, Any]], spec: float | DeployedWithin, now_ms: int
                   ) -> list[Mapping[str, Any]]:
    """Deploys within the window (and environments), newest first."""
    within = spec.within if isinstance(spec, DeployedWithin) else float(spec)
    envs = {e.casefold() for e in spec.environments} if isinstance(spec, DeployedWithin) else set()
    out = [d for d in deploys if now_ms - int(d.get("at", 0)) <= within * 1000
           and (not envs or str(d.get("environment") or "").casefold() in envs)]
    return sorted(out, key=lambda d: -int(d.get("at", 0)))


def lookup(values: Mapping[str, Any], path: str) -> Any:
    """`incident.page_dedup_key`, `team.escalation.0.name` → the value or None."""
    current: Any = values
    for part in path.split("."):
        if isinstance(current, Mapping):
            current = current.get(part)
        elif isinstance(current, list) and part.isdigit():
            idx = int(part)
            current = current[idx] if idx < len(current) else None
        else:
            return None
        if current is None:
            return None
    return current


def _present(value: Any) -> bool:
    return value not in (None, "", [], {})
