"""pagerduty: inbound webhooks (section 1) and outbound API actions (section 2).

Inbound: v3 webhook subscriptions, `X-PagerDuty-Signature: v1=<hex HMAC-SHA256(secret, body)>`
(several comma-separated signatures while PagerDuty rotates), secret(s) in
`PAGERDUTY_WEBHOOK_SECRET`. Delivery id = `event.id`. `incident.acknowledged` →
`page.acknowledged`, `incident.resolved` → `page.resolved`, any other type (`pagey.ping`, …)
→ no events. Fingerprint = the incident's `incident_key` (the Events API dedup key the hub
paged with), else `pagerduty:<incident id>`.
Catalog options (all optional): `severity_map` (priority name → SEV1..SEV4; default
P1→SEV1, P2→SEV2, P3→SEV3, P4/P5→SEV4), `default_severity` (no priority; default none).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, PrivateAttr, ValidationError

from connectors import _options
from connectors._lenient import Lenient, LooseInt, Opt, SoftList, Text, bounded, clip, parse_time
from connectors._severity import PRIORITY_MAP, map_severity
from connectors.base import (
    ActionCall,
    BadPayload,
    CatalogField,
    Connector,
    InboundSource,
    Outcome,
    PageFacts,
    RetryPolicy,
    Setting,
    fit_key,
    summarise_validation,
)
from hub.core.events import Kind, Link, NormalisedEvent
from hub.core.ruletypes import SecretRef
from hub.ingress.verify import AuthError, check_hex_hmac, first_credential, sign_hex_hmac

if TYPE_CHECKING:
    from hub.core.settings import Settings

# --- inbound -------------------------------------------------------------------------------

PAGERDUTY_KINDS: dict[str, Kind] = {"incident.acknowledged": Kind.PAGE_ACKNOWLEDGED,
                                    "incident.resolved": Kind.PAGE_RESOLVED}
SIGNATURE_HEADER = "X-PagerDuty-Signature"
PAGERDUTY_OPTIONS: dict[str, _options.OptionKind] = dict(_options.COMMON_OPTIONS)


class PagerDutyRef(Lenient):
    id: Text = None
    type: Text = None
    summary: Text = None
    html_url: Text = None


class PagerDutyIncident(Lenient):
    id: str
    type: Text = None
    number: LooseInt = None
    status: Text = None
    title: Text = None
    incident_key: Text = None
    html_url: Text = None
    urgency: Text = None
    created_at: Text = None
    service: Opt[PagerDutyRef] = None
    priority: Opt[PagerDutyRef] = None
    escalation_policy: Opt[PagerDutyRef] = None
    assignees: SoftList[PagerDutyRef] = Field(default_factory=list)
    resolve_reason: Any = None


class PagerDutyEvent(Lenient):
    id: str
    event_type: str
    resource_type: Text = None
    occurred_at: Text = None
    agent: Opt[PagerDutyRef] = None
    data: Opt[dict[str, Any]] = None


class PagerDutyWebhook(Lenient):
    """v3 webhook body `{"event": {...}}`; `incident` is parsed from `event.data` for the types the hub uses."""

    event: PagerDutyEvent
    #: Set by `validate`, never from the body (a body key of the same name is ignored).
    _incident: PagerDutyIncident | None = PrivateAttr(default=None)

    @property
    def incident(self) -> PagerDutyIncident | None:
        return self._incident


class PagerDutySource(InboundSource):
    name = "pagerduty"
    recorded_headers = ("User-Agent", "X-Webhook-Id", "X-Webhook-Subscription")
    credential_settings = ("pagerduty_webhook_secret",)
    variables = (Setting("PAGERDUTY_WEBHOOK_SECRET", secret=True, rotating=True),)
    model = PagerDutyWebhook

    def verify(self, body: bytes, headers: Mapping[str, str], settings: Settings) -> str:
        header = headers.get(SIGNATURE_HEADER, "").strip()
        if not header:
            raise AuthError("missing_signature", f"{SIGNATURE_HEADER} header missing (set the webhook "
                                                 "subscription's signing secret as PAGERDUTY_WEBHOOK_SECRET)")
        candidates = [sig for version, _, sig in (p.strip().partition("=") for p in header.split(","))
                      if version == "v1" and sig]
        if not candidates:
            raise AuthError("bad_signature", f"{SIGNATURE_HEADER} has no v1 signature")
        if not check_hex_hmac(settings.pagerduty_webhook_secret, body, candidates):
            raise AuthError("bad_signature", f"{SIGNATURE_HEADER} does not match PAGERDUTY_WEBHOOK_SECRET")
        return f"hmac-sha256 ({SIGNATURE_HEADER})"

    def validate(self, data: Any, headers: Mapping[str, str]) -> BaseModel:
        webhook = super().validate(data, headers)
        assert isinstance(webhook, PagerDutyWebhook)
        if webhook.event.event_type in PAGERDUTY_KINDS:
            try:
                webhook._incident = PagerDutyIncident.model_validate(webhook.event.data)
            except ValidationError as e:
                raise BadPayload("invalid_payload", f"not a pagerduty {webhook.event.event_type} webhook: "
                                                    f"event.data.{summarise_validation(e)}") from None
        return webhook

    def delivery_id(self, payload: BaseModel, headers: Mapping[str, str], body: bytes) -> str:
        assert isinstance(payload, PagerDutyWebhook)
        event_id = payload.event.id.strip()
        if not event_id:
            raise BadPayload("missing_delivery", "event.id is empty")
        return event_id[:200]

    def check_options(self, options: Any) -> list[str]:
        return _options.check_options(options, PAGERDUTY_OPTIONS)

    def normalise(self, payload: BaseModel, headers: Mapping[str, str],
                  options: Mapping[str, Any] | None = None) -> list[NormalisedEvent]:
        assert isinstance(payload, PagerDutyWebhook)
        ev, inc = payload.event, payload.incident
        kind = PAGERDUTY_KINDS.get(ev.event_type)
        if kind is None or inc is None:
            return []
        opts = options or {}
        # The Events API dedup key the hub paged with comes back as the incident key, so an
        # acknowledgement finds the page (and the alert or incident behind it).
        key = (inc.incident_key or "").strip()
        priority = inc.priority.summary if inc.priority else None
        service = inc.service.summary if inc.service else None
        return [NormalisedEvent(
            kind=kind, source=self.name, fingerprint=bounded(key or f"pagerduty:{inc.id}"),
            severity=map_severity(priority, opts, PRIORITY_MAP, None), services=[service] if service else [],
            title=clip(inc.title or f"PagerDuty incident {inc.number or inc.id}", 300),
            links=[Link(href=inc.html_url, text="PagerDuty incident")] if inc.html_url else [],
            occurred_at=parse_time(ev.occurred_at), status=inc.status,
            attributes={
                "event_type": ev.event_type, "pagerduty_event_id": ev.id, "incident_id": inc.id,
                "incident_number": inc.number, "incident_key": key or None, "urgency": inc.urgency,
                "priority": priority, "service_id": inc.service.id if inc.service else None,
                "escalation_policy": inc.escalation_policy.summary if inc.escalation_policy else None,
                "agent": ev.agent.summary if ev.agent else None, "agent_type": ev.agent.type if ev.agent else None,
                "assignees": [a.summary for a in inc.assignees if a.summary],
                "resolve_reason": inc.resolve_reason if isinstance(inc.resolve_reason, str | None) else None,
            },
        )]

    def freshen(self, data: Any) -> bool:
        if not (isinstance(data, dict) and isinstance(data.get("event"), dict)):
            return False
        data["event"]["id"] = "01" + secrets.token_hex(12).upper()
        return True

    def sign_request(self, body: bytes, settings: Settings, now: float | None = None, *,
                     same_id: bool = False) -> dict[str, str]:
        secret = first_credential(settings.pagerduty_webhook_secret, "PAGERDUTY_WEBHOOK_SECRET")
        return {"Content-Type": "application/json", SIGNATURE_HEADER: "v1=" + sign_hex_hmac(secret, body)}


source = PagerDutySource()


# --- outbound ------------------------------------------------------------------------------


SEVERITY_TO_PD = {"SEV1": "critical", "SEV2": "error", "SEV3": "warning", "SEV4": "info"}
PD_SEVERITIES = frozenset(SEVERITY_TO_PD.values())
PD_DEDUP_KEY_MAX = 255
PD_SUMMARY_MAX = 1024
PD_PAYLOAD_FIELDS = ("component", "group", "class")


def pd_severity(value: Any) -> str:
    """SEV1..SEV4 → critical/error/warning/info; PagerDuty's own names pass through; else error."""
    text = str(value or "").strip()
    if text.lower() in PD_SEVERITIES:
        return text.lower()
    return SEVERITY_TO_PD.get(text.upper(), "error")


