"""The alert-group webhook that Grafana (`version: "1"`) and Alertmanager (`version: "4"`) share.

One delivery carries a group of alerts in mixed states; it fans out into one event per alert,
each with the sender's alert fingerprint (a hash of the alert's labels, so the same for its
firing and its resolve) and its own `status`.

Grouping: the sender's notification group (its `groupKey`) is one incident. Every event of a
group carries `attributes.incident_group`, the group's incident key (`<source>:group:<hash of
receiver and groupKey>`), and, for a group of more than one alert, `attributes.group_title`, a
title for the group as a whole (`hub.storage.incidents.incident_key` keys alert events by it). The source option
`grouping: per_alert` leaves it out: each alert is then its own incident, keyed by its
fingerprint, as before. A group without a `groupKey` (Grafana legacy alerting) is one alert.

Redelivery: neither sender puts an id on a delivery. Its identity is a hash of the groupKey,
the group status and, per alert, the fingerprint, status, startsAt and endsAt: a retry of the
same notification matches; a change in the group (an alert joins, resolves, re-fires) does not.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import BaseModel, Field, model_validator

from connectors import _options
from connectors._lenient import Lenient, LooseInt, NullList, Opt, StrMap, Text, bounded, clip, parse_time, short_hash
from connectors._severity import ALERT_LABEL_MAP, SEV4, map_severity
from connectors.base import InboundSource
from hub.core.events import Kind, Link, NormalisedEvent

DEFAULT_SEVERITY_LABEL = "severity"
DEFAULT_SERVICE_LABELS = ("service", "job")
DEFAULT_ENVIRONMENT_LABELS = ("env", "environment")

OPTIONS: dict[str, _options.OptionKind] = {
    **_options.COMMON_OPTIONS, "severity_label": "text", "service_labels": "text_list",
    "environment_label": "text_list", "grouping": "text",
}
#: Values of the `grouping` source option: the sender's group is one incident, or each alert is.
GROUPINGS = ("group", "per_alert")

_KIND = {"firing": Kind.ALERT_FIRING, "resolved": Kind.ALERT_RESOLVED}
_LINKS = (("generatorURL", "source"), ("dashboardURL", "dashboard"), ("panelURL", "panel"),
          ("silenceURL", "silence"), ("imageURL", "image"))


class Alert(Lenient):
    status: str
    labels: StrMap = Field(default_factory=dict)
    annotations: StrMap = Field(default_factory=dict)
    startsAt: Text = None
    endsAt: Text = None
    generatorURL: Text = None
    fingerprint: Text = None
    # Grafana only
    silenceURL: Text = None
    dashboardURL: Text = None
    panelURL: Text = None
    imageURL: Text = None
    ruleUID: Text = None
    values: Opt[dict[str, Any]] = None
    valueString: Text = None

    @model_validator(mode="after")
    def _identity(self) -> Alert:
        if not (self.fingerprint or "").strip():
            if not self.labels:
                raise ValueError("an alert needs a fingerprint or labels")
            # Same idea as the senders' own fingerprint: a stable hash of the label set.
            self.fingerprint = short_hash(*(f"{k}={v}" for k, v in sorted(self.labels.items())), length=16)
        return self


class AlertGroup(Lenient):
    receiver: Text = None
    status: Text = None
    alerts: NullList[Alert]
    groupLabels: StrMap = Field(default_factory=dict)
    commonLabels: StrMap = Field(default_factory=dict)
    commonAnnotations: StrMap = Field(default_factory=dict)
    externalURL: Text = None
    version: Text = None
    groupKey: Text = None
    truncatedAlerts: LooseInt = 0
    # Grafana only
    orgId: Text = None
    title: Text = None
    state: Text = None
    message: Text = None


def _finite(values: Mapping[str, Any] | None) -> dict[str, Any]:
    """Grafana's per-query values, made safe for JSON (NaN/Inf become text)."""
    out: dict[str, Any] = {}
    for k, v in (values or {}).items():
        if isinstance(v, float) and not math.isfinite(v):
            out[k] = str(v)
        elif v is None or isinstance(v, str | int | float | bool):
            out[k] = v
        else:
            out[k] = json.dumps(v, default=str)[:500]
    return out


