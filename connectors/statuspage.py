"""Atlassian Statuspage: actions `open`, `update`, `resolve` on one page's incidents.

Auth: `Authorization: OAuth <STATUSPAGE_API_KEY>`; base `STATUSPAGE_API_URL`, page
`STATUSPAGE_PAGE_ID`. Statuspage allows 1 request/s per token and answers 420 or 429 when
exceeded; both are retried.

Idempotency: Statuspage has no idempotency key, so the hub keeps one. Each incident is
known by the `key` param (the hub incident or alert fingerprint): the ledger
(`connectors._ledger`) maps key → Statuspage incident id, written before success is
recorded. `open` on a key that is already open returns the existing incident. Before
creating, an intent is marked; if an attempt may have reached Statuspage (timeout, reset,
5xx, worker death), the next one lists `GET /v1/pages/{page}/incidents/unresolved` and
adopts the incident carrying our marker (`metadata.incident_hub.ref`, a hash of the key),
or failing that, an unmarked one with exactly the same name created since the first
attempt. Finding none, it creates again only once a request that lost its answer can no
longer land (`in_flight_grace` after the timeout or reset). Calls on
one key are serialised across workers. An `update` whose previous attempt was ambiguous
first checks whether the incident already shows that update.

Params:
- `open`: key, name (≤255), status (investigating|identified|monitoring|resolved; default
  investigating), body, component_ids, components ({id: status}), component_status (applied
  to component_ids without an explicit status), impact_override, deliver_notifications.
- `update`: key (or incident_id), status, body, name, components, component_ids,
  component_status, impact_override, deliver_notifications. Skipped when no incident is
  open for the key.
- `resolve`: key (or incident_id), body; every component the incident touched goes back to
  `operational`. Skipped when no incident is open for the key.

Escaping: the page is public and shows plain text, so every `name` and `body` (payload
text and the operator's alike) goes through `statuspage_text` (below): no HTML tags, no
`<!channel>`-style constructs, no control characters.

Result keys (all actions): `statuspage_incident_id`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

from pydantic import Field

from connectors._ledger import CreationLedger, settle_after_failed_create
from connectors.base import (
    ActionCall,
    CatalogField,
    CatalogView,
    Connector,
    Outcome,
    Record,
    RetryPolicy,
    Setting,
    stable_ref,
)
from hub.core.escape import terminal
from hub.core.ruletypes import Strict, StrList

NAME_MAX = 255
BODY_MAX = 25000
MARKER = "incident_hub"
#: A same-named incident created this long before our first attempt is not ours.
NAME_MATCH_SKEW_MS = 60_000
RESOLVED_BODY = "This incident has been resolved."


# -- plain text for the public page -------------------------------------------------------------

_TAG = re.compile(r"<[^<>]*>")


def statuspage_text(text: str) -> str:
    """Plain text for the public status page: no HTML, no `<!channel>`-style constructs."""
    out = _TAG.sub("", terminal(str(text)))
    return out.replace("<", "\u2039").replace(">", "\u203a")


def _created_ms(incident: Mapping[str, Any]) -> int | None:
    try:
        return int(datetime.fromisoformat(str(incident["created_at"]).replace("Z", "+00:00")).timestamp() * 1000)
    except (KeyError, ValueError, TypeError):
        return None



def _incident_fields(p: dict[str, Any]) -> dict[str, Any]:
    """The `incident` body fields a create or an update sends, from the action's params."""
    fields: dict[str, Any] = {opt: p[opt] for opt in ("status", "impact_override", "deliver_notifications")
                              if p.get(opt) is not None}
    if p.get("name"):
        fields["name"] = statuspage_text(str(p["name"]))[:NAME_MAX]
    if p.get("body"):
        fields["body"] = statuspage_text(str(p["body"]))[:BODY_MAX]
    ids, statuses = _components(p)
    if ids:
        fields["component_ids"] = ids
    if statuses:
        fields["components"] = statuses
    return fields