def pd_links(params: Mapping[str, Any]) -> list[dict[str, str]]:
    return [{"href": str(link["href"]), "text": str(link.get("text") or link["href"])}
            for link in params.get("links") or [] if isinstance(link, dict) and link.get("href")]


class PagerDuty(Connector):
    """PagerDuty Events API v2 (`PAGERDUTY_EVENTS_URL`): actions `trigger`, `acknowledge`, `resolve`.

    Credential: the routing (integration) key, from the `routing_key` param (catalog
    override) else `PAGERDUTY_ROUTING_KEY`; it travels in the body, there is no auth header.

    Idempotency: `dedup_key` (the rules pass the alert fingerprint or incident id; a trigger
    without one uses the action's idempotency key; keys over 255 chars are hashed). PagerDuty
    folds a repeated trigger into the open alert, so a job run twice pages once.
    `acknowledge` and `resolve` need the `dedup_key` of the trigger.

    Result keys (all actions): `dedup_key`.
    """

    name = "pagerduty"
    #: A repeat with the same dedup_key (and routing key) applies to the same open alert.
    repeat_safe = frozenset({"trigger", "acknowledge", "resolve"})
    default_rate_limit = "120/min"
    label = "PagerDuty"
    page_action = "trigger"
    page_priority = 0
    catalog_fields = (CatalogField("pagerduty_routing_key", SecretRef | None, on=("service", "team", "level"),
                                   secret_ref=True),)
    variables = (Setting("PAGERDUTY_ROUTING_KEY", secret=True),
                 Setting("PAGERDUTY_EVENTS_URL", "https://events.pagerduty.com/v2/enqueue"))
    action_names = frozenset({"trigger", "acknowledge", "resolve"})
    superseded_by_resolution = frozenset({"trigger"})
    global_target = ("routing_key", "PAGERDUTY_ROUTING_KEY")
    retry_policy = RetryPolicy(max_attempts=8, base_delay=2.0, max_delay=120.0, deadline=2 * 3600)

    def routing_key(self, params: Mapping[str, Any] | None) -> str | None:
        return (params or {}).get("routing_key") or self.settings.pagerduty_routing_key

    def missing_config(self, params: Mapping[str, Any] | None = None) -> str | None:
        return None if self.routing_key(params) else "pagerduty not configured (PAGERDUTY_ROUTING_KEY)"

    def secrets(self, params: Mapping[str, Any] | None = None) -> list[str]:
        return [k for k in (self.settings.pagerduty_routing_key, (params or {}).get("routing_key")) if k]

    def rate_limit_key(self, call: ActionCall) -> str | None:
        return f"pagerduty:{self.routing_key(call.params)}"

    @classmethod
    def page_facts(cls, params: Mapping[str, Any]) -> PageFacts:
        details = params.get("custom_details") or {}
        return PageFacts(title=params.get("summary"), key=params.get("dedup_key"), severity=params.get("severity"),
                         detail=details.get("summary") if isinstance(details, Mapping) else None)

    @classmethod
    def has_own_target(cls, service: Mapping[str, Any], team: Mapping[str, Any]) -> bool:
        return bool(service.get("pagerduty_routing_key") or team.get("pagerduty_routing_key"))

    @classmethod
    def page_close(cls, params: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
        """A resolve of the trigger's dedup key (Events API v2: a resolve of an unknown key does nothing)."""
        if not params.get("dedup_key"):
            return None
        return "resolve", {k: params[k] for k in ("dedup_key", "routing_key") if params.get(k)}

    @classmethod
    def fallback_page(cls, facts: PageFacts, why: str, view: Mapping[str, Any]) -> dict[str, Any]:
        service, team, incident = view.get("service") or {}, view.get("team") or {}, view.get("incident") or {}
        return {
            "summary": facts.title,
            "severity": facts.severity,
            "source": "incident-hub",
            "dedup_key": facts.key,
            "routing_key": service.get("pagerduty_routing_key") or team.get("pagerduty_routing_key"),
            "component": service.get("name"),
            "group": team.get("name"),
            "custom_details": {"note": why, "description": facts.detail or "",
                               "incident": str(incident.get("key") or "")},
        }

    def describe_target(self, params: Mapping[str, Any], mask: Callable[[str], str]) -> str:
        if params.get("routing_key"):
            return f"PagerDuty routing key {mask(str(params['routing_key']))} (the step's routing_key: service, " \
                   "team or escalation level)"
        if self.settings.pagerduty_routing_key:
            return f"PagerDuty routing key {mask(self.settings.pagerduty_routing_key)} (PAGERDUTY_ROUTING_KEY)"
        return "nowhere: pagerduty not configured (PAGERDUTY_ROUTING_KEY)"

    async def trigger(self, call: ActionCall) -> Outcome:
        p = call.params
        dedup_key = fit_key(str(p.get("dedup_key") or call.idempotency_key), PD_DEDUP_KEY_MAX)
        payload: dict[str, Any] = {
            "summary": str(p.get("summary") or p.get("title") or "incident-hub alert")[:PD_SUMMARY_MAX],
            "source": str(p.get("source") or "incident-hub"),
            "severity": pd_severity(p.get("severity")),
        }
        for name in (*PD_PAYLOAD_FIELDS, "timestamp"):
            if p.get(name):
                payload[name] = str(p[name])
        if p.get("custom_details"):
            payload["custom_details"] = p["custom_details"]
        body: dict[str, Any] = {"routing_key": self.routing_key(p), "event_action": "trigger",
                                "dedup_key": dedup_key, "payload": payload, "client": "incident-hub"}
        if links := pd_links(p):
            body["links"] = links
        if p.get("client_url"):
            body["client_url"] = str(p["client_url"])
        return await self._send(body)

    async def acknowledge(self, call: ActionCall) -> Outcome:
        return await self._follow_up(call, "acknowledge")

    async def resolve(self, call: ActionCall) -> Outcome:
        return await self._follow_up(call, "resolve")

    async def _follow_up(self, call: ActionCall, event_action: str) -> Outcome:
        if not call.params.get("dedup_key"):
            return Outcome("permanent", detail=f"pagerduty {event_action} needs the dedup_key of the trigger")
        body = {"routing_key": self.routing_key(call.params), "event_action": event_action,
                "dedup_key": fit_key(str(call.params["dedup_key"]), PD_DEDUP_KEY_MAX)}
        return await self._send(body)

    async def _send(self, body: dict[str, Any]) -> Outcome:
        outcome, data = await self.request("POST", self.settings.pagerduty_events_url, json_body=body)
        if outcome.ok:
            key = data.get("dedup_key") if isinstance(data, dict) else None
            outcome.result = {"dedup_key": key or body["dedup_key"]}
        return outcome


connector = PagerDuty