def _first_label(labels: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    for name in names:
        value = labels.get(name, "").strip()
        if value:
            return value
    return None


class AlertGroupSource(InboundSource):
    """Validate, identify and fan out an alert group; subclasses only say how it is authenticated."""

    model: ClassVar[type[BaseModel]] = AlertGroup
    options_spec: ClassVar[Mapping[str, _options.OptionKind]] = OPTIONS

    def delivery_id(self, payload: BaseModel, headers: Mapping[str, str], body: bytes) -> str:
        assert isinstance(payload, AlertGroup)
        group = payload.groupKey or json.dumps([payload.receiver, sorted(payload.groupLabels.items())])
        alerts = sorted((a.fingerprint or "", a.status, a.startsAt or "", a.endsAt or "") for a in payload.alerts)
        return short_hash(group, payload.status or "", json.dumps(alerts))

    def check_options(self, options: Any) -> list[str]:
        problems = _options.check_options(options, self.options_spec)
        grouping = options.get("grouping") if isinstance(options, Mapping) else None
        if isinstance(grouping, str) and grouping.strip() and grouping.strip() not in GROUPINGS:
            problems.append(f"grouping: {grouping!r} is not one of {', '.join(GROUPINGS)}")
        return problems

    def freshen(self, data: Any) -> bool:
        """Alert times are what the delivery id is made of: now, as a new firing (or resolve)."""
        if not (isinstance(data, dict) and isinstance(data.get("alerts"), list)):
            return False
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        for alert in data["alerts"]:
            if isinstance(alert, dict):
                alert["endsAt" if alert.get("status") == "resolved" else "startsAt"] = stamp
        return True

    def normalise(self, payload: BaseModel, headers: Mapping[str, str],
                  options: Mapping[str, Any] | None = None) -> list[NormalisedEvent]:
        assert isinstance(payload, AlertGroup)
        opts = options or {}
        severity_label = _options.text(opts, "severity_label", DEFAULT_SEVERITY_LABEL)
        service_labels = _options.text_list(opts, "service_labels", DEFAULT_SERVICE_LABELS)
        env_labels = _options.text_list(opts, "environment_label", DEFAULT_ENVIRONMENT_LABELS)
        events = [self._event(payload, alert, opts, severity_label, service_labels, env_labels)
                  for alert in payload.alerts]
        if payload.groupKey and _options.text(opts, "grouping", "group") != "per_alert":
            group = {"incident_group": f"{self.name}:group:{short_hash(payload.receiver or '', payload.groupKey)}"}
            if len(payload.alerts) > 1:  # a group of one is titled as its alert
                group["group_title"] = self._group_title(payload)
            for event in events:
                event.attributes.update(group)
        return events

    @staticmethod
    def _group_title(group: AlertGroup) -> str:
        """The group as a whole: its common summary, else its group labels (alertname first)."""
        common = (group.commonAnnotations.get("summary") or "").strip()
        if common:
            return clip(common, 300)
        labels = dict(group.groupLabels or group.commonLabels)
        name = labels.pop("alertname", "") or "alerts"
        rest = ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))
        return clip(f"{name} ({rest})" if rest else name, 300)

    def _event(self, group: AlertGroup, alert: Alert, opts: Mapping[str, Any], severity_label: str,
               service_labels: tuple[str, ...], env_labels: tuple[str, ...]) -> NormalisedEvent:
        labels = alert.labels
        status = alert.status.strip().lower()
        kind = _KIND.get(status, Kind.OTHER)
        name = labels.get("alertname", "") or "alert"
        instance = labels.get("instance", "")
        summary_line = alert.annotations.get("summary", "").strip()
        if summary_line:
            title = summary_line if name.lower() in summary_line.lower() else f"{name}: {summary_line}"
        else:
            title = f"{name} on {instance}" if instance else name
        starts, ends = parse_time(alert.startsAt), parse_time(alert.endsAt)
        links = [Link(href=url, text=text) for attr, text in _LINKS if (url := getattr(alert, attr))]
        if runbook := alert.annotations.get("runbook_url"):
            links.insert(1, Link(href=runbook, text="runbook"))
        service = _first_label(labels, service_labels)
        attributes: dict[str, Any] = {
            "alertname": name, "group_key": group.groupKey or "", "receiver": group.receiver or "",
            "group_status": group.status or "", "annotations": dict(alert.annotations),
            "starts_at": starts.isoformat() if starts else None, "ends_at": ends.isoformat() if ends else None,
            "external_url": group.externalURL or "", "truncated_alerts": group.truncatedAlerts or 0,
            "alert_count": len(group.alerts),
        }
        if alert.values is not None or alert.valueString:
            attributes.update(values=_finite(alert.values), value_string=alert.valueString or "")
        if alert.ruleUID:
            attributes["rule_uid"] = alert.ruleUID
        return NormalisedEvent(
            kind=kind, source=self.name, fingerprint=bounded(alert.fingerprint or ""),
            severity=map_severity(labels.get(severity_label), opts, ALERT_LABEL_MAP, SEV4),
            services=[service] if service else [], title=clip(title, 300),
            summary=clip(alert.annotations.get("description") or alert.annotations.get("message") or ""),
            links=links, occurred_at=(ends or starts) if kind == Kind.ALERT_RESOLVED else starts,
            environment=_first_label(labels, env_labels), status=status, labels=dict(labels),
            attributes=attributes,
        )
