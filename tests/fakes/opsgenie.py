"""Fake OpsGenie Alert API v2 (CONTRACTS §2.2): create, acknowledge, close, notes, by alias.

`Authorization: GenieKey <key>` or 401. Every accepted request answers 202 with a
`requestId`, as OpsGenie does (it processes asynchronously). One alert is open per alias:
a create for an alias that is open adds to that alert's count instead of opening another.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.shielded import ShieldedUpstream

API_KEY = "og-test-key-0123456789"


@dataclass
class Alert:
    alias: str
    message: str
    body: dict[str, Any]
    status: str = "open"
    acknowledged: bool = False
    count: int = 1
    notes: list[str] = field(default_factory=list)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"message": message, "took": 0.001, "requestId": str(uuid.uuid4())}, status=status)


def _accepted() -> web.Response:
    return web.json_response({"result": "Request will be processed", "took": 0.002, "requestId": str(uuid.uuid4())},
                             status=202)


class FakeOpsGenie(ShieldedUpstream):
    def __init__(self, api_key: str = API_KEY) -> None:
        super().__init__()
        self.api_key = api_key
        self.alerts: dict[str, list[Alert]] = {}

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v2/alerts", self.create)
        app.router.add_post("/v2/alerts/{identifier}/{verb:acknowledge|close|notes}", self.on_alert)

    def open_alert(self, alias: str) -> Alert | None:
        return next((a for a in self.alerts.get(alias, []) if a.status == "open"), None)

    def created(self) -> list[Alert]:
        return [a for alerts in self.alerts.values() for a in alerts]

    def _authorised(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"GenieKey {self.api_key}"

    async def create(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return _error(401, "Key format is not valid!")
        try:
            body = json.loads(await request.read())
        except ValueError:
            return _error(400, "Could not parse the request body")
        message = body.get("message") if isinstance(body, dict) else None
        if not message or len(message) > 130:
            return _error(422, "Message can not be empty and must be at most 130 characters.")
        alias = str(body.get("alias") or message)
        if len(alias) > 512:
            return _error(422, "Alias must be at most 512 characters.")
        existing = self.open_alert(alias)
        if existing:
            existing.count += 1
        else:
            self.alerts.setdefault(alias, []).append(Alert(alias, message, body))
        return _accepted()

    async def on_alert(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return _error(401, "Key format is not valid!")
        if request.query.get("identifierType", "id") != "alias":
            return _error(404, "Alert does not exist")  # this fake only knows aliases
        body = json.loads(await request.read() or b"{}")
        alert = self.open_alert(request.match_info["identifier"])
        verb = request.match_info["verb"]
        if verb == "notes" and not body.get("note"):
            return _error(422, "Note can not be empty.")
        if alert is not None:  # OpsGenie accepts either way; the async outcome says "alert not found"
            if verb == "close":
                alert.status = "closed"
            elif verb == "acknowledge":
                alert.acknowledged = True
            if body.get("note"):
                alert.notes.append(body["note"])
        return _accepted()
