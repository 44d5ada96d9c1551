"""OpsGenie Alert API v2: actions `create`, `acknowledge`, `close`, `add_note`.

Auth: `Authorization: GenieKey <OPSGENIE_API_KEY>`; base `OPSGENIE_API_URL` (the EU
instance is `https://api.eu.opsgenie.com`).

Idempotency: the `alias` (default: the action's idempotency key; over 512 chars it is
hashed). OpsGenie keeps one open alert per alias, so a create run twice opens one alert;
`acknowledge`, `close` and `add_note` address the alert by alias (`identifierType=alias`).
OpsGenie answers 202 and processes asynchronously: a 202 means accepted, not applied
(`request_id` lets an operator look the outcome up at `/v2/alerts/requests/{id}`).
`add_note` is not deduplicated by OpsGenie; the runner never repeats a recorded success.

Params:
- `create`: message (≤130 chars, required), alias, description (≤15000), responders
  ([{type, id|name|username}]), priority (P1-P5; else from severity SEV1→P1 … SEV4→P4),
  tags, details ({str: str}), entity, source, note.
- `acknowledge`, `close`: alias, note. `add_note`: alias, note (required).

Result keys (all actions): `alias`, `request_id`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal
from urllib.parse import quote

from pydantic import Field, model_validator

from connectors.base import (
    ActionCall,
    CatalogField,
    Connector,
    Outcome,
    PageFacts,
    RetryPolicy,
    Setting,
    fit_key,
)
from hub.core.ruletypes import Strict

MESSAGE_MAX = 130
ALIAS_MAX = 512
DESCRIPTION_MAX = 15000
NOTE_MAX = 25000
SEVERITY_TO_PRIORITY = {"SEV1": "P1", "SEV2": "P2", "SEV3": "P3", "SEV4": "P4"}
PRIORITIES = frozenset({"P1", "P2", "P3", "P4", "P5"})


def priority(params: Mapping[str, Any]) -> str | None:
    explicit = str(params.get("priority") or "").upper()
    if explicit in PRIORITIES:
        return explicit
    return SEVERITY_TO_PRIORITY.get(str(params.get("severity") or "").upper())


class Responder(Strict):
    """An OpsGenie responder: a team, user, escalation or schedule, by id or name."""

    type: Literal["team", "user", "escalation", "schedule"] = "team"
    id: str | None = None
    name: str | None = None
    username: str | None = None

    @model_validator(mode="after")
    def _one_ref(self) -> Responder:
        if not (self.id or self.name or self.username):
            raise ValueError("a responder needs an id, a name or a username")
        return self


class OpsGenie(Connector):
    name = "opsgenie"
    label = "OpsGenie"
    page_action = "create"
    page_priority = 1
    catalog_fields = (CatalogField("opsgenie_responders", list[Responder], Field(default_factory=list),
                                   on=("service", "team", "level")),)
    #: One open alert per alias: a repeated create, acknowledge or close changes nothing more.
    repeat_safe = frozenset({"create", "acknowledge", "close"})
    #: OpsGenie's limits depend on the plan and the endpoint; this stays well inside them.
    default_rate_limit = "10/s"
    variables = (Setting("OPSGENIE_API_KEY", secret=True), Setting("OPSGENIE_API_URL", "https://api.opsgenie.com"))
    action_names = frozenset({"create", "acknowledge", "close", "add_note"})
    superseded_by_resolution = frozenset({"create"})
    retry_policy = RetryPolicy(max_attempts=8, base_delay=2.0, max_delay=120.0, deadline=2 * 3600)

    def missing_config(self, params: Mapping[str, Any] | None = None) -> str | None:
        return None if self.settings.opsgenie_api_key else "opsgenie not configured (OPSGENIE_API_KEY)"

    def secrets(self, params: Mapping[str, Any] | None = None) -> list[str]:
        return [self.settings.opsgenie_api_key] if self.settings.opsgenie_api_key else []

    def rate_limit_key(self, call: ActionCall) -> str | None:
        return f"opsgenie:{self.settings.opsgenie_api_key}"

    @classmethod
    def page_facts(cls, params: Mapping[str, Any]) -> PageFacts:
        return PageFacts(title=params.get("message"), key=params.get("alias"), detail=params.get("description"),
                         severity=params.get("severity"))

    @classmethod
    def has_own_target(cls, service: Mapping[str, Any], team: Mapping[str, Any]) -> bool:
        return bool(service.get("opsgenie_responders") or team.get("opsgenie_responders"))

    @classmethod
    def can_page(cls, service: Mapping[str, Any], team: Mapping[str, Any], configured: set[str]) -> bool:
        return cls.name in configured  # responders alone are not enough: the API key pages

    @classmethod
    def page_close(cls, params: Mapping[str, Any]) -> tuple[str, dict[str, Any]] | None:
        """A close of the alert's alias (closing an unknown alias changes nothing)."""
        if not params.get("alias"):
            return None
        return "close", {"alias": params["alias"], "note": "Recovered before this page could be confirmed"}

    @classmethod
    def fallback_page(cls, facts: PageFacts, why: str, view: Mapping[str, Any]) -> dict[str, Any]:
        service, team, incident = view.get("service") or {}, view.get("team") or {}, view.get("incident") or {}
        return {
            "message": facts.title,
            "alias": facts.key,
            "description": f"{why}\n\n{facts.detail}" if facts.detail else why,
            "responders": service.get("opsgenie_responders") or team.get("opsgenie_responders") or [],
            "severity": facts.severity,
            "tags": list(incident.get("services") or []),
            "details": {"incident": str(incident.get("key") or ""), "failed_page": facts.action_id},
        }

    def describe_target(self, params: Mapping[str, Any], mask: Callable[[str], str]) -> str:
        who = ", ".join(str(r.get("name") or r.get("id") or r.get("username")) for r in params.get("responders") or []
                        if isinstance(r, dict)) or "the alert's default routing"
        key = f"OPSGENIE_API_KEY {mask(self.settings.opsgenie_api_key)}" if self.settings.opsgenie_api_key else \
            "nowhere: opsgenie not configured (OPSGENIE_API_KEY)"
        return f"OpsGenie responders: {who}; {key}"

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"GenieKey {self.settings.opsgenie_api_key}"}

    def _url(self, path: str) -> str:
        return self.settings.opsgenie_api_url.rstrip("/") + path

    @staticmethod
    def _alias(call: ActionCall) -> str:
        return fit_key(str(call.params.get("alias") or call.idempotency_key), ALIAS_MAX)

    async def create(self, call: ActionCall) -> Outcome:
        p = call.params
        message = str(p.get("message") or p.get("title") or "").strip()
        if not message:
            return Outcome("permanent", detail="opsgenie create needs a message")
        alias = self._alias(call)
        body: dict[str, Any] = {"message": message[:MESSAGE_MAX], "alias": alias, "source": "incident-hub"}
        if p.get("description"):
            body["description"] = str(p["description"])[:DESCRIPTION_MAX]
        if p.get("responders"):
            body["responders"] = list(p["responders"])
        if prio := priority(p):
            body["priority"] = prio
        if p.get("tags"):
            body["tags"] = [str(t) for t in p["tags"]]
        if p.get("details"):
            body["details"] = {str(k): str(v) for k, v in dict(p["details"]).items()}
        for name in ("entity", "source", "note", "user"):
            if p.get(name):
                body[name] = str(p[name])
        return await self._send("/v2/alerts", body, alias, params=None)

    async def acknowledge(self, call: ActionCall) -> Outcome:
        return await self._on_alert(call, "acknowledge")

    async def close(self, call: ActionCall) -> Outcome:
        return await self._on_alert(call, "close")

    async def add_note(self, call: ActionCall) -> Outcome:
        if not call.params.get("note"):
            return Outcome("permanent", detail="opsgenie add_note needs a note")
        return await self._on_alert(call, "notes")

    async def _on_alert(self, call: ActionCall, verb: str) -> Outcome:
        alias = self._alias(call)
        body: dict[str, Any] = {"source": "incident-hub"}
        if call.params.get("note"):
            body["note"] = str(call.params["note"])[:NOTE_MAX]
        if call.params.get("user"):
            body["user"] = str(call.params["user"])
        return await self._send(f"/v2/alerts/{quote(alias, safe='')}/{verb}", body, alias,
                                params={"identifierType": "alias"})

    async def _send(self, path: str, body: dict[str, Any], alias: str, params: dict[str, str] | None) -> Outcome:
        outcome, data = await self.request("POST", self._url(path), json_body=body, headers=self._headers(),
                                           params=params)
        if outcome.ok:
            outcome.result = {"alias": alias, "request_id": data.get("requestId") if isinstance(data, dict) else None}
        return outcome


connector = OpsGenie
