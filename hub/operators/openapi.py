"""The OpenAPI 3.1 description of the admin API, served at /admin/openapi.json.

Kept by hand next to `hub/operators/admin.py` (the routes are few and the shapes are the contract's,
see docs/DESIGN.md "Formats that tools and tests rely on"); a test checks every route is in it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from hub.storage.event_store import STATES


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "bad input (filter, cursor, id, body)", 401: "no bearer token", 403: "wrong token",
            404: "not found", 409: "the event is still in flight", 422: "the current rules cannot plan the event",
            503: "admin API disabled (HUB_ADMIN_TOKEN unset)"}
    return {str(c): _json(_ref("Error"), text[c]) for c in codes}


def _q(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema or {"type": "string"}}


_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_KEY = {"name": "key", "in": "path", "required": True, "schema": {"type": "string"},
        "description": "incident key (<source>:<id>, alert fingerprint, a sender group's key) or alias, URL-encoded"}
_FLAG = {"type": "string", "enum": ["0", "1"]}
_AUTH = (400, 401, 403, 503)


@lru_cache(maxsize=1)
def openapi_document() -> dict[str, Any]:
    from hub.core.registry import connector_classes, sources

    listing = [
        _q("limit", "page size, 1–500 (default 50)", {"type": "integer", "minimum": 1, "maximum": 500}),
        _q("cursor", "next_cursor of the previous page"),
        _q("status", "a state, a comma list, or failed / final / in_flight"),
        _q("source", ", ".join(sorted(sources()))),
        _q("kind", "a normalised kind, e.g. alert.firing"),
        _q("since", "age (1h, 7d), epoch seconds/ms or ISO 8601"),
        _q("until", "as since"),
    ]
    paths: dict[str, Any] = {
        "/admin/events": {"get": {
            "summary": "List events, newest first", "parameters": listing,
            "responses": {"200": _json(_ref("EventPage"), "a page; a short page with a cursor means the scan "
                                                          "budget was spent, continue with the cursor"),
                          **_errors(*_AUTH)}}},
        "/admin/events/{id}": {"get": {
            "summary": "One event: record, normalised events, actions with attempts, timeline, raw payload",
            "parameters": [_ID], "responses": {"200": _json(_ref("EventDetail"), "the event"),
                                               **_errors(*_AUTH, 404)}}},
        "/admin/events/{id}/replay": {"post": {
            "summary": "Replay one finished event under the current rules",
            "parameters": [_ID, _q("dry_run", "1: only say what would happen", _FLAG),
                           _q("force", "1: re-run succeeded actions too (original idempotency keys)", _FLAG)],
            "responses": {"200": _json(_ref("DryRun"), "dry run"), "202": _json(_ref("Replay"), "replaying"),
                          **_errors(*_AUTH, 404, 409, 422)}}},
        "/admin/replay": {"post": {
            "summary": "Bulk replay by filter (default: failed events) or by ids; runs in the background",
            "requestBody": {"required": False, "content": {"application/json": {"schema": _ref("BulkRequest")}}},
            "responses": {"202": _json(_ref("ReplayJob"), "the job; poll status_url"), **_errors(*_AUTH)}}},
        "/admin/replays": {"get": {"summary": "Recent bulk replays", "parameters": [listing[0]],
                                   "responses": {"200": _json({"type": "object", "properties": {
                                       "replays": {"type": "array", "items": _ref("ReplayJob")}}}, "jobs"),
                                       **_errors(*_AUTH)}}},
        "/admin/replays/{id}": {"get": {
            "summary": "Progress of a bulk replay", "parameters": [_ID, _q("results", "1: include per-event "
                                                                                     "outcomes", _FLAG)],
            "responses": {"200": _json(_ref("ReplayJob"), "the job"), **_errors(*_AUTH, 404)}}},
        "/admin/dead-letters": {"get": {
            "summary": "Dead-lettered actions, newest first",
            "parameters": [listing[0], listing[1], listing[3], listing[5],
                           _q("connector", "one of " + ", ".join(sorted(connector_classes())))],
            "responses": {"200": _json(_ref("DeadLetterPage"), "a page"), **_errors(*_AUTH)}}},
        "/admin/dead-letters/{id}": {"delete": {
            "summary": "Purge a dead letter; id is EVENT_ID/ACTION_ID (recorded in the audit log)",
            "parameters": [_ID], "responses": {"200": _json({"type": "object"}, "purged"),
                                               **_errors(*_AUTH, 404)}}},
        "/admin/summary": {"get": {"summary": "Events per state, dead letters, queue depth",
                                   "responses": {"200": _json({"type": "object"}, "counts"), **_errors(*_AUTH)}}},
        "/admin/audit": {"get": {"summary": "Operator actions, newest first", "parameters": listing[:2],
                                 "responses": {"200": _json({"type": "object"}, "entries"), **_errors(*_AUTH)}}},
        "/admin/incidents": {"get": {
            "summary": "Open and recent incidents, newest declared first, with alert counts, sources and page state",
            "parameters": [listing[0], listing[1], _q("state", "open or resolved (default: both)",
                                                      {"type": "string", "enum": ["open", "resolved"]}),
                           _q("since", "declared since: age (1h, 7d), epoch seconds/ms or ISO 8601")],
            "responses": {"200": _json(_ref("IncidentPage"), "a page; a short page with a cursor means the scan "
                                                             "budget was spent, continue with the cursor"),
                          **_errors(*_AUTH)}}},
        "/admin/incidents/{key}": {"get": {
            "summary": "One incident: record, alerts (first 500), joined alerts, timers, timeline",
            "parameters": [_KEY], "responses": {"200": _json(_ref("IncidentDetail"), "the incident"),
                                                **_errors(*_AUTH, 404)}}},
        "/admin/incidents/{key}/ack": {"post": {
            "summary": "Operator acknowledgement of an incident (stops its escalation); audited",
            "parameters": [_KEY],
            "responses": {"200": _json({"type": "object"}, "the incident's acknowledgement"),
                          **_errors(*_AUTH, 404)}}},
        "/admin/maintenance": {
            "get": {"summary": "Maintenance windows open now and upcoming (the rules file's and run-time ones)",
                    "responses": {"200": _json({"type": "object", "properties": {
                        "windows": {"type": "array", "items": _ref("Window")}}}, "windows"), **_errors(*_AUTH)}},
            "post": {"summary": "Start a maintenance window now (for a duration or until ends_at); audited",
                     "requestBody": {"required": True, "content": {"application/json": {
                         "schema": _ref("WindowRequest")}}},
                     "responses": {"201": _json(_ref("Window"), "the window"), **_errors(*_AUTH)}}},
        "/admin/maintenance/{id}": {"delete": {
            "summary": "End a run-time window now; the alerts it held still firing are evaluated again; audited",
            "parameters": [_ID], "responses": {"200": _json(_ref("Window"), "the ended window"),
                                               **_errors(*_AUTH, 404)}}},
        "/admin/heartbeats": {"get": {
            "summary": "Heartbeats of the rules file: last ping, due, paused, missed",
            "responses": {"200": _json({"type": "object"}, "heartbeats"), **_errors(*_AUTH)}}},
        "/admin/heartbeats/{name}/pause": {"post": {
            "summary": "Pause a heartbeat (never missed until resumed); audited",
            "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": _json({"type": "object"}, "paused"), **_errors(*_AUTH, 404)}}},
        "/admin/heartbeats/{name}/resume": {"post": {
            "summary": "Resume a heartbeat: due one interval + grace from now; audited",
            "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": _json({"type": "object"}, "resumed"), **_errors(*_AUTH, 404)}}},
    }
    schemas: dict[str, Any] = {
        "Error": {"type": "object", "required": ["error", "detail"],
                  "properties": {"error": {"type": "string"}, "detail": {"type": "string"}}},
        "EventRow": {"type": "object", "required": ["id", "source", "state", "received_at"], "properties": {
            "id": {"type": "string"}, "source": {"type": "string"}, "state": {"type": "string", "enum": list(STATES)},
            "received_at": {"type": "integer", "description": "epoch ms"}, "updated_at": {"type": "integer"},
            "delivery_id": {"type": "string"}, "kinds": {"type": "array", "items": {"type": "string"}},
            "size": {"type": "integer"}, "error": {"type": ["string", "null"]},
            "title": {"type": "string", "description": "the first parsed event's title"},
            "severity": {"type": ["string", "null"], "description": "the highest severity of its events"},
            "services": {"type": "array", "items": {"type": "string"}}}},
        "EventPage": {"type": "object", "required": ["events", "next_cursor"], "properties": {
            "events": {"type": "array", "items": _ref("EventRow")},
            "next_cursor": {"type": ["string", "null"]}, "scanned": {"type": "integer"}}},
        "Attempt": {"type": "object", "properties": {
            "at": {"type": "integer"}, "status": {"type": ["integer", "null"]}, "outcome": {"type": "string"},
            "error": {"type": ["string", "null"]}, "duration_ms": {"type": "number"},
            "response": {"type": ["string", "null"]}}},
        "Action": {"type": "object", "required": ["name", "state", "attempts"], "properties": {
            "id": {"type": "string"}, "name": {"type": "string"},
            "state": {"type": "string", "enum": ["pending", "retrying", "succeeded", "skipped", "dead"]},
            "attempts": {"type": "array", "items": _ref("Attempt")},
            "history": {"type": "array", "items": {"type": "object"}, "description": "earlier rounds, before "
                                                                                     "each replay"},
            "params": {"type": "object", "description": "redacted"}, "idempotency_key": {"type": "string"},
            "next_at": {"type": ["integer", "null"]}, "error": {"type": ["string", "null"]},
            "dead_letter": {"type": "boolean"}}},
        "EventDetail": {"allOf": [_ref("EventRow"), {"type": "object", "properties": {
            "events": {"type": "array", "items": {"type": "object"}},
            "incidents": {"type": "array", "description": "the incidents the event opened, joined (correlated "
                                                          "into) or updated", "items": {
                "type": "object", "required": ["key", "relation"], "properties": {
                    "key": {"type": "string"}, "relation": {"enum": ["opened", "joined", "updated"]},
                    "alerts": {"type": "integer", "description": "the event's alerts on it"},
                    "title": {"type": "string"}, "state": {"enum": ["open", "resolved", None]},
                    "exists": {"type": "boolean"}}}},
            "actions": {"type": "array", "items": _ref("Action")},
            "timeline": {"type": "array", "items": {"type": "object"}},
            "payload": {}, "headers": {"type": "object"}, "verified": {"type": "string"}}}]},
        "DryRun": {"type": "object", "required": ["dry_run", "actions"], "properties": {
            "dry_run": {"const": True}, "event_id": {"type": "string"}, "force": {"type": "boolean"},
            "actions": {"type": "array", "items": {"type": "object", "required": ["name", "would"], "properties": {
                "name": {"type": "string"}, "would": {"enum": ["run", "skip"]}, "reason": {"type": "string"},
                "note": {"type": "string"}}}}}},
        "Replay": {"type": "object", "properties": {
            "event_id": {"type": "string"}, "status": {"const": "replaying"}, "force": {"type": "boolean"},
            "reset": {"type": "array", "items": {"type": "string"}}}},
        "BulkRequest": {"type": "object", "additionalProperties": False, "properties": {
            "ids": {"type": "array", "items": {"type": "string"}}, "status": {"type": "string"},
            "source": {"type": "string"}, "kind": {"type": "string"}, "since": {"type": "string"},
            "until": {"type": "string"}, "force": {"type": "boolean"}, "dry_run": {"type": "boolean"},
            "limit": {"type": "integer", "maximum": 10000}}},
        "ReplayJob": {"type": "object", "properties": {
            "id": {"type": "string"}, "state": {"enum": ["running", "done", "interrupted"]},
            "total": {"type": "integer"}, "processed": {"type": "integer"}, "replayed": {"type": "integer"},
            "skipped": {"type": "integer"}, "failed": {"type": "integer"}, "would_run": {"type": "integer"},
            "progress": {"type": "number"}}},
        "WindowRequest": {"type": "object", "additionalProperties": False, "required": ["match"], "properties": {
            "match": {"type": "object", "additionalProperties": False, "properties": {
                "services": {"type": "array", "items": {"type": "string"}},
                "teams": {"type": "array", "items": {"type": "string"}},
                "sources": {"type": "array", "items": {"type": "string"}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}}}},
            "duration": {"type": ["string", "number"], "description": "e.g. 30m (at most 7d)"},
            "ends_at": {"type": "string", "format": "date-time"}, "reason": {"type": "string", "maxLength": 500},
            "name": {"type": "string", "maxLength": 63}}},
        "Window": {"type": "object", "properties": {
            "id": {"type": "string"}, "name": {"type": "string"}, "match": {"type": "object"},
            "start": {"type": "integer", "description": "epoch ms"}, "end": {"type": "integer"},
            "origin": {"enum": ["file", "api"]}, "reason": {"type": "string"}, "active": {"type": "boolean"}}},
        "IncidentRow": {"type": "object", "required": ["key", "state", "declared_at", "alert_count"], "properties": {
            "key": {"type": "string"}, "kind": {"enum": ["alert", "incident"]}, "source": {"type": "string"},
            "title": {"type": "string"}, "severity": {"type": ["string", "null"]},
            "status": {"type": ["string", "null"], "description": "the source's status name"},
            "status_category": {"type": ["string", "null"]}, "state": {"enum": ["open", "resolved"]},
            "episode": {"type": "integer"}, "declared_at": {"type": "integer", "description": "epoch ms"},
            "acknowledged_at": {"type": ["integer", "null"]}, "acknowledged_by": {"type": ["string", "null"]},
            "resolved_at": {"type": ["integer", "null"]}, "resolution": {"type": ["string", "null"]},
            "services": {"type": "array", "items": {"type": "string"}},
            "sources": {"type": "array", "items": {"type": "string"}},
            "alert_count": {"type": "integer", "description": "a sender group's alerts plus the alerts that "
                                                              "joined it (grouping:)"},
            "group": {"type": ["string", "null"], "description": "the sender's notification group key"},
            "page_dedup_key": {"type": ["string", "null"]}, "paged_by": {"type": ["string", "null"]},
            "escalation_level": {"type": "integer"}, "escalated_at": {"type": ["integer", "null"]},
            "linked": {"type": "object", "description": "outside ids recorded on it (connector result fields)"}}},
        "IncidentPage": {"type": "object", "required": ["incidents", "next_cursor"], "properties": {
            "incidents": {"type": "array", "items": _ref("IncidentRow")},
            "next_cursor": {"type": ["string", "null"]}, "scanned": {"type": "integer"}}},
        "IncidentDetail": {"type": "object", "required": ["key", "incident", "alerts", "timeline"], "properties": {
            "key": {"type": "string"}, "alias_of": {"type": ["string", "null"]},
            "incident": {"allOf": [_ref("IncidentRow"), {"type": "object", "properties": {
                "record": {"type": "object", "description": "the stored record"}}}]},
            "alerts": {"type": "array", "items": {"type": "object", "properties": {
                "fingerprint": {"type": "string"}, "status": {"type": ["string", "null"]},
                "title": {"type": "string"}, "source": {"type": ["string", "null"]},
                "first_seen": {"type": ["integer", "null"]}, "last_seen": {"type": ["integer", "null"]},
                "event_id": {"type": ["string", "null"]}}}},
            "alerts_total": {"type": "integer"}, "alerts_truncated": {"type": "boolean"},
            "joined": {"type": "array", "items": {"type": "object", "properties": {
                "incident": {"type": "string"}, "status": {"enum": ["firing", "resolved"]},
                "at": {"type": ["integer", "null"]}}}},
            "joined_total": {"type": "integer"}, "joined_truncated": {"type": "boolean"},
            "timers": {"type": "array", "items": {"type": "object"}},
            "timeline": {"type": "array", "items": {"type": "object"}},
            "timeline_total": {"type": "integer"}, "timeline_truncated": {"type": "boolean"}}},
        "DeadLetterPage": {"type": "object", "properties": {
            "dead_letters": {"type": "array", "items": {"type": "object"}},
            "next_cursor": {"type": ["string", "null"]}, "total": {"type": "integer"}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "incident-hub admin API", "version": "1",
                 "description": "Operators' API: event timelines, incidents, dead letters, replay. "
                                "Bearer HUB_ADMIN_TOKEN."},
        "components": {"securitySchemes": {"admin": {"type": "http", "scheme": "bearer"}}, "schemas": schemas},
        "security": [{"admin": []}],
        "paths": paths,
    }
