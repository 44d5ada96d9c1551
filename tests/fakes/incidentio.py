"""Fake incident.io API (CONTRACTS §2.5 plus the edit and timeline-item endpoints of its spec).

`Authorization: Bearer <key>` or 401. Errors use the `ErrorResponse` shape
`{type, status, request_id, errors: [{code, message, source: {field}}]}`. A create (and a
timeline item) with an `idempotency_key` already seen returns what the first request
created rather than a second one; `created` lists the incidents really created.
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from tests.fakes.shielded import ShieldedUpstream

API_KEY = "inc_test_key_0123456789abcdef"
SEVERITIES = [
    {"id": "sev_minor", "name": "Minor", "description": "Low impact", "rank": 1},
    {"id": "sev_major", "name": "Major", "description": "Significant impact", "rank": 2},
    {"id": "sev_critical", "name": "Critical", "description": "Full outage", "rank": 3},
]
STATUSES = [
    {"id": "st_triage", "name": "Triage", "category": "triage", "rank": 0},
    {"id": "st_investigating", "name": "Investigating", "category": "live", "rank": 1},
    {"id": "st_fixing", "name": "Fixing", "category": "live", "rank": 2},
    {"id": "st_monitoring", "name": "Monitoring", "category": "live", "rank": 3},
    {"id": "st_closed", "name": "Closed", "category": "closed", "rank": 4},
]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def error(status: int, kind: str, message: str, field: str | None = None) -> web.Response:
    err: dict[str, Any] = {"code": kind, "message": message}
    if field:
        err["source"] = {"field": field}
    return web.json_response({"type": kind, "status": status, "request_id": secrets.token_hex(8), "errors": [err]},
                             status=status)


class FakeIncidentIO(ShieldedUpstream):
    def __init__(self, api_key: str = API_KEY) -> None:
        super().__init__()
        self.api_key = api_key
        self.incidents: dict[str, dict[str, Any]] = {}
        self.by_idempotency: dict[str, str] = {}
        self.created: list[str] = []
        self.timeline: dict[str, dict[str, Any]] = {}

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/severities", self.severities)
        app.router.add_get("/v1/incident_statuses", self.statuses)
        app.router.add_post("/v2/incidents", self.create)
        app.router.add_get("/v2/incidents/{id}", self.show)
        app.router.add_post("/v2/incidents/{id}/actions/edit", self.edit)
        app.router.add_post("/v2/incident_timeline_items", self.add_timeline_item)

    def _denied(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return error(401, "authentication_error", "The API key you've provided is invalid")
        return None

    async def _json(self, request: web.Request) -> dict[str, Any] | web.Response:
        try:
            data = json.loads(await request.read())
        except ValueError:
            return error(400, "invalid_request_error", "The request body is not valid JSON")
        if not isinstance(data, dict):
            return error(400, "invalid_request_error", "The request body must be an object")
        return data

    async def severities(self, request: web.Request) -> web.Response:
        if (denied := self._denied(request)) is not None:
            return denied
        return web.json_response({"severities": SEVERITIES})

    async def statuses(self, request: web.Request) -> web.Response:
        if (denied := self._denied(request)) is not None:
            return denied
        return web.json_response({"incident_statuses": STATUSES})

    async def create(self, request: web.Request) -> web.Response:
        if (denied := self._denied(request)) is not None:
            return denied
        body = await self._json(request)
        if isinstance(body, web.Response):
            return body
        for required in ("idempotency_key", "visibility"):
            if not body.get(required):
                return error(422, "validation_error", f"{required} is required", required)
        if body["visibility"] not in ("public", "private"):
            return error(422, "validation_error", "visibility must be public or private", "visibility")
        if body.get("mode", "standard") not in ("standard", "retrospective", "test", "tutorial"):
            return error(422, "validation_error", "mode is invalid", "mode")
        severity = next((s for s in SEVERITIES if s["id"] == body.get("severity_id")), None)
        if body.get("severity_id") and severity is None:
            return error(422, "validation_error", "severity_id does not exist", "severity_id")
        existing = self.by_idempotency.get(body["idempotency_key"])
        if existing:
            return web.json_response({"incident": self.incidents[existing]}, status=201)
        incident_id = "01" + secrets.token_hex(12).upper()
        reference = f"INC-{len(self.incidents) + 1}"
        incident = {"id": incident_id, "reference": reference, "name": body.get("name") or reference,
                    "summary": body.get("summary"), "severity": severity, "visibility": body["visibility"],
                    "mode": body.get("mode", "standard"), "incident_status": STATUSES[0],
                    "permalink": f"https://app.incident.io/incidents/{reference}", "created_at": _now(),
                    "updated_at": _now()}
        self.incidents[incident_id] = incident
        self.by_idempotency[body["idempotency_key"]] = incident_id
        self.created.append(incident_id)
        return web.json_response({"incident": incident}, status=201)

    async def show(self, request: web.Request) -> web.Response:
        if (denied := self._denied(request)) is not None:
            return denied
        incident = self.incidents.get(request.match_info["id"])
        if incident is None:
            return error(404, "not_found", "The referenced resource could not be found.")
        return web.json_response({"incident": incident})

    async def edit(self, request: web.Request) -> web.Response:
        if (denied := self._denied(request)) is not None:
            return denied
        incident = self.incidents.get(request.match_info["id"])
        if incident is None:
            return error(404, "not_found", "The referenced resource could not be found.")
        body = await self._json(request)
        if isinstance(body, web.Response):
            return body
        if not isinstance(body.get("notify_incident_channel"), bool):
            return error(422, "validation_error", "notify_incident_channel is required", "notify_incident_channel")
        fields = body.get("incident") or {}
        if "severity_id" in fields:
            severity = next((s for s in SEVERITIES if s["id"] == fields["severity_id"]), None)
            if severity is None:
                return error(422, "validation_error", "severity_id does not exist", "incident.severity_id")
            incident["severity"] = severity
        if "incident_status_id" in fields:
            status = next((s for s in STATUSES if s["id"] == fields["incident_status_id"]), None)
            if status is None:
                return error(422, "validation_error", "incident_status_id does not exist",
                             "incident.incident_status_id")
            incident["incident_status"] = status
        for key in ("name", "summary"):
            if key in fields:
                incident[key] = fields[key]
        incident["updated_at"] = _now()
        return web.json_response({"incident": incident})

    async def add_timeline_item(self, request: web.Request) -> web.Response:
        if (denied := self._denied(request)) is not None:
            return denied
        body = await self._json(request)
        if isinstance(body, web.Response):
            return body
        for required in ("idempotency_key", "incident_id", "timestamp", "title"):
            if not body.get(required):
                return error(422, "validation_error", f"{required} is required", required)
        if body["incident_id"] not in self.incidents:
            return error(422, "validation_error", f"No incident with ID {body['incident_id']!r} exists.",
                         "incident_id")
        existing = self.timeline.get(body["idempotency_key"])
        if existing is None:
            existing = {"id": "01" + secrets.token_hex(12).upper(), "incident_id": body["incident_id"],
                        "title": body["title"], "description": body.get("description"),
                        "timestamp": body["timestamp"], "created_at": _now(), "updated_at": _now()}
            self.timeline[body["idempotency_key"]] = existing
        return web.json_response({"incident_timeline_item": existing}, status=201)
