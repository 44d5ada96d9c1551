"""The normalised event: what every inbound source is turned into before rules see it."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field


class Severity(StrEnum):
    SEV1 = "SEV1"
    SEV2 = "SEV2"
    SEV3 = "SEV3"
    SEV4 = "SEV4"

    @property
    def rank(self) -> int:
        """1 is the most severe; `a.rank <= b.rank` means a is at least as severe as b."""
        return int(self.value[-1])

    def at_least(self, other: Severity) -> bool:
        return self.rank <= other.rank


class Kind(StrEnum):
    ALERT_FIRING = "alert.firing"
    ALERT_RESOLVED = "alert.resolved"
    INCIDENT_DECLARED = "incident.declared"
    INCIDENT_UPDATED = "incident.updated"
    INCIDENT_STATUS_CHANGED = "incident.status_changed"
    INCIDENT_RESOLVED = "incident.resolved"
    INCIDENT_STORM_SUMMARY = "incident.storm_summary"
    FOLLOWUP_CREATED = "followup.created"
    DEPLOY_STARTED = "deploy.started"
    DEPLOY_SUCCEEDED = "deploy.succeeded"
    DEPLOY_FAILED = "deploy.failed"
    PAGE_ACKNOWLEDGED = "page.acknowledged"
    PAGE_RESOLVED = "page.resolved"
    HEARTBEAT_MISSED = "heartbeat.missed"
    HEARTBEAT_RECOVERED = "heartbeat.recovered"
    PING = "ping"
    OTHER = "other"


class Link(BaseModel):
    href: str
    text: str = ""


class NormalisedEvent(BaseModel):
    """One thing that happened, in the hub's own terms.

    `fingerprint` is stable across an alert's firing and its resolve (and across an
    incident's updates), so it doubles as the dedup key for pages and the key of the
    per-incident record.
    """

    kind: str
    source: str
    fingerprint: str
    severity: Severity | None = None
    services: list[str] = Field(default_factory=list)
    title: str = ""
    summary: str = ""
    links: list[Link] = Field(default_factory=list)
    occurred_at: datetime | None = None
    environment: str | None = None
    status: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    attributes: dict[str, Any] = Field(default_factory=dict)
    """Source-specific facts rules may use (deploy sha, an incident tool's status category, …)."""
