"""incidentio: inbound webhooks (section 1) and outbound API actions (section 2).

Inbound: Standard Webhooks (`webhook-id`/`-timestamp`/`-signature`, or the `svix-*` names)
with `whsec_` secret(s) from `INCIDENTIO_WEBHOOK_SECRET`, timestamp within
`HUB_TIMESTAMP_TOLERANCE`. Delivery id = `webhook-id` (Svix keeps it across retries).
`public_incident.incident_created_v2` → `incident.declared`, `incident_updated_v2` →
`incident.updated`, `incident_status_updated_v2` → `incident.status_changed` or
`incident.resolved` (see `IncidentIOSource`), `follow_up_created_v1/v2` → `followup.created`;
`private_incident.*` twins (body `{"id"}` only) → the same kinds with
`attributes["needs_lookup"]=True`; any other type → no events. Fingerprint
`incidentio:<incident id>` (follow-ups: `incidentio:followup:<id>` with
`attributes["incident_id"]`).
Catalog options (all optional): `severity_map` (severity name → SEV1..SEV4, e.g.
`{"Critical": "SEV1"}`; default Critical→SEV1, Major→SEV2, Minor→SEV3, other names by rank),
`severity_top_rank` (the rank of the most severe level, default 3: rank 3 → SEV1, 2 → SEV2,
1 → SEV3, lower → SEV4), `default_severity` (no severity yet; default none),
`services_field` (custom field naming the affected services, default `Affected services`).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from pydantic import BaseModel, ValidationError

from connectors import _options
from connectors._incidentio_models import (
    _PAYLOAD_MODELS,
    CustomFieldEntry,
    FollowUp,
    Incident,
    IncidentIOWebhook,
    IncidentSeverity,
    IncidentStatus,
    IncidentStatusUpdate,
    PrivateRef,
)
from connectors._lenient import bounded, clip, parse_time
from connectors._severity import INCIDENTIO_NAME_MAP, default_severity, lookup_severity, severity_by_rank
from connectors.base import (
    ActionCall,
    BadPayload,
    Connector,
    InboundSource,
    Outcome,
    Record,
    RetryPolicy,
    Setting,
    summarise_validation,
)
from hub.core.events import Kind, Link, NormalisedEvent
from hub.ingress.verify import first_credential, sign_standard_webhook, standard_webhook_key, verify_standard_webhook

if TYPE_CHECKING:
    from hub.core.settings import Settings

# --- inbound -------------------------------------------------------------------------------

#: Event types and the kind each becomes; `private_incident.*` twins carry only `{"id"}`.
INCIDENTIO_EVENTS: dict[str, Kind] = {
    "incident_created_v2": Kind.INCIDENT_DECLARED,
    "incident_updated_v2": Kind.INCIDENT_UPDATED,
    "incident_status_updated_v2": Kind.INCIDENT_STATUS_CHANGED,
    "follow_up_created_v1": Kind.FOLLOWUP_CREATED,
    "follow_up_created_v2": Kind.FOLLOWUP_CREATED,
}
#: Status categories in which the incident is still being worked on.
OPEN_CATEGORIES = frozenset({"triage", "live", "paused"})
#: Closing categories and whether a post-mortem is expected after them.
CLOSING_CATEGORIES: dict[str, bool] = {"closed": True, "resolved": True, "learning": True,
                                       "canceled": False, "cancelled": False, "declined": False, "merged": False}
DEFAULT_SERVICES_FIELD = "Affected services"
DEFAULT_TOP_RANK = 3
INCIDENTIO_OPTIONS: dict[str, _options.OptionKind] = {
    **_options.COMMON_OPTIONS, "services_field": "text", "severity_top_rank": "int"}


def _event_kind(event_type: str) -> tuple[Kind | None, bool]:
    """(kind, private) for an event type; kind None for types the hub does not act on."""
    scope, _, action = event_type.partition(".")
    kind = INCIDENTIO_EVENTS.get(action)
    if kind is None:
        return None, False
    if scope == "public_incident":
        return kind, False
    if scope.startswith("private_"):
        return kind, True
    return None, False


def _services(entries: list[CustomFieldEntry], field_name: str) -> list[str]:
    wanted = field_name.casefold()
    out: list[str] = []
    for entry in entries:
        if not entry.custom_field or (entry.custom_field.name or "").strip().casefold() != wanted:
            continue
        for v in entry.values:
            names = [v.value_option.value if v.value_option else None,
                     v.value_catalog_entry.name if v.value_catalog_entry else None, v.value_link]
            names += (v.value_text or "").split(",")
            for name in names:
                if name and name.strip() and name.strip() not in out:
                    out.append(name.strip())
    return out


class IncidentIOSource(InboundSource):
    """incident.io webhooks (Standard Webhooks, delivered by Svix).

    Status changes: `incident_status_updated_v2` becomes `incident.resolved` when the incident
    moves from an open category (triage, live, paused) into a closing one: `closed`,
    `resolved` and `learning` (the post-incident phase: impact is over) with
    `attributes["postmortem_expected"]=True`, or `canceled`, `declined`, `merged` (not a real
    incident, or tracked elsewhere) with `postmortem_expected=False`; `attributes["resolution"]`
    names the category. Moving between closing categories (learning → closed) is an
    `incident.status_changed`, so an incident is resolved once.
    """

    name = "incidentio"
    recorded_headers = ("webhook-id", "webhook-timestamp", "svix-id", "svix-timestamp", "User-Agent")
    credential_settings = ("incidentio_webhook_secret",)
    #: Standard Webhooks secrets: each must hold a key (checked at start).
    variables = (Setting("INCIDENTIO_WEBHOOK_SECRET", secret=True, rotating=True, check=standard_webhook_key),)
    model = IncidentIOWebhook

    def verify(self, body: bytes, headers: Mapping[str, str], settings: Settings) -> str:
        verify_standard_webhook(settings.incidentio_webhook_secret, headers, body, settings.hub_timestamp_tolerance,
                                variable="INCIDENTIO_WEBHOOK_SECRET")
        return "standard-webhooks (webhook-signature)"

    def validate(self, data: Any, headers: Mapping[str, str]) -> BaseModel:
        envelope = super().validate(data, headers)
        assert isinstance(envelope, IncidentIOWebhook)
        kind, private = _event_kind(envelope.event_type)
        if kind is None:
            return envelope  # recorded, normalised to no events
        model = PrivateRef if private else _PAYLOAD_MODELS[kind]
        try:
            envelope._payload = model.model_validate(data.get(envelope.event_type))
        except ValidationError as e:
            raise BadPayload("invalid_payload", f"not an incidentio {envelope.event_type} webhook: "
                                                f"{envelope.event_type}.{summarise_validation(e)}") from None
        return envelope

    def delivery_id(self, payload: BaseModel, headers: Mapping[str, str], body: bytes) -> str:
        msg_id = (headers.get("webhook-id") or headers.get("svix-id") or "").strip()
        if not msg_id:
            raise BadPayload("missing_delivery", "webhook-id header missing")
        return msg_id[:200]

    def check_options(self, options: Any) -> list[str]:
        return _options.check_options(options, INCIDENTIO_OPTIONS)

    def normalise(self, payload: BaseModel, headers: Mapping[str, str],
                  options: Mapping[str, Any] | None = None) -> list[NormalisedEvent]:
        assert isinstance(payload, IncidentIOWebhook)
        opts = options or {}
        kind, _ = _event_kind(payload.event_type)
        body = payload.payload
        if kind is None or body is None:
            return []
        attrs: dict[str, Any] = {"event_type": payload.event_type}
        if isinstance(body, PrivateRef):
            return [self._private(kind, body.id, attrs)]
        if isinstance(body, FollowUp):
            return [self._follow_up(body, attrs)]
        if isinstance(body, IncidentStatusUpdate):
            kind = self._status_change(body, attrs)
            incident, at, status = body.incident, body.incident.updated_at, body.new_status
        else:
            assert isinstance(body, Incident)
            incident = body
            at = incident.created_at if kind == Kind.INCIDENT_DECLARED else incident.updated_at
            status = incident.incident_status
        return [self._incident(kind, incident, status, at, attrs, opts)]

    @staticmethod
    def _status_change(update: IncidentStatusUpdate, attrs: dict[str, Any]) -> Kind:
        new = update.new_status or update.incident.incident_status or IncidentStatus()
        prev = update.previous_status or IncidentStatus()
        new_cat, prev_cat = (new.category or "").lower(), (prev.category or "").lower()
        attrs.update(previous_status=prev.name, previous_status_category=prev_cat or None, message=update.message,
                     left_triage=prev_cat == "triage" and new_cat not in ("", "triage"))
        if new_cat in CLOSING_CATEGORIES and prev_cat not in CLOSING_CATEGORIES:
            attrs.update(resolution="resolved" if CLOSING_CATEGORIES[new_cat] else new_cat,
                         postmortem_expected=CLOSING_CATEGORIES[new_cat])
            return Kind.INCIDENT_RESOLVED
        return Kind.INCIDENT_STATUS_CHANGED

    def _incident(self, kind: Kind, inc: Incident, status: IncidentStatus | None, at: str | None,
                  attrs: dict[str, Any], opts: Mapping[str, Any]) -> NormalisedEvent:
        status = status or inc.incident_status or IncidentStatus()
        sev = inc.severity or IncidentSeverity()
        links = [Link(href=url, text=text) for url, text in (
            (inc.permalink, "incident.io"), (inc.slack_channel_url, "Slack channel"), (inc.call_url, "call"),
            (inc.postmortem_document_url, "post-mortem")) if url]
        issue = inc.external_issue_reference
        if issue and issue.issue_permalink:
            links.append(Link(href=issue.issue_permalink, text=issue.issue_name or "issue"))
        top_rank = _options.integer(opts, "severity_top_rank", DEFAULT_TOP_RANK)
        severity = (lookup_severity(sev.name, opts, INCIDENTIO_NAME_MAP) or severity_by_rank(sev.rank, top_rank)
                    or default_severity(opts, None))
        name = inc.name or ""
        attrs.update(
            incident_id=inc.id, reference=inc.reference, status_category=(status.category or "").lower() or None,
            status_id=status.id, severity_name=sev.name, severity_rank=sev.rank, mode=inc.mode,
            visibility=inc.visibility, incident_type=inc.incident_type.name if inc.incident_type else None,
            slack_channel_id=inc.slack_channel_id, retrospective=(inc.mode or "") == "retrospective",
            external_issue={"name": issue.issue_name, "url": issue.issue_permalink, "provider": issue.provider}
            if issue else None)
        return NormalisedEvent(
            kind=kind, source=self.name, fingerprint=bounded(f"incidentio:{inc.id}"), severity=severity,
            services=_services(inc.custom_field_entries, _options.text(opts, "services_field", DEFAULT_SERVICES_FIELD)),
            title=clip(f"{inc.reference}: {name}" if inc.reference and name else name or inc.reference or inc.id, 300),
            summary=clip(inc.summary), links=links, occurred_at=parse_time(at), status=status.name, attributes=attrs)

    def _follow_up(self, fu: FollowUp, attrs: dict[str, Any]) -> NormalisedEvent:
        issue = fu.external_issue_reference
        attrs.update(incident_id=fu.incident_id, followup_id=fu.id, priority=fu.priority.name if fu.priority else None,
                     assignee=fu.assignee.name if fu.assignee else None,
                     assignee_email=fu.assignee.email if fu.assignee else None,
                     labels=[label for label in fu.labels if label], status=fu.status,
                     external_issue={"name": issue.issue_name, "url": issue.issue_permalink} if issue else None)
        return NormalisedEvent(
            kind=Kind.FOLLOWUP_CREATED, source=self.name, fingerprint=bounded(f"incidentio:followup:{fu.id}"),
            title=clip(fu.title or f"Follow-up {fu.id}", 300), summary=clip(fu.description), status=fu.status,
            occurred_at=parse_time(fu.created_at),
            links=[Link(href=issue.issue_permalink, text=issue.issue_name or "issue")]
            if issue and issue.issue_permalink else [],
            attributes=attrs)

    def _private(self, kind: Kind, ref_id: str, attrs: dict[str, Any]) -> NormalisedEvent:
        """Private events carry only an id: the rest must be fetched with the API (`needs_lookup`)."""
        attrs.update(needs_lookup=True, visibility="private")
        if kind == Kind.FOLLOWUP_CREATED:
            attrs.update(followup_id=ref_id, incident_id=None)
            fingerprint, title = f"incidentio:followup:{ref_id}", f"Private follow-up {ref_id}"
        else:
            attrs["incident_id"] = ref_id
            fingerprint, title = f"incidentio:{ref_id}", f"Private incident {ref_id}"
        return NormalisedEvent(kind=kind, source=self.name, fingerprint=bounded(fingerprint), title=title,
                               attributes=attrs)

    def sign_request(self, body: bytes, settings: Settings, now: float | None = None, *,
                     same_id: bool = False) -> dict[str, str]:
        """The message id is inside the signature: with `same_id` it is chosen from the body."""
        secret = first_credential(settings.incidentio_webhook_secret, "INCIDENTIO_WEBHOOK_SECRET")
        msg_id = f"msg_{hashlib.sha256(body).hexdigest()[:27]}" if same_id else f"msg_{uuid.uuid4().hex}"
        ts = int(time.time() if now is None else now)
        return {"Content-Type": "application/json", "webhook-id": msg_id, "webhook-timestamp": str(ts),
                "webhook-signature": sign_standard_webhook(secret, msg_id, ts, body)}


source = IncidentIOSource()


# --- outbound ------------------------------------------------------------------------------


SEV_INDEX = {"SEV1": 0, "SEV2": 1, "SEV3": 2, "SEV4": 3}
NAME_MAX = 255
TITLE_MAX = 255


class IncidentIO(Connector):
    """incident.io API (`INCIDENTIO_API_URL`, `Authorization: Bearer <INCIDENTIO_API_KEY>`):
    actions `create_incident`, `update`, `add_note`.

    - `create_incident` → `POST /v2/incidents`. Params: name, summary, severity (a name such
      as "Critical", or SEV1..SEV4 mapped by rank: the highest-ranked severity is SEV1),
      severity_id, visibility (public|private, default public), mode (default standard),
      incident_type_id, incident_status_id, idempotency_key. Severities come from
      `GET /v1/severities`, cached per process for `catalog_ttl` seconds. An unknown severity
      does not block the incident: it is created without one and the result says so
      (`severity_warning`).
    - `update` → `POST /v2/incidents/{id}/actions/edit` with `{"incident": {…},
      "notify_incident_channel": …}`. Params: incident_id (required), name, summary,
      severity, severity_id, status (a status name, or a category such as `closed`, resolved
      via `GET /v1/incident_statuses`), incident_status_id, notify_incident_channel
      (default false).
    - `add_note` → `POST /v2/incident_timeline_items`. Params: incident_id, message (the
      item's markdown description), title (default: the message's first line), timestamp
      (default: now). CONTRACTS.md documents no endpoint for notes; this one is in
      incident.io's published OpenAPI spec (incident-io/sdk-python `openapi.json`,
      "Incident Timeline Items V2#Create", scope `timeline_items.create`): a custom item on
      the incident's timeline, deduplicated by its own `idempotency_key`. It was chosen over
      rewriting the incident summary via the edit endpoint, which would overwrite what
      responders wrote and is not idempotent. An API key without that scope gets a 403,
      which is dead-lettered with the body kept.

    Idempotency: `idempotency_key` (default: the action's idempotency key) on create and on
    timeline items: a repeat returns what the first request created. Edits set values, so
    repeating one changes nothing.

    Result keys: `create_incident` → `incident_id`, `incident_reference`, `incident_url`
    (and `severity_warning` when the severity was not found); `update` → `incident_id`;
    `add_note` → `incident_id`, `timeline_item_id`.
    """

    name = "incidentio"
    default_rate_limit = "20/s"
    variables = (Setting("INCIDENTIO_API_KEY", secret=True), Setting("INCIDENTIO_API_URL", "https://api.incident.io"))
    action_names = frozenset({"create_incident", "update", "add_note"})
    superseded_by_resolution = frozenset({"create_incident"})
    recorded = {"incidentio_id": Record(links_source="incidentio")}
    retry_policy = RetryPolicy(max_attempts=8, base_delay=1.0, max_delay=60.0, deadline=6 * 3600)
    #: Seconds a severity or status list is reused before it is fetched again.
    catalog_ttl: float = 300.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._catalog: dict[str, tuple[float, list[dict[str, Any]]]] = {}
        self._catalog_lock = asyncio.Lock()

    def missing_config(self, params: Mapping[str, Any] | None = None) -> str | None:
        return None if self.settings.incidentio_api_key else "incidentio not configured (INCIDENTIO_API_KEY)"

    def secrets(self, params: Mapping[str, Any] | None = None) -> list[str]:
        return [self.settings.incidentio_api_key] if self.settings.incidentio_api_key else []

    def describe_target(self, params: Mapping[str, Any], mask: Callable[[str], str]) -> str:
        return "incident.io" + ("" if self.settings.incidentio_api_key else ": not configured (INCIDENTIO_API_KEY)")

    def rate_limit_key(self, call: ActionCall) -> str | None:
        return f"incidentio:{self.settings.incidentio_api_key}"

    def _url(self, path: str) -> str:
        return self.settings.incidentio_api_url.rstrip("/") + path

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.incidentio_api_key}"}

    # -- catalog (severities, statuses) ---------------------------------------------------------

    async def _list(self, path: str, field: str) -> tuple[Outcome, list[dict[str, Any]]]:
        async with self._catalog_lock:
            cached = self._catalog.get(path)
            if cached and cached[0] > time.monotonic():
                return Outcome("succeeded"), cached[1]
            outcome, data = await self.request("GET", self._url(path), headers=self._headers())
            if not outcome.ok:
                outcome.detail = f"listing {path}: {outcome.detail}"
                return outcome, []
            items = [i for i in (data or {}).get(field) or [] if isinstance(i, dict) and i.get("id")]
            self._catalog[path] = (time.monotonic() + self.catalog_ttl, items)
            return outcome, items

    async def _severity_id(self, value: Any) -> tuple[Outcome, str | None]:
        """The severity id for a name, an id, or SEV1..SEV4 (by rank, highest first)."""
        outcome, severities = await self._list("/v1/severities", "severities")
        if not outcome.ok:
            return outcome, None
        wanted = str(value).strip()
        for sev in severities:
            if wanted in (sev["id"],) or wanted.lower() == str(sev.get("name", "")).lower():
                return outcome, sev["id"]
        if wanted.upper() in SEV_INDEX and severities:
            ranked = sorted(severities, key=lambda s: s.get("rank", 0), reverse=True)
            return outcome, ranked[min(SEV_INDEX[wanted.upper()], len(ranked) - 1)]["id"]
        return outcome, None

    async def _status_id(self, value: Any) -> tuple[Outcome, str | None]:
        """The incident status id for a status name, an id or a category (lowest rank first)."""
        outcome, statuses = await self._list("/v1/incident_statuses", "incident_statuses")
        if not outcome.ok:
            return outcome, None
        wanted = str(value).strip().lower()
        for st in statuses:
            if wanted in (str(st["id"]).lower(), str(st.get("name", "")).lower()):
                return outcome, st["id"]
        in_category = [s for s in statuses if str(s.get("category", "")).lower() == wanted]
        if in_category:
            return outcome, min(in_category, key=lambda s: s.get("rank", 0))["id"]
        return outcome, None

    # -- actions --------------------------------------------------------------------------------

    async def create_incident(self, call: ActionCall) -> Outcome:
        p = call.params
        body: dict[str, Any] = {"idempotency_key": str(p.get("idempotency_key") or call.idempotency_key),
                                "visibility": str(p.get("visibility") or "public"),
                                "mode": str(p.get("mode") or "standard")}
        if p.get("name") or p.get("title"):
            body["name"] = str(p.get("name") or p.get("title"))[:NAME_MAX]
        if p.get("summary"):
            body["summary"] = str(p["summary"])
        for opt in ("severity_id", "incident_type_id", "incident_status_id", "slack_channel_name_override"):
            if p.get(opt):
                body[opt] = str(p[opt])
        warning = None
        if p.get("severity") and "severity_id" not in body:
            outcome, severity_id = await self._severity_id(p["severity"])
            if not outcome.ok:
                return outcome
            if severity_id:
                body["severity_id"] = severity_id
            else:
                warning = f"no incident.io severity matches {p['severity']!r}; created without one"
        outcome, data = await self.request("POST", self._url("/v2/incidents"), json_body=body,
                                           headers=self._headers())
        if outcome.ok:
            incident = (data or {}).get("incident") if isinstance(data, dict) else None
            if not isinstance(incident, dict) or not incident.get("id"):
                return Outcome("retryable", outcome.status, detail="incident.io answered without an incident id",
                               response=outcome.response, ambiguous=True)
            outcome.result = {"incident_id": incident["id"], "incident_reference": incident.get("reference"),
                              "incident_url": incident.get("permalink")}
            if warning:
                outcome.result["severity_warning"] = warning
        return outcome

    async def update(self, call: ActionCall) -> Outcome:
        p = call.params
        incident_id = p.get("incident_id")
        if not incident_id:
            return Outcome("permanent", detail="incidentio update needs an incident_id")
        fields: dict[str, Any] = {}
        if p.get("name"):
            fields["name"] = str(p["name"])[:NAME_MAX]
        if p.get("summary"):
            fields["summary"] = str(p["summary"])
        for opt in ("severity_id", "incident_status_id"):
            if p.get(opt):
                fields[opt] = str(p[opt])
        if p.get("severity") and "severity_id" not in fields:
            outcome, severity_id = await self._severity_id(p["severity"])
            if not outcome.ok:
                return outcome
            if not severity_id:
                return Outcome("permanent", detail=f"no incident.io severity matches {p['severity']!r}")
            fields["severity_id"] = severity_id
        if p.get("status") and "incident_status_id" not in fields:
            outcome, status_id = await self._status_id(p["status"])
            if not outcome.ok:
                return outcome
            if not status_id:
                return Outcome("permanent", detail=f"no incident.io status or status category matches "
                                                   f"{p['status']!r}")
            fields["incident_status_id"] = status_id
        if not fields:
            return Outcome("skipped", detail="nothing to update", result={"incident_id": incident_id})
        body = {"incident": fields, "notify_incident_channel": bool(p.get("notify_incident_channel", False))}
        outcome, _ = await self.request("POST", self._url(f"/v2/incidents/{quote(str(incident_id), safe='')}"
                                                          "/actions/edit"), json_body=body, headers=self._headers())
        if outcome.ok:
            outcome.result = {"incident_id": incident_id}
        return outcome

    async def add_note(self, call: ActionCall) -> Outcome:
        p = call.params
        incident_id, message = p.get("incident_id"), str(p.get("message") or "").strip()
        if not incident_id or not message:
            return Outcome("permanent", detail="incidentio add_note needs an incident_id and a message")
        title = str(p.get("title") or message.splitlines()[0])[:TITLE_MAX]
        timestamp = str(p.get("timestamp") or datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"))
        body = {"idempotency_key": str(p.get("idempotency_key") or call.idempotency_key),
                "incident_id": str(incident_id), "timestamp": timestamp, "title": title, "description": message}
        outcome, data = await self.request("POST", self._url("/v2/incident_timeline_items"), json_body=body,
                                           headers=self._headers())
        if outcome.ok:
            item = (data or {}).get("incident_timeline_item") if isinstance(data, dict) else None
            outcome.result = {"incident_id": incident_id,
                              "timeline_item_id": item.get("id") if isinstance(item, dict) else None}
        return outcome


connector = IncidentIO
