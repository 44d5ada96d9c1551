"""Operators' admin API under /admin (Bearer HUB_ADMIN_TOKEN), and the /admin HTML page.

Auth: ``HUB_ADMIN_TOKEN`` is a comma-separated list (rotation); an entry may be
``name:token`` so the audit log can say who acted (an entry with ``:`` is always
``name:token``; settings refuse any other entry with ``:``). Unset → every API call answers
503 ``admin_disabled``; no header → 401; a wrong token → 403. Tokens are compared in
constant time, as HMAC digests (length-independent), against every configured entry. The
HTML page and the OpenAPI document are public: they hold no data; everything the page shows
comes from the token-protected API.

The API is an aiohttp sub-application mounted at /admin; authentication is its middleware
(`authenticated`). Handlers only parse, call `hub.operators.operations` (the actions the CLI
calls too), `queries` and `replay`, and shape JSON: bad input is a 400 with
``{"error", "detail"}``, never a 5xx.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
from collections.abc import Awaitable, Callable
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hub.core.settings import Settings
from hub.core.strict_json import dumps
from hub.ingress.shared import SETTINGS, STORE, error, text
from hub.ingress.verify import tokens_equal
from hub.operators import audit, heartbeats, maintenance, operations
from hub.operators.incidents import parse_state
from hub.operators.openapi import openapi_document
from hub.operators.queries import (
    MAX_LIMIT,
    EventFilter,
    QueryError,
    event_detail,
    parse_limit,
    parse_states,
    parse_time,
    valid_event_id,
)
from hub.operators.replay import (
    BULK_MAX,
    FAILED_STATES,
    BulkRequest,
    ReplayRefused,
    bulk_status,
    create_bulk,
    dry_run,
    recent_jobs,
    replay_event,
    run_bulk,
)
from hub.storage import keys
from hub.storage.connection import REDIS_UNAVAILABLE
from hub.storage.event_store import STATES, Store

#: The admin API's answers as strict JSON (`dumps`): a payload's NaN shows as null, which the
#: admin page's JSON.parse can read.
json_response = partial(web.json_response, dumps=dumps)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
BULK_TASKS = web.AppKey("admin_bulk_tasks", set)
#: The caller's name (from the token), set by the `authenticated` middleware.
WHO = web.RequestKey("admin_who", str)
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
TEMPLATES = Path(__file__).parent / "templates"


# -- auth -------------------------------------------------------------------------------------

@lru_cache(maxsize=8)
def parse_tokens(entries: tuple[str, ...]) -> tuple[tuple[str, bytes], ...]:
    """(name, token bytes) per configured entry; unnamed entries are `admin` (or `token#N`)."""
    out = []
    for i, entry in enumerate(entries):
        name, sep, token = entry.partition(":")
        if sep and token and _NAME.match(name):
            out.append((name, token.encode()))
        else:
            out.append(("admin" if len(entries) == 1 else f"token#{i + 1}", entry.encode()))
    return tuple(out)


def authenticate(settings: Settings, authorization: str | None) -> str | web.Response:
    """The caller's name, or the error response to send instead."""
    tokens = parse_tokens(settings.hub_admin_token)
    if not tokens:
        return error(503, "admin_disabled", "the admin API is disabled: set HUB_ADMIN_TOKEN to enable it")
    challenge = {"WWW-Authenticate": 'Bearer realm="incident-hub admin"'}
    if not authorization:
        return error(401, "missing_token", "send the admin token as 'Authorization: Bearer <HUB_ADMIN_TOKEN>'",
                     challenge)
    scheme, _, cred = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not cred.strip():
        return error(401, "missing_token", "the Authorization header must be 'Bearer <HUB_ADMIN_TOKEN>'", challenge)
    presented = cred.strip().encode()
    who = ""
    for name, token in tokens:  # no early exit: the time taken does not depend on which entry matches
        if tokens_equal(token, presented) and not who:
            who = name
    if not who:
        return error(403, "bad_token", "the admin token is not valid (HUB_ADMIN_TOKEN)")
    return who


def public(handler: Handler) -> Handler:
    """Mark a handler the `authenticated` middleware lets through without a token (it holds no data)."""
    handler.public = True  # type: ignore[attr-defined]
    return handler


