"""`grouping:` in hub.yaml: which alerts of different sources are one incident (issue 12).

```yaml
grouping:
  by: [service, environment]     # normalised event fields, or labels.<name>
  window: 5m                     # an incident opened within this long ago (or still open) is joined
  defer: 2m                      # alert-born incidents wait this long before paging (default 0)
```

`defer` (`deferred`) turns every immediate step of the workflows that listen only on alert
kinds (`alert-page` in the built-in rules) into a timer of that delay: a durable timer like any
`after:` step, which does nothing when the incident is resolved by the time it fires (the
timer's record says "not needed: the incident is resolved"), so a blip pages nobody.

`values(event)` is what an alert is correlated by: the catalog service (aliases resolved, so a
service tag of one source and a service label of another agree), the
environment, the source, the severity, or a label; case-folded. An alert missing any of
them is not correlated. The join itself is `hub.worker.grouping`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, field_validator

from hub.core.events import NormalisedEvent
from hub.core.ruletypes import Strict
from hub.core.settings import parse_duration
from hub.storage.storm import StormPolicy

#: Normalised fields `by` may name (besides `labels.<name>`).
FIELDS = ("service", "environment", "source", "severity")


def _duration(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("not a duration (use e.g. 30s, 5m, 1h)")
    seconds = parse_duration(value)
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


Seconds = Annotated[float, BeforeValidator(_duration),
                    Field(json_schema_extra={"type": ["string", "number"], "examples": ["5m", "300s"]})]


class Grouping(Strict):
    """Correlation across sources: alerts with the same `by` values join one open incident."""

    by: list[str] = Field(default_factory=list, description="normalised fields (service, environment, source, "
                                                            "severity) or labels.<name>; none: no correlation")
    window: Seconds = Field(300.0, description="an incident opened within this window, or still open, is joined")
    defer: Seconds = Field(0.0, description="alert-born incidents wait this long before their alert "
                                            "workflows act (nothing happens when resolved by then)")
    storm_threshold: int = Field(10, ge=1, description="more alerts than this joining one incident within a "
                                                       "minute is a storm: no per-alert messages, a summary "
                                                       "every summary_interval instead")
    summary_interval: Seconds = Field(300.0, description="a storming incident's summary (incident.storm_summary) "
                                                         "is sent at most this often")

    def storm_policy(self) -> StormPolicy:
        return StormPolicy(threshold=self.storm_threshold, interval_ms=int(max(self.summary_interval, 1) * 1000))

    @field_validator("by")
    @classmethod
    def _known(cls, by: list[str]) -> list[str]:
        for name in by:
            if name not in FIELDS and not (name.startswith("labels.") and len(name) > len("labels.")):
                raise ValueError(f"{name!r}: use one of {', '.join(FIELDS)} or labels.<name>")
        return by


def values(grouping: Grouping, event: NormalisedEvent,
           canonical: Callable[[list[str]], list[str]]) -> list[str] | None:
    """The event's values for `grouping.by` (None when one is missing: not correlated)."""
    out: list[str] = []
    for name in grouping.by:
        value: str | None
        if name == "service":
            names = canonical(list(event.services)) or list(event.services)
            value = names[0] if names else None
        elif name == "environment":
            value = event.environment
        elif name == "source":
            value = event.source
        elif name == "severity":
            value = event.severity.value if event.severity else None
        else:
            value = event.labels.get(name.removeprefix("labels."))
        if not value or not str(value).strip():
            return None
        out.append(f"{name}={str(value).strip().casefold()}")
    return out


#: Kinds that are alerts for grouping's purposes: a missed heartbeat pages like an alert.
_ALERT_LIKE = ("alert.", "heartbeat.")


def _alert_only(wf: Any) -> bool:
    return bool(wf.on) and all(str(kind).startswith(_ALERT_LIKE) for kind in wf.on) and "alert.firing" in wf.on


def deferred(workflows: list[Any], defer: float) -> list[Any]:
    """The workflows with `defer` applied: the immediate steps of alert-only workflows wait `defer`."""
    if not defer:
        return workflows
    out = []
    for wf in workflows:
        if _alert_only(wf):
            wf = wf.model_copy(update={"do": [step if step.after is not None else
                                              step.model_copy(update={"after": defer}) for step in wf.do]})
        out.append(wf)
    return out


def is_deferred(grouping: Grouping | None, workflow: Any) -> bool:
    """Whether `defer` made this workflow's steps wait (what a skipped timer is counted as)."""
    return bool(grouping is not None and grouping.defer and _alert_only(workflow))