def _components(params: Mapping[str, Any]) -> tuple[list[str], dict[str, str]]:
    """(component ids, {id: status}) from `components`, `component_ids` and `component_status`."""
    statuses = {str(k): str(v) for k, v in dict(params.get("components") or {}).items()}
    ids = [str(c) for c in params.get("component_ids") or []]
    default = params.get("component_status")
    if default:
        for cid in ids:
            statuses.setdefault(cid, str(default))
    return list(dict.fromkeys([*ids, *statuses])), statuses


class StatuspageWording(Strict):
    """What the public status page says, per Statuspage status. Templates read only `service`
    (the service's public name): never alert or incident text, which is internal."""

    title: str = Field("Degraded performance of {{ service }}", description="the Statuspage incident's name")
    investigating: str = "We are investigating degraded performance of {{ service }}."
    identified: str = "We have identified the cause of the degraded performance of {{ service }} and are " \
                      "working on a fix."
    monitoring: str = "A fix for {{ service }} is in place and we are monitoring the results."
    resolved: str = "{{ service }} is operating normally again."


class Statuspage(Connector):
    name = "statuspage"
    default_rate_limit = "1/s"
    variables = (Setting("STATUSPAGE_API_KEY", secret=True), Setting("STATUSPAGE_PAGE_ID"),
                 Setting("STATUSPAGE_API_URL", "https://api.statuspage.io"))
    action_names = frozenset({"open", "update", "resolve"})
    superseded_by_resolution = frozenset({"open", "update"})
    recorded = {"statuspage_incident_id": Record()}
    formats = {"statuspage_text": statuspage_text}
    catalog_fields = (
        CatalogField("statuspage", bool, Field(False, description="opt in to the public status page (implied by "
                                                                 "statuspage_components); without it the built-in "
                                                                 "workflows never open a Statuspage incident for the "
                                                                 "service"), on=("service",)),
        CatalogField("statuspage_components", StrList,
                     Field(default_factory=list, description="Statuspage component ids (opts in)"), on=("service",)),
        CatalogField("statuspage_wording", StatuspageWording | None,
                     Field(None, description="this service's public wording; default: the catalog's"),
                     on=("service",), templates_read=("service",)),
        CatalogField("statuspage_wording", StatuspageWording,
                     Field(default_factory=StatuspageWording, description="public wording on the status page, per "
                                                                          "status"),
                     on=("catalog",), templates_read=("service",)),
        CatalogField("statuspage", bool | None, Field(None, description="the (first) affected service opted in to the "
                                                                        "public status page (`statuspage: true` or "
                                                                        "statuspage_components)"),
                     on=("condition",), condition_path="service.statuspage"),
    )

    @classmethod
    def catalog_view(cls, place: str, entry: Any, view: CatalogView) -> dict[str, Any]:
        """The service's opt-in and components, and its public wording rendered (never the raw templates)."""
        if place != "service":
            return {}
        wording = entry.statuspage_wording or view.catalog.statuspage_wording
        assert view.render is not None
        text = {k: str(view.render(v, {"service": view.public_name})) for k, v in wording.model_dump().items()}
        return {"statuspage_components": list(entry.statuspage_components),
                "statuspage": bool(view.in_catalog and (entry.statuspage or entry.statuspage_components)),
                "statuspage_text": text}
    extra_retryable = (420,)
    retry_policy = RetryPolicy(max_attempts=8, base_delay=2.0, max_delay=120.0, deadline=6 * 3600)

    @property
    def ledger(self) -> CreationLedger:
        return CreationLedger(self.redis, self.name, self.settings.statuspage_page_id or "")

    def missing_config(self, params: Mapping[str, Any] | None = None) -> str | None:
        missing = [v for v, ok in (("STATUSPAGE_API_KEY", self.settings.statuspage_api_key),
                                   ("STATUSPAGE_PAGE_ID", self.settings.statuspage_page_id)) if not ok]
        return f"statuspage not configured ({', '.join(missing)})" if missing else None

    def secrets(self, params: Mapping[str, Any] | None = None) -> list[str]:
        return [self.settings.statuspage_api_key] if self.settings.statuspage_api_key else []

    def describe_target(self, params: Mapping[str, Any], mask: Callable[[str], str]) -> str:
        return f"Statuspage page {self.settings.statuspage_page_id or '(none: STATUSPAGE_PAGE_ID unset)'}"

    def rate_limit_key(self, call: ActionCall) -> str | None:
        return f"statuspage:{self.settings.statuspage_api_key}"

    def serial_key(self, call: ActionCall) -> str | None:
        return f"{self.settings.statuspage_page_id}:{self._key(call)}"

    # -- plumbing ------------------------------------------------------------------------------

    @staticmethod
    def _key(call: ActionCall) -> str:
        return str(call.params.get("key") or call.params.get("incident_id") or call.idempotency_key)

    def _url(self, suffix: str = "") -> str:
        page = quote(self.settings.statuspage_page_id or "", safe="")
        return f"{self.settings.statuspage_api_url.rstrip('/')}/v1/pages/{page}/incidents{suffix}"

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"OAuth {self.settings.statuspage_api_key}"}

    @staticmethod
    def _result(incident_id: str) -> dict[str, Any]:
        return {"statuspage_incident_id": incident_id}

    async def _current(self, call: ActionCall) -> tuple[str | None, dict[str, Any] | None]:
        """(incident id, ledger record) for the call's key, or an explicit `incident_id` param."""
        record = await self.ledger.get(self._key(call))
        explicit = call.params.get("incident_id")
        if explicit and (record is None or record.get("id") != explicit):
            return str(explicit), None
        return (record["id"], record) if record else (None, None)

    async def _absent(self, call: ActionCall, verb: str) -> Outcome:
        """No incident for the key: wait if an `open` is still in flight, else there is nothing to do."""
        if await self.ledger.intent(self._key(call)) is not None:
            return Outcome("retryable", detail=f"cannot {verb} yet: the incident's creation is unconfirmed",
                           retry_after=2.0)
        return Outcome("skipped", detail=f"no Statuspage incident open for key {self._key(call)!r}")

    async def _get(self, incident_id: str) -> tuple[Outcome, Any]:
        return await self.request("GET", self._url(f"/{quote(incident_id, safe='')}"), headers=self._headers())

    async def _patch(self, incident_id: str, fields: dict[str, Any]) -> tuple[Outcome, Any]:
        return await self.request("PATCH", self._url(f"/{quote(incident_id, safe='')}"),
                                  json_body={"incident": fields}, headers=self._headers())

    # -- open -------------------------------------------------------------------------------------

    async def open(self, call: ActionCall) -> Outcome:
        p = call.params
        key = self._key(call)
        name = statuspage_text(str(p.get("name") or p.get("title") or "")).strip()[:NAME_MAX]
        if not name:
            return Outcome("permanent", detail="statuspage open needs a name")
        ledger = self.ledger
        record = await ledger.get(key)
        if record and not record.get("resolved"):
            return Outcome("succeeded", detail="already open", result=self._result(record["id"]))

        pending = await ledger.pending(key)
        if pending is not None or call.after_ambiguous:
            outcome, found = await self._find_ours(key, name, pending.first_ms if pending else None)
            if not outcome.ok:
                return outcome
            if found is not None:
                await ledger.put(key, {"id": found["id"], "name": name, "components": _components(p)[0]})
                return Outcome("succeeded", outcome.status, detail="found after an unconfirmed create",
                               result=self._result(found["id"]))
            if pending is not None and pending.settles_in > 0:
                return Outcome("retryable", outcome.status, retry_after=pending.settles_in,
                               detail="an earlier create lost its answer and may still land: looking again "
                                      "before creating")

        ids = _components(p)[0]
        fields = {**_incident_fields({**p, "status": str(p.get("status") or "investigating")}), "name": name,
                  "metadata": {MARKER: {"ref": stable_ref(key)}}}
        await ledger.begin(key, self.timeout + self.in_flight_grace)
        outcome, data = await self.request("POST", self._url(), json_body={"incident": fields},
                                           headers=self._headers())
        if outcome.ok:
            incident_id = data.get("id") if isinstance(data, dict) else None
            if not incident_id:
                await ledger.answered(key)
                return Outcome("retryable", outcome.status, detail="Statuspage answered without an incident id",
                               response=outcome.response, ambiguous=True)
            await ledger.put(key, {"id": incident_id, "name": name, "components": ids})
            outcome.result = self._result(incident_id)
        else:
            await settle_after_failed_create(ledger, key, outcome, self.in_flight_grace)
        return outcome

    async def _find_ours(self, key: str, name: str, intent_ms: int | None) -> tuple[Outcome, dict[str, Any] | None]:
        """Our incident among the unresolved ones: by marker, else by exact name since the first attempt."""
        outcome, data = await self.request("GET", self._url("/unresolved"), headers=self._headers())
        if not outcome.ok:
            return outcome, None
        incidents = [i for i in data if isinstance(i, dict) and i.get("id")] if isinstance(data, list) else []
        ref = stable_ref(key)
        for incident in incidents:
            if ((incident.get("metadata") or {}).get(MARKER) or {}).get("ref") == ref:
                return outcome, incident
        since = (intent_ms or 0) - NAME_MATCH_SKEW_MS
        for incident in incidents:
            created = _created_ms(incident)
            marked = ((incident.get("metadata") or {}).get(MARKER) or {}).get("ref")
            # public wording repeats across a service's incidents: one marked for another key is not ours
            if incident.get("name") == name and not marked and created is not None and created >= since:
                return outcome, incident
        return outcome, None

    # -- update / resolve -------------------------------------------------------------------------

    async def update(self, call: ActionCall) -> Outcome:
        p = call.params
        incident_id, record = await self._current(call)
        if incident_id is None:
            return await self._absent(call, "update")
        if record and record.get("resolved"):
            return Outcome("skipped", detail="the Statuspage incident is already resolved",
                           result=self._result(incident_id))
        fields = _incident_fields(p)
        if not fields:
            return Outcome("skipped", detail="nothing to update", result=self._result(incident_id))
        if call.after_ambiguous and fields.get("body"):
            outcome, data = await self._get(incident_id)
            if not outcome.ok:
                return outcome
            if self._shows_update(data, fields["body"], fields.get("status")):
                return Outcome("succeeded", outcome.status, detail="update already applied",
                               result=self._result(incident_id))
        outcome, _ = await self._patch(incident_id, fields)
        if outcome.ok:
            if record is not None:
                touched = list(dict.fromkeys([*record.get("components", []), *fields.get("component_ids", [])]))
                await self.ledger.put(self._key(call), {**record, "components": touched})
            outcome.result = self._result(incident_id)
        return outcome

    @staticmethod
    def _shows_update(incident: Any, body: str, status: str | None) -> bool:
        if not isinstance(incident, dict):
            return False
        for upd in incident.get("incident_updates") or []:
            if isinstance(upd, dict) and upd.get("body") == body and (status is None or upd.get("status") == status):
                return True
        return False

    async def resolve(self, call: ActionCall) -> Outcome:
        p = call.params
        incident_id, record = await self._current(call)
        if incident_id is None:
            return await self._absent(call, "resolve")
        if record and record.get("resolved"):
            return Outcome("succeeded", detail="already resolved", result=self._result(incident_id))
        if call.after_ambiguous:
            outcome, data = await self._get(incident_id)
            if not outcome.ok:
                return outcome
            if isinstance(data, dict) and data.get("status") == "resolved":
                await self._mark_resolved(call, record)
                return Outcome("succeeded", outcome.status, detail="already resolved",
                               result=self._result(incident_id))
        touched = list(dict.fromkeys([*(record or {}).get("components", []), *_components(p)[0]]))
        fields: dict[str, Any] = {"status": "resolved",
                                  "body": statuspage_text(str(p.get("body") or RESOLVED_BODY))[:BODY_MAX]}
        if touched:
            fields["component_ids"] = touched
            fields["components"] = {cid: "operational" for cid in touched}
        outcome, _ = await self._patch(incident_id, fields)
        if outcome.ok:
            await self._mark_resolved(call, record)
            outcome.result = self._result(incident_id)
        return outcome

    async def _mark_resolved(self, call: ActionCall, record: dict[str, Any] | None) -> None:
        """A later `open` for the same key then starts a new incident."""
        if record is not None:
            await self.ledger.put(self._key(call), {**record, "resolved": True})


connector = Statuspage
