"""The hub's own `incident.storm_summary` events (issue 12): what joined a storming incident.

The sweeper (`hub.worker.storm`) records one per `summary_interval` while alerts keep joining
an incident faster than `grouping.storm_threshold` a minute; it goes through the workflows like
any event (the built-in `storm-summary` workflow tells the channel and the incident tool).
Attributes: ``count`` (alerts that joined since the last summary), ``top_labels`` (the most
common label values among them: ``[{"label", "value", "count"}]``) and ``top`` (the same as text,
``name=value (count), …``). Values are the senders' text: templates escape them where they land.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from hub.core.events import Kind, NormalisedEvent, Severity

SOURCE = "storm"
#: Label values named in a summary.
TOP = 5


class StormBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    incident: str
    seq: int
    count: int
    top_labels: list[dict[str, Any]]
    title: str = ""
    severity: Severity | None = None
    services: list[str] = []


def top_labels(label_sets: list[dict[str, str]], limit: int = TOP) -> list[dict[str, Any]]:
    """The most common label values among these alerts (ties: by name, then value)."""
    counts: dict[tuple[str, str], int] = {}
    for labels in label_sets:
        for name, value in labels.items():
            counts[(name, str(value))] = counts.get((name, str(value)), 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [{"label": n, "value": v, "count": c} for (n, v), c in ranked[:limit]]


def event_body(incident: str, seq: int, count: int, tops: list[dict[str, Any]], state: Mapping[str, Any]) -> bytes:
    return json.dumps({"incident": incident, "seq": seq, "count": count, "top_labels": tops,
                       "title": state.get("title") or "", "severity": state.get("severity"),
                       "services": state.get("services") or []}, separators=(",", ":")).encode()


class StormSource:
    """The `storm` events, parsed and normalised (for the planner)."""

    name = SOURCE

    def parse(self, body: bytes, headers: Mapping[str, str], content_type: str) -> StormBody:
        return StormBody.model_validate_json(body)

    def normalise(self, payload: Any, headers: Mapping[str, str],
                  options: Mapping[str, Any] | None = None) -> list[NormalisedEvent]:
        p: StormBody = payload
        top = ", ".join(f"{t['label']}={t['value']} ({t['count']})" for t in p.top_labels) or "none"
        return [NormalisedEvent(kind=Kind.INCIDENT_STORM_SUMMARY, source=SOURCE, fingerprint=p.incident,
                                severity=p.severity, services=p.services, title=p.title,
                                summary=f"{p.count} more alerts joined: top labels {top}",
                                attributes={"count": p.count, "top_labels": p.top_labels, "top": top,
                                            "seq": p.seq})]

    def guess_headers(self, body: bytes) -> dict[str, str]:
        return {}
