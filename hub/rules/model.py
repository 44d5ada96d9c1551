"""The rules file's schema (`hub.yaml`): a catalog of services and teams, and workflows.

Pydantic validates the shape; `hub.rules.loader` adds line numbers and the checks that need
more than one place of the file (a service's team exists, a step only reads earlier steps).
`docs/hub.schema.json` is generated from `HubConfig` (`incident-hub validate --schema`).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, create_model, field_validator, model_validator

from hub.core import registry
from hub.core.events import Severity
from hub.core.ruletypes import Strict, StrList
from hub.core.settings import parse_duration
from hub.rules.flapping import Flapping
from hub.rules.grouping import Grouping
from hub.rules.heartbeats import Heartbeat, check_names
from hub.rules.maintenance import MaintenanceWindow

#: Guard names usable in `unless:` (shorthand for the conditions of the same name).
GUARDS = ("acknowledged", "resolved", "escalated")

STEP_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def _duration(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("not a duration (use e.g. 30s, 5m, 1h)")
    seconds = parse_duration(value)
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def _severity(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip().upper().replace(" ", "")
        if text.isdigit():
            text = "SEV" + text
        return text
    return value


Duration = Annotated[float, BeforeValidator(_duration),
                     Field(json_schema_extra={"type": ["string", "number"], "examples": ["30s", "5m", "1h"]})]
Sev = Annotated[Severity, BeforeValidator(_severity)]


_Strict = Strict


# -- catalog ---------------------------------------------------------------------------------

def _added(place: str) -> dict[str, Any]:
    """The keys the connectors add at `place` (`Connector.catalog_fields`), as pydantic fields."""
    out: dict[str, Any] = {}
    for cls in registry.connector_classes().values():
        for f in cls.catalog_fields:
            if place in f.on:
                out[f.name] = (f.annotation, f.field if f.field is not None else None)
    return out


def _with_connectors(base: type[_Strict], place: str) -> Any:
    """`base` plus the connectors' keys for `place`, under the same name (the schema's)."""
    return create_model(base.__name__.lstrip("_"), __base__=base, __module__=__name__, __doc__=base.__doc__,
                        **_added(place))


class _Contact(_Strict):
    """A person to notify (e.g. the manager on an escalation)."""

    name: str = ""
    email: str = ""


Contact = _with_connectors(_Contact, "contact")


class _EscalationLevel(_Strict):
    """Who is paged at one escalation level."""

    name: str = ""


EscalationLevel = _with_connectors(_EscalationLevel, "level")


class _Team(_Strict):
    description: str = ""
    fallback_pager: bool | None = Field(None, description="when a page dead-letters, page through the other pager "
                                                       "and tell the channel (unset: the catalog's setting)")
    manager: Contact | None = None  # type: ignore[valid-type]
    escalation: list[EscalationLevel] = Field(default_factory=list,  # type: ignore[valid-type]
                                              description="next levels, in order")


Team = _with_connectors(_Team, "team")


class _Service(_Strict):
    description: str = ""
    display_name: str = Field("", description="the public name (status page); default: the catalog name")
    aliases: StrList = Field(default_factory=list,
                             description="names as they appear in tags, labels, repositories and sources' fields")
    team: str | None = None
    fallback_pager: bool | None = Field(None, description="when a page dead-letters, page through the other pager "
                                                       "and tell the channel (unset: the catalog's setting)")
    deploy_quiet: Duration | None = Field(None, description="hold this service's alerts from a deploy's start until "
                                                            "this long after it succeeded (a failure ends it at once)")


Service = _with_connectors(_Service, "service")


class _Catalog(_Strict):
    services: dict[str, Service] = Field(default_factory=dict)  # type: ignore[valid-type]
    teams: dict[str, Team] = Field(default_factory=dict)  # type: ignore[valid-type]
    sources: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per inbound source options: severity_map, severity_label, service_tag, …")
    fallback_pager: bool = Field(True, description="a page that dead-letters pages through the other pager (when "
                                                    "configured) and tells the team channel how to replay it")
    deploy_history: int = Field(20, ge=1, le=500, description="deploys remembered per service and environment")
    deploy_quiet_max: Duration = Field(3600.0, description="the longest a deploy quiet period lasts, status or not")


Catalog = _with_connectors(_Catalog, "catalog")


# -- conditions ------------------------------------------------------------------------------


class SeverityRange(_Strict):
    at_least: Sev | None = None
    at_most: Sev | None = None


Changeable = Literal["severity", "status", "services", "acknowledged", "resolved", "flapping"]


class DeployedWithin(_Strict):
    within: Duration
    environments: StrList = Field(default_factory=list, description="empty: any environment")


#: The connectors that page a person (`Connector.page_action`), in order of preference.
PAGERS = tuple(name for name, cls in sorted(registry.connector_classes().items(),
                                            key=lambda item: (item[1].page_priority, item[0])) if cls.page_action)


class _Condition(_Strict):
    """All given keys must hold (AND). `any`, `all` and `not` combine conditions. No code, no eval."""

    kind: StrList | None = None
    source: StrList | None = None
    severity: Sev | list[Sev] | SeverityRange | None = None
    service: StrList | None = Field(None, description="catalog names or aliases; any affected service matches")
    team: StrList | None = None
    environment: StrList | None = None
    status: StrList | None = Field(None, description="the event's status (e.g. Investigating, firing)")
    labels: dict[str, str | list[str]] | None = Field(
        None, description="label or tag values; `*` globs; a list means any of")
    attributes: dict[str, str | list[str]] | None = Field(
        None, description="source-specific event facts (e.g. postmortem_expected: 'true'); compared as text, `*` globs")
    acknowledged: bool | None = None
    resolved: bool | None = None
    escalated: bool | None = None
    escalation_level: int | None = Field(None, ge=0, description="the incident was escalated at least this far")
    changed: list[Changeable] | Changeable | None = Field(
        None, description="this event changed any of these incident fields")
    exists: StrList | None = Field(
        None, description="dotted paths that must be set, e.g. incident.page_dedup_key")
    pager: Literal[PAGERS] | None = Field(  # type: ignore[valid-type]
        None, description="who pages for the service: the first pager listed here with its own target for the "
                          "service or team (a routing key, responders), else the first configured one")
    configured: StrList | None = Field(None, description="connectors that must be configured (or a mode one declares: "
                                                       "`Connector.modes`, docs/connectors.md)")
    deployed_within: Duration | DeployedWithin | None = None
    any: list[Condition] | None = None
    all: list[Condition] | None = None
    not_: Condition | None = Field(None, alias="not")

    @field_validator("changed")
    @classmethod
    def _changed_list(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v


Condition = _with_connectors(_Condition, "condition")


def _guards(value: Any) -> Any:
    """`unless: acknowledged` / `unless: [acknowledged, resolved]` → a Condition (any of)."""
    names = [value] if isinstance(value, str) else value
    if isinstance(names, list) and all(isinstance(n, str) for n in names):
        bad = [n for n in names if n not in GUARDS]
        if bad:
            raise ValueError(f"unknown guard {bad[0]!r}: use {', '.join(GUARDS)} or a condition")
        return {"any": [{n: True} for n in names]}
    return value


Guard = Annotated[Condition, BeforeValidator(_guards)]

# -- workflows -------------------------------------------------------------------------------

SeverityDurations = dict[Sev, Duration]
#: Incident fields a step may set from its result: the hub's own (`alias` adds a name) and
#: those the connectors declare (`Connector.recorded`, e.g. a ticket key appended to a list).
Recordable = Literal[("page_dedup_key", *registry.recorded_fields(), "escalation_level", "alias")]  # type: ignore[valid-type]
Delay = Duration | SeverityDurations


class Step(_Strict):
    """One action, or a group of actions that fire together (`do:`), optionally later."""

    id: str | None = Field(None, description="unique in the workflow; defaults to the action name")
    action: str | None = Field(None, description="connector.action (a connector's action), or hub.cancel_timers")
    with_: dict[str, Any] = Field(default_factory=dict, alias="with", description="parameters; strings are templates")
    do: list[Step] | None = Field(None, description="actions run together, in order (a group)")
    if_: Condition | None = Field(None, alias="if", description="checked when the workflow runs")
    after: Delay | None = Field(None, description="run this long after the event; per severity: {SEV1: 5m, SEV2: 15m}"
                                                 " (a severity left out: not run)")
    every: Delay | None = Field(None, description="repeat at this interval (while `unless` does not hold)")
    unless: Guard | None = Field(None, description="checked when a delayed step fires: acknowledged, resolved, "
                                                   "escalated or a condition")
    identity: str | None = Field(None, description="steps sharing an identity run once per incident, "
                                                   "whichever workflow gets there first")
    record: dict[Recordable, Any] = Field(
        default_factory=dict, description="incident fields to set when the action succeeds; templates may read "
                                          "`result` (what the action returned) and `params`")

    @field_validator("id", "identity")
    @classmethod
    def _ident(cls, v: str | None) -> str | None:
        if v is not None and not STEP_ID.match(v):
            raise ValueError("use lowercase letters, digits, - and _ (at most 63)")
        return v

    @model_validator(mode="after")
    def _shape(self) -> Step:
        if bool(self.action) == bool(self.do):
            raise ValueError("a step has either `action` (one action) or `do` (a group of actions)")
        if self.do is not None and self.with_:
            raise ValueError("`with` belongs to the actions inside `do`")
        if self.every is not None and self.after is None:
            self.after = self.every
        if self.id is None:
            self.id = (self.action or "group").replace(".", "-").replace("_", "-")
        return self

    @property
    def delayed(self) -> bool:
        return self.after is not None


Scope = Literal["incident", "fingerprint", "event"]


class Workflow(_Strict):
    name: str = Field(description="unique; part of every action's identity, so renaming re-runs its actions")
    description: str = ""
    enabled: bool = True
    on: StrList = Field(description="event kinds, e.g. incident.declared, alert.firing")
    if_: Condition | None = Field(None, alias="if")
    per: Scope = Field("incident", description="what an action's identity is tied to: once per incident episode "
                                               "(default), per event fingerprint, or every event")
    do: list[Step] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not STEP_ID.match(v):
            raise ValueError("use lowercase letters, digits, - and _ (at most 63)")
        return v


class HubConfig(_Strict):
    """The whole rules file."""

    version: Literal[1] = 1
    catalog: Catalog = Field(default_factory=Catalog)
    workflows: list[Workflow] = Field(default_factory=list)
    grouping: Grouping | None = None
    flapping: Flapping | None = Field(
        None, description="an alert that keeps firing and resolving keeps one page open; its resolution is "
                          "held until it stays resolved for the window (docs/rules.md)")

    maintenance: list[MaintenanceWindow] = Field(
        default_factory=list, description="maintenance windows: matching alerts are recorded but page nobody "
                                          "until the window ends (docs/rules.md)")

    heartbeats: dict[str, Heartbeat] = Field(
        default_factory=dict, description="pingers that must check in every interval; silence for interval + "
                                          "grace is a heartbeat.missed event (docs/rules.md)")

    @field_validator("heartbeats")
    @classmethod
    def _heartbeat_names(cls, v: dict[str, Heartbeat]) -> dict[str, Heartbeat]:
        check_names(v)
        return v

    @field_validator("maintenance")
    @classmethod
    def _unique_windows(cls, v: list[MaintenanceWindow]) -> list[MaintenanceWindow]:
        names = [w.name for w in v]
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"maintenance window names must be unique: {', '.join(dupes)}")
        return v

    def all_steps(self) -> list[tuple[Workflow, Step, Step | None]]:
        """Every step, groups flattened: (workflow, step, its group or None)."""
        out: list[tuple[Workflow, Step, Step | None]] = []
        for wf in self.workflows:
            for step in wf.do:
                if step.do:
                    out.extend((wf, sub, step) for sub in step.do)
                else:
                    out.append((wf, step, None))
        return out


_Condition.model_rebuild()
Condition.model_rebuild()
Step.model_rebuild()