@web.middleware
async def authenticated(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every API route: authenticate, then run the handler (the caller's name in `request[WHO]`),
    mapping operator errors to 4xx and an unreachable Redis to 503. Public routes, and paths
    no route matches (their 404/405 stays aiohttp's, as JSON), pass untouched."""
    if getattr(handler, "public", False) or request.match_info.http_exception is not None:
        return await handler(request)
    who = authenticate(request.config_dict[SETTINGS], _header(request, "Authorization"))
    if isinstance(who, web.Response):
        return who
    request[WHO] = who
    try:
        return await handler(request)
    except QueryError as e:
        return error(400, "bad_request", str(e))
    except ReplayRefused as e:
        return error(e.status, e.code, e.detail)
    except (*REDIS_UNAVAILABLE, TimeoutError):
        return error(503, "unavailable", "the event store (Redis) is unreachable; try again shortly",
                     {"Retry-After": "5"})


def _header(request: web.Request, name: str) -> str | None:
    """A header as text that encodes: bytes that are not UTF-8 (kept by aiohttp as surrogate
    escapes) become U+FFFD, as at the ingress, so such a token is refused (403), not a 500."""
    value = request.headers.get(name)
    return None if value is None else text(value)


def _settings(request: web.Request) -> Settings:
    return request.config_dict[SETTINGS]


def _store(request: web.Request) -> Store:
    return request.config_dict[STORE]


def _flag(request: web.Request, name: str) -> bool:
    value = request.query.get(name)
    if value is None:
        return False
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on", ""):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise QueryError(f"{name} must be 1 or 0, got {value!r}")


def _event_id(request: web.Request) -> str:
    event_id = request.match_info["id"]
    if not valid_event_id(event_id):
        raise QueryError(f"not an event id: {event_id!r}")
    return event_id


# -- events -----------------------------------------------------------------------------------

async def get_events(request: web.Request) -> web.Response:
    """GET /admin/events?limit&cursor&status&source&kind&since&until"""
    flt = EventFilter.from_params(request.query)
    return json_response(await operations.events_page(_store(request), flt,
                                                          parse_limit(request.query.get("limit")),
                                                          request.query.get("cursor") or None))


async def get_event(request: web.Request) -> web.Response:
    """GET /admin/events/{id}: record, normalised events, actions with attempts, timeline, payload."""
    event_id = _event_id(request)
    detail = await event_detail(_store(request).redis, event_id)
    if detail is None:
        return error(404, "not_found", f"no event {event_id!r} (unknown, or expired past HUB_RETENTION)")
    return json_response(detail)


async def post_event_replay(request: web.Request) -> web.Response:
    """POST /admin/events/{id}/replay[?dry_run=1][&force=1]"""
    event_id = _event_id(request)
    force = _flag(request, "force")
    store = _store(request)
    if _flag(request, "dry_run"):
        return json_response(await dry_run(store, event_id, force=force, settings=_settings(request)))
    return json_response(await replay_event(store, event_id, force=force, by=request[WHO]), status=202)


# -- bulk replay ------------------------------------------------------------------------------

class BulkBody(BaseModel):
    """The body (or query) of POST /admin/replay."""

    model_config = ConfigDict(extra="forbid")

    ids: list[str] = Field(default_factory=list, max_length=BULK_MAX)
    status: str | None = None
    source: str | None = None
    kind: str | None = None
    since: str | int | None = None
    until: str | int | None = None
    force: bool = False
    dry_run: bool = False
    limit: int = Field(BULK_MAX, ge=1, le=BULK_MAX)


async def _bulk_body(request: web.Request) -> BulkBody:
    data: dict[str, Any] = {}
    if request.can_read_body:
        try:
            raw = await request.read()
        except (web.HTTPRequestEntityTooLarge, web.RequestPayloadError) as e:
            raise QueryError(f"body could not be read: {e}") from None
        if raw.strip():
            try:
                data = json.loads(raw)
            except ValueError as e:
                raise QueryError(f"body is not valid JSON: {e}") from None
            if not isinstance(data, dict):
                raise QueryError("body must be a JSON object")
    for key, value in request.query.items():
        data.setdefault(key, value in ("1", "true", "yes", "") if key in ("force", "dry_run") else value)
    try:
        return BulkBody.model_validate(data)
    except ValidationError as e:
        parts = [f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in e.errors()[:3]]
        raise QueryError("; ".join(parts)) from None


async def post_bulk_replay(request: web.Request) -> web.Response:
    """POST /admin/replay: replay every event matching a filter (default: failed ones), in the background."""
    body = await _bulk_body(request)
    for event_id in body.ids:
        if not valid_event_id(event_id):
            raise QueryError(f"not an event id: {event_id!r}")
    flt = EventFilter(states=parse_states(body.status) or FAILED_STATES, source=body.source, kind=body.kind,
                      since=parse_time(str(body.since)) if body.since not in (None, "") else None,
                      until=parse_time(str(body.until)) if body.until not in (None, "") else None)
    req = BulkRequest(ids=tuple(body.ids), filter=flt, force=body.force, dry_run=body.dry_run, limit=body.limit)
    store = _store(request)
    job = await create_bulk(store, req, request[WHO])
    task = asyncio.create_task(run_bulk(store, job["id"], settings=_settings(request)))
    tasks = request.app[BULK_TASKS]
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return json_response({**job, "job_id": job["id"], "status_url": f"/admin/replays/{job['id']}"}, status=202)


async def get_replay_job(request: web.Request) -> web.Response:
    """GET /admin/replays/{id}[?results=1]: progress and counts of a bulk replay."""
    job_id = request.match_info["id"]
    if not keys.is_replay_job_id(job_id):
        raise QueryError(f"not a replay job id: {job_id!r}")
    status = await bulk_status(_store(request).redis, job_id, results=_flag(request, "results"))
    if status is None:
        return error(404, "not_found", f"no replay job {job_id!r} (unknown, or older than 7 days)")
    return json_response(status)


async def get_replay_jobs(request: web.Request) -> web.Response:
    """GET /admin/replays: the most recent bulk replays."""
    return json_response({"replays": await recent_jobs(_store(request).redis,
                                                           parse_limit(request.query.get("limit"), 20))})


# -- dead letters -----------------------------------------------------------------------------

async def get_dead_letters(request: web.Request) -> web.Response:
    """GET /admin/dead-letters?limit&cursor&source&connector&since"""
    q = request.query
    return json_response(await operations.dead_letters_page(
        _store(request), parse_limit(q.get("limit")), q.get("cursor") or None, source=q.get("source") or None,
        since=parse_time(q["since"]) if q.get("since") else None, connector=q.get("connector") or None))


async def delete_dead_letter(request: web.Request) -> web.Response:
    """DELETE /admin/dead-letters/{event id}/{action id}: purge one dead letter (recorded)."""
    return json_response(await operations.purge(_store(request), request.match_info["id"], request[WHO]))


# -- incidents --------------------------------------------------------------------------------

async def get_incidents(request: web.Request) -> web.Response:
    """GET /admin/incidents?limit&cursor&state=open|resolved&since: newest declared first."""
    q = request.query
    return json_response(await operations.incidents_page(
        _store(request), parse_limit(q.get("limit")), q.get("cursor") or None, state=parse_state(q.get("state")),
        since=parse_time(q["since"]) if q.get("since") else None))


async def get_incident(request: web.Request) -> web.Response:
    """GET /admin/incidents/{key}: record, timeline, timers, alerts (key URL-encoded; an alias works too)."""
    name = request.match_info["key"]
    detail = await operations.incident(_store(request), name)
    if detail is None:
        return error(404, "not_found", f"no incident {name[:200]!r} (incident key or alias; unknown, or expired "
                                       "past HUB_RETENTION)")
    return json_response(detail)


async def post_incident_ack(request: web.Request) -> web.Response:
    """POST /admin/incidents/{key}/ack: an operator acknowledges (stops the escalation timers)."""
    name = request.match_info["key"]
    result = await operations.acknowledge(_store(request), name, request[WHO])
    if result is None:
        return error(404, "not_found", f"no incident {name!r} (incident key or alias)")
    return json_response(result)


# -- maintenance windows ----------------------------------------------------------------------

async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        raw = await request.read()
        data = json.loads(raw) if raw.strip() else {}
    except (web.HTTPRequestEntityTooLarge, web.RequestPayloadError) as e:
        raise QueryError(f"body could not be read: {e}") from None
    except ValueError as e:
        raise QueryError(f"body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise QueryError("body must be a JSON object")
    return data


async def post_maintenance(request: web.Request) -> web.Response:
    """POST /admin/maintenance: a window from now, for `duration` or until `ends_at` (audited)."""
    try:
        req = maintenance.WindowRequest.model_validate(await _json_object(request))
        window = await maintenance.start(_store(request), req, request[WHO])
    except ValidationError as e:
        parts = [f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in e.errors()[:3]]
        raise QueryError("; ".join(parts)) from None
    except ValueError as e:
        raise QueryError(str(e)) from None
    return json_response({**window, "active": True}, status=201)


async def get_maintenance(request: web.Request) -> web.Response:
    """GET /admin/maintenance: the windows open now and the upcoming ones (file and run time)."""
    rules = maintenance.file_rules(_settings(request))
    return json_response(await maintenance.listing(_store(request), rules))


async def delete_maintenance(request: web.Request) -> web.Response:
    """DELETE /admin/maintenance/{id}: end a run-time window now (its held alerts are evaluated again)."""
    window_id = request.match_info["id"]
    result = await maintenance.end(_store(request), window_id, request[WHO])
    if result is None:
        return error(404, "not_found", f"no open run-time maintenance window {window_id[:80]!r}")
    return json_response(result)


async def get_heartbeats(request: web.Request) -> web.Response:
    """GET /admin/heartbeats: each heartbeat of the rules file with its last ping, due time, paused, missed."""
    rules = maintenance.file_rules(_settings(request))
    return json_response(await heartbeats.listing(_store(request), rules))


async def post_heartbeat(request: web.Request) -> web.Response:
    """POST /admin/heartbeats/{name}/pause|resume (audited)."""
    name = request.match_info["name"]
    act = heartbeats.pause if request.path.endswith("/pause") else heartbeats.resume
    result = await act(_store(request), maintenance.file_rules(_settings(request)), name, request[WHO])
    if result is None:
        return error(404, "not_found", "no such heartbeat in the rules file")
    return json_response(result)


# -- overview and audit -----------------------------------------------------------------------

async def get_summary(request: web.Request) -> web.Response:
    """GET /admin/summary: events per state, dead letters, queue depth; and who you are."""
    return json_response({"you": request[WHO], **await operations.summary(_store(request))})


async def get_audit(request: web.Request) -> web.Response:
    """GET /admin/audit?limit&cursor: operator actions, newest first."""
    entries, cursor = await audit.recent(_store(request).redis, parse_limit(request.query.get("limit"), 100),
                                         request.query.get("cursor") or None)
    return json_response({"audit": entries, "next_cursor": cursor})


# -- public: page and API description ---------------------------------------------------------

@lru_cache(maxsize=1)
def _jinja() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                              undefined=jinja2.StrictUndefined)


@public
async def admin_page(request: web.Request) -> web.Response:
    """GET /admin: the operators' page (no data in it; it calls the API with the token you enter)."""
    from hub.core.registry import sources

    nonce = secrets.token_urlsafe(16)
    html = _jinja().get_template("admin.html").render(
        nonce=nonce, states=STATES, sources=sorted(sources()), max_limit=MAX_LIMIT,
        enabled=bool(_settings(request).hub_admin_token))
    csp = (f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; "
           "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    return web.Response(text=html, content_type="text/html", headers={
        "Content-Security-Policy": csp, "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer"})


@public
async def openapi_json(request: web.Request) -> web.Response:
    return json_response(openapi_document())


async def _cancel_bulk(app: web.Application) -> None:
    """On shutdown, give running bulk replays a moment, then stop (their job reads `interrupted`)."""
    tasks = list(app[BULK_TASKS])
    if tasks:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=5)
    for t in tasks:
        t.cancel()


def admin_app() -> web.Application:
    """The admin sub-application, mounted at /admin by `hub.ingress.app.create_app` (which
    holds the settings and the store: handlers read them through `request.config_dict`)."""
    app = web.Application(middlewares=[authenticated])
    app[BULK_TASKS] = set()
    app.on_shutdown.append(_cancel_bulk)
    r = app.router
    r.add_get("", admin_page)
    r.add_get("/", admin_page)
    r.add_get("/openapi.json", openapi_json)
    r.add_get("/summary", get_summary)
    r.add_get("/events", get_events)
    r.add_get("/events/{id}", get_event)
    r.add_post("/events/{id}/replay", post_event_replay)
    r.add_post("/replay", post_bulk_replay)
    r.add_get("/replays", get_replay_jobs)
    r.add_get("/replays/{id}", get_replay_job)
    r.add_get("/dead-letters", get_dead_letters)
    r.add_delete("/dead-letters/{id:.+}", delete_dead_letter)
    r.add_get("/audit", get_audit)
    r.add_get("/incidents", get_incidents)
    # incident keys hold ':', '{', '}' (a sender's group key) and, URL-encoded, '/': any segment
    r.add_get("/incidents/{key:[^/]+}", get_incident)
    r.add_post("/incidents/{key:[^/]+}/ack", post_incident_ack)
    r.add_get("/maintenance", get_maintenance)
    r.add_post("/maintenance", post_maintenance)
    r.add_delete("/maintenance/{id}", delete_maintenance)
    r.add_get("/heartbeats", get_heartbeats)
    r.add_post("/heartbeats/{name}/pause", post_heartbeat)
    r.add_post("/heartbeats/{name}/resume", post_heartbeat)
    return app
