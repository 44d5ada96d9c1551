"""Fake Atlassian Statuspage (CONTRACTS §2.3): incidents of one page.

`Authorization: OAuth <key>` or 401. Create (201) and update (PATCH, 200) take the
`{"incident": {…}}` wrapper; every create or status/body change appends an
`incident_updates` entry, as Statuspage does. `GET …/incidents/unresolved` lists the
incidents not yet resolved. Rate-limit answers (420, 429) come from the fault switches.
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from tests.fakes.shielded import ShieldedUpstream

API_KEY = "sp-test-key-0123456789"
PAGE_ID = "pg1234abcd"
REALTIME = {"investigating", "identified", "monitoring", "resolved"}
COMPONENT_STATUSES = {"operational", "degraded_performance", "partial_outage", "major_outage", "under_maintenance"}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class FakeStatuspage(ShieldedUpstream):
    def __init__(self, api_key: str = API_KEY, page_id: str = PAGE_ID) -> None:
        super().__init__()
        self.api_key = api_key
        self.page_id = page_id
        self.incidents: dict[str, dict[str, Any]] = {}
        self.created: list[str] = []
        #: Component id → current status, as the page shows it.
        self.components: dict[str, str] = {}

    def routes(self, app: web.Application) -> None:
        base = "/v1/pages/{page}/incidents"
        app.router.add_post(base, self.create)
        app.router.add_get(base + "/unresolved", self.unresolved)
        app.router.add_get(base + "/{id}", self.show)
        app.router.add_patch(base + "/{id}", self.patch)

    def _check(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"OAuth {self.api_key}":
            return web.json_response({"error": "Could not authenticate"}, status=401)
        if request.match_info["page"] != self.page_id:
            return web.json_response({"error": "Page not found"}, status=404)
        return None

    async def _body(self, request: web.Request) -> dict[str, Any] | web.Response:
        try:
            data = json.loads(await request.read())
        except ValueError:
            return web.json_response({"error": "Could not parse the request body"}, status=400)
        if not isinstance(data, dict) or not isinstance(data.get("incident"), dict):
            return web.json_response({"error": "incident is missing"}, status=400)
        return data["incident"]

    def _apply(self, incident: dict[str, Any], fields: dict[str, Any]) -> web.Response | None:
        status = fields.get("status")
        if status is not None and status not in REALTIME:
            return web.json_response({"error": f"Status {status!r} is not valid"}, status=422)
        components = fields.get("components") or {}
        if any(s not in COMPONENT_STATUSES for s in components.values()):
            return web.json_response({"error": "Component status is not valid"}, status=422)
        for key in ("name", "impact_override", "deliver_notifications"):
            if key in fields:
                incident[key] = fields[key]
        for cid in [*fields.get("component_ids", []), *components]:
            self.components[cid] = components.get(cid, self.components.get(cid, "operational"))
        touched = dict.fromkeys([*(c["id"] for c in incident["components"]), *fields.get("component_ids", []),
                                 *components])
        incident["components"] = [{"id": cid, "status": self.components[cid]} for cid in touched]
        if (status and status != incident["status"]) or fields.get("body"):
            incident["status"] = status or incident["status"]
            incident["incident_updates"].insert(0, {"id": secrets.token_hex(6), "status": incident["status"],
                                                    "body": fields.get("body", ""), "created_at": _now()})
        if incident["status"] == "resolved" and not incident.get("resolved_at"):
            incident["resolved_at"] = _now()
        incident["updated_at"] = _now()
        return None

    async def create(self, request: web.Request) -> web.Response:
        if (denied := self._check(request)) is not None:
            return denied
        fields = await self._body(request)
        if isinstance(fields, web.Response):
            return fields
        if not fields.get("name") or len(fields["name"]) > 255:
            return web.json_response({"error": "Name can't be blank"}, status=422)
        metadata = fields.get("metadata") or {}
        if not all(isinstance(v, dict) for v in metadata.values()):
            return web.json_response({"error": "metadata values must be objects"}, status=422)
        incident_id = secrets.token_hex(6)
        incident: dict[str, Any] = {
            "id": incident_id, "page_id": self.page_id, "name": fields["name"], "status": "investigating",
            "impact": fields.get("impact_override") or "none", "metadata": metadata, "components": [],
            "incident_updates": [], "created_at": _now(), "updated_at": _now(), "resolved_at": None,
            "shortlink": f"https://stspg.io/{incident_id}",
        }
        fields = {**fields, "status": fields.get("status") or "investigating",
                  "body": fields.get("body") or ""}
        incident["status"] = ""  # so the first update is recorded
        if (bad := self._apply(incident, fields)) is not None:
            return bad
        self.incidents[incident_id] = incident
        self.created.append(incident_id)
        return web.json_response(incident, status=201)

    async def patch(self, request: web.Request) -> web.Response:
        if (denied := self._check(request)) is not None:
            return denied
        incident = self.incidents.get(request.match_info["id"])
        if incident is None:
            return web.json_response({"error": "Incident not found"}, status=404)
        fields = await self._body(request)
        if isinstance(fields, web.Response):
            return fields
        if (bad := self._apply(incident, fields)) is not None:
            return bad
        return web.json_response(incident)

    async def show(self, request: web.Request) -> web.Response:
        if (denied := self._check(request)) is not None:
            return denied
        incident = self.incidents.get(request.match_info["id"])
        if incident is None:
            return web.json_response({"error": "Incident not found"}, status=404)
        return web.json_response(incident)

    async def unresolved(self, request: web.Request) -> web.Response:
        if (denied := self._check(request)) is not None:
            return denied
        return web.json_response([i for i in self.incidents.values() if i["status"] != "resolved"])
