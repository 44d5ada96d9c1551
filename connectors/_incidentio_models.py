"""incident.io webhook payloads, as the hub reads them (lenient: unknown or odd fields are ignored).

Kept apart from `connectors/incidentio.py` so that module stays one readable size; the
leading underscore keeps the registry from taking this for a connector.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, PrivateAttr, model_validator

from connectors._lenient import Lenient, LooseInt, Opt, SoftList, Text
from hub.core.events import Kind


class IncidentStatus(Lenient):
    id: Text = None
    name: Text = None
    category: Text = None
    rank: LooseInt = None


class IncidentSeverity(Lenient):
    id: Text = None
    name: Text = None
    rank: LooseInt = None


class _Named(Lenient):
    id: Text = None
    name: Text = None
    email: Text = None


class _OptionValue(Lenient):
    value: Text = None


class CustomFieldValue(Lenient):
    value_option: Opt[_OptionValue] = None
    value_catalog_entry: Opt[_Named] = None
    value_text: Text = None
    value_link: Text = None
    value_numeric: Text = None


class CustomField(Lenient):
    id: Text = None
    name: Text = None


class CustomFieldEntry(Lenient):
    custom_field: Opt[CustomField] = None
    values: SoftList[CustomFieldValue] = Field(default_factory=list)


class ExternalIssue(Lenient):
    issue_name: Text = None
    issue_permalink: Text = None
    provider: Text = None


class Incident(Lenient):
    id: str
    name: Text = None
    reference: Text = None
    summary: Text = None
    permalink: Text = None
    mode: Text = None
    visibility: Text = None
    created_at: Text = None
    updated_at: Text = None
    incident_status: Opt[IncidentStatus] = None
    severity: Opt[IncidentSeverity] = None
    incident_type: Opt[_Named] = None
    custom_field_entries: SoftList[CustomFieldEntry] = Field(default_factory=list)
    external_issue_reference: Opt[ExternalIssue] = None
    slack_channel_id: Text = None
    slack_channel_url: Text = None
    call_url: Text = None
    postmortem_document_url: Text = None


class IncidentStatusUpdate(Lenient):
    incident: Incident
    message: Text = None
    new_status: Opt[IncidentStatus] = None
    previous_status: Opt[IncidentStatus] = None


class FollowUp(Lenient):
    id: str
    incident_id: str
    title: Text = None
    description: Text = None
    status: Text = None
    created_at: Text = None
    priority: Opt[IncidentSeverity] = None
    assignee: Opt[_Named] = None
    labels: SoftList[Text] = Field(default_factory=list)
    external_issue_reference: Opt[ExternalIssue] = None

    @model_validator(mode="before")
    @classmethod
    def _unwrap(cls, data: Any) -> Any:
        # [inferred] a v1 body may wrap the follow-up as {"follow_up": {...}}.
        if isinstance(data, dict) and "id" not in data and isinstance(data.get("follow_up"), dict):
            return data["follow_up"]
        return data


class PrivateRef(Lenient):
    id: str


class IncidentIOWebhook(Lenient):
    """The envelope `{"event_type": T, T: {...}}`, with the payload parsed for the types the hub uses."""

    event_type: str
    #: Set by `validate`, never from the body (a body key of the same name is ignored).
    _payload: Incident | IncidentStatusUpdate | FollowUp | PrivateRef | None = PrivateAttr(default=None)

    @property
    def payload(self) -> Incident | IncidentStatusUpdate | FollowUp | PrivateRef | None:
        return self._payload


_PAYLOAD_MODELS: dict[Kind, type[Lenient]] = {
    Kind.INCIDENT_DECLARED: Incident, Kind.INCIDENT_UPDATED: Incident,
    Kind.INCIDENT_STATUS_CHANGED: IncidentStatusUpdate, Kind.FOLLOWUP_CREATED: FollowUp,
}
