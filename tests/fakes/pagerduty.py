"""Fake PagerDuty Events API v2 (CONTRACTS §2.1): `POST /v2/enqueue`, with its dedup semantics.

One alert is open per (routing_key, dedup_key). A trigger on an open alert is folded into
it; after a resolve, a trigger opens a new alert and acknowledge/resolve for a key with no
open alert are dropped, all answered 202 as PagerDuty does. `created` lists the triggers
that opened an alert, so a test can count real pages.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.shielded import ShieldedUpstream

ENQUEUE_PATH = "/v2/enqueue"
SEVERITIES = {"critical", "error", "warning", "info"}


@dataclass
class Alert:
    routing_key: str
    dedup_key: str
    summary: str
    status: str = "triggered"
    events: list[str] = field(default_factory=list)


def _invalid(errors: list[str]) -> web.Response:
    return web.json_response({"status": "invalid event", "message": "Event object is invalid", "errors": errors},
                             status=400)


class FakePagerDuty(ShieldedUpstream):
    def __init__(self) -> None:
        super().__init__()
        self.alerts: dict[tuple[str, str], Alert] = {}
        self.created: list[Alert] = []
        self.dropped: list[dict[str, Any]] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_post(ENQUEUE_PATH, self.enqueue)

    @property
    def events_url(self) -> str:
        return self.url + ENQUEUE_PATH

    async def enqueue(self, request: web.Request) -> web.Response:
        try:
            event = json.loads(await request.read())
        except ValueError:
            return _invalid(["Invalid JSON"])
        if not isinstance(event, dict):
            return _invalid(["Event object is invalid"])
        errors = []
        routing_key, action = event.get("routing_key"), event.get("event_action")
        if not isinstance(routing_key, str) or not routing_key:
            errors.append("'routing_key' is missing or blank")
        if action not in ("trigger", "acknowledge", "resolve"):
            errors.append("'event_action' is invalid")
        dedup_key = event.get("dedup_key")
        if dedup_key is not None and (not isinstance(dedup_key, str) or len(dedup_key) > 255):
            errors.append("'dedup_key' must be a string of at most 255 characters")
        if action == "trigger":
            payload = event.get("payload") or {}
            if not payload.get("summary") or len(str(payload.get("summary"))) > 1024:
                errors.append("'payload.summary' is missing or too long")
            if not payload.get("source"):
                errors.append("'payload.source' is missing")
            if payload.get("severity") not in SEVERITIES:
                errors.append("'payload.severity' is invalid")
        elif not dedup_key:
            errors.append("'dedup_key' is required for acknowledge and resolve")
        if errors:
            return _invalid(errors)

        dedup_key = dedup_key or uuid.uuid4().hex
        alert = self.alerts.get((routing_key, dedup_key))
        open_alert = alert if alert and alert.status != "resolved" else None
        if action == "trigger":
            if open_alert is None:
                open_alert = Alert(routing_key, dedup_key, event["payload"]["summary"])
                self.alerts[(routing_key, dedup_key)] = open_alert
                self.created.append(open_alert)
            open_alert.events.append("trigger")
        elif open_alert is None:
            self.dropped.append(event)
        else:
            open_alert.status = "acknowledged" if action == "acknowledge" else "resolved"
            open_alert.events.append(action)
        return web.json_response({"status": "success", "message": "Event processed", "dedup_key": dedup_key},
                                 status=202)
