"""Distinct, signed webhooks for every source, built from the recorded fixtures.

Each `Webhook` also carries what the hub will make of it — the source's own parser and
normaliser run here, in the test — so a test derives its expectations (which dedup keys
should page, which incidents should reach Statuspage) from the payloads it sent, not from
hard-coded lists.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from multidict import CIMultiDict

from hub.core.events import NormalisedEvent
from hub.core.registry import sources
from hub.core.settings import Settings
from hub.storage.incidents import incident_key
from tests.conftest import FIXTURES, github_deploy_failure
from tests.reliability.harness import signing_settings

SEVERITY_RANKS = {"Critical": 3, "Major": 2, "Minor": 1}


@cache
def _fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_bytes())


def fixture(name: str) -> Any:
    return copy.deepcopy(_fixture(name))


@dataclass
class Webhook:
    source: str
    body: bytes
    headers: dict[str, str]
    label: str
    events: list[NormalisedEvent] = field(default_factory=list)

    @property
    def keys(self) -> list[str]:
        """The incident key of each normalised event (for alerts: the fingerprint, the page's dedup key)."""
        return [k for k in (incident_key(e) for e in self.events) if k]


@cache
def _settings() -> Settings:
    return signing_settings()


def signed(source: str, data: Any, label: str, headers: dict[str, str] | None = None,
           body: bytes | None = None) -> Webhook:
    """Sign `data` for `source` (fresh delivery ids where the scheme has them) and normalise it."""
    body = body if body is not None else json.dumps(data).encode()
    hdrs = headers if headers is not None else sources()[source].sign_request(body, _settings())
    src = sources()[source]
    ct = hdrs.get("Content-Type", "application/json")
    payload = src.parse(body, CIMultiDict(hdrs), ct)
    return Webhook(source, body, hdrs, label, src.normalise(payload, CIMultiDict(hdrs), {}))


# -- alerts -----------------------------------------------------------------------------------


def datadog_alert(n: int, priority: str = "P1", transition: str = "Triggered", tag: str = "") -> Webhook:
    """Monitor `n` on host web-`n`: a Triggered or Recovered transition (its own Datadog event id)."""
    base = "datadog_alert_triggered.json" if transition == "Triggered" else "datadog_alert_recovered.json"
    data = fixture(base)
    host = f"web-{n}"
    title = f"High CPU on {host}{tag}"
    data.update(
        id=str(7_000_000_000_000_000_000 + n * 10 + (0 if transition == "Triggered" else 1)),
        alert_id=str(50_000_000 + n), alert_scope=f"host:{host}", alert_priority=priority, hostname=host,
        title=f"[{transition}] [{priority}] {title}", alert_title=f"[{transition} on {{host:{host}}}] {title}",
        alert_transition=transition, tags=f"env:prod,host:{host},service:checkout,team:sre")
    return signed("datadog", data, f"datadog {transition.lower()} {n}")


def _alert(template: dict[str, Any], fingerprint: str, name: str, severity: str, status: str,
           labels: dict[str, str] | None = None) -> dict[str, Any]:
    alert = copy.deepcopy(template)
    alert["labels"] = {**alert["labels"], "alertname": name, "severity": severity,
                       "instance": f"{name}:9100", **(labels or {})}
    alert["fingerprint"] = fingerprint
    alert["annotations"] = {**alert["annotations"], "summary": f"{name} is failing"}
    alert["status"] = status
    if status == "resolved":
        alert["endsAt"] = "2024-06-17T09:31:10Z"
    return alert


def grafana_alert(n: int, severity: str = "critical", status: str = "firing",
                  labels: dict[str, str] | None = None) -> Webhook:
    """A Grafana group of one alert, `HighLatency{n}`, firing or resolved."""
    data = fixture("grafana_firing.json")
    name = f"HighLatency{n}"
    data["alerts"] = [_alert(data["alerts"][0], f"{0x6A000000 + n:016x}", name, severity, status, labels)]
    data["status"] = status
    data["groupKey"] = f'{{}}:{{alertname="{name}"}}'
    data["groupLabels"] = {"alertname": name}
    data["commonLabels"] = dict(data["alerts"][0]["labels"])
    return signed("grafana", data, f"grafana {status} {n}")


def alertmanager_group(n: int, severity: str = "critical", status: str = "firing") -> Webhook:
    """An Alertmanager group of two alerts (two pods of deployment `n`), firing or resolved."""
    data = fixture("alertmanager_firing.json")
    name = f"KubePodCrashLooping{n}"
    template = data["alerts"][0]
    data["alerts"] = [_alert(template, f"{0xA7000000 + n * 2 + i:016x}", name, severity, status,
                             {"pod": f"api-{n}-{i}"}) for i in range(2)]
    data["status"] = status
    data["groupKey"] = f'{{}}:{{alertname="{name}"}}'
    data["groupLabels"] = {"alertname": name}
    return signed("alertmanager", data, f"alertmanager {status} {n}")


# -- incidents ---------------------------------------------------------------------------------


def incident_id(n: int) -> str:
    return f"01REL{n:021d}"


def _incident_fields(incident: dict[str, Any], n: int, severity: str) -> None:
    incident["id"] = incident_id(n)
    incident["reference"] = f"INC-{9000 + n}"
    incident["name"] = f"Checkout outage {n}"
    incident["severity"] = {**incident["severity"], "name": severity, "rank": SEVERITY_RANKS[severity]}
    # the fixture links a post-mortem document already, with which no Jira post-mortem is opened;
    # the workload wants the post-mortem path exercised under kills
    incident.pop("postmortem_document_url", None)


def incident_declared(n: int, severity: str = "Critical") -> Webhook:
    data = fixture("incidentio_incident_created.json")
    _incident_fields(data["public_incident.incident_created_v2"], n, severity)
    return signed("incidentio", data, f"incident declared {n}")


def incident_resolved(n: int, severity: str = "Critical") -> Webhook:
    data = fixture("incidentio_incident_status_updated.json")
    _incident_fields(data["public_incident.incident_status_updated_v2"]["incident"], n, severity)
    return signed("incidentio", data, f"incident resolved {n}")


def followup(n: int, incident: int) -> Webhook:
    data = fixture("incidentio_followup_created.json")
    body = data["public_incident.follow_up_created_v2"]
    body["id"] = f"01FUP{n:021d}"
    body["incident_id"] = incident_id(incident)
    body["title"] = f"Follow-up {n} of incident {incident}"
    return signed("incidentio", data, f"follow-up {n}")


def deploy_failed(n: int | str) -> Webhook:
    body, headers = github_deploy_failure(f"reliability-{n}")
    return signed("github", None, f"deploy failed {n}", headers=headers, body=body)
