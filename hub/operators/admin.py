"""Operators' admin API under /admin (Bearer HUB_ADMIN_TOKEN), and the /admin HTML page.

Auth: ``HUB_ADMIN_TOKEN`` is a comma-separated list (rotation); an entry may be
``name:token`` so the audit log can say who acted (an entry with ``:`` is always
``name:token``; settings refuse any other entry with ``:``). Unset → every API call answers
503 ``admin_disabled``; no header → 401; a wrong token → 403. Tokens are compared in
constant time, as HMAC digests (length-independent), against every configured entry. The
HTML page and the OpenAPI document are public: they hold no data; everything the page shows
comes from the token-protected API.

Handlers only parse, call `hub.operators.queries` / `hub.operators.replay`, and shape JSON: bad input is a 400
with ``{"error", "detail"}``, never a 5xx.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
from collections.abc import Awaitable, Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hub.core.settings import Settings
from hub.ingress.verify import tokens_equal
from hub.operators import audit
from hub.operators.openapi import openapi_document
from hub.operators.queries import (
    MAX_LIMIT,
    EventFilter,
    QueryError,
    event_detail,
    list_dead_letters,
    list_events,
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
    purge_dead_letter,
    recent_jobs,
    replay_event,
    run_bulk,
)
from hub.storage import keys
from hub.storage.event_store import ARQ_QUEUE, DEAD, PENDING, STATES, Store, state_idx

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
BULK_TASKS = web.AppKey("admin_bulk_tasks", set)
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
TEMPLATES = Path(__file__).parent / "templates"


def error(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": code, "detail": detail}, status=status, headers=headers)


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


def protected(handler: Callable[[web.Request, str], Awaitable[web.StreamResponse]]) -> Handler:
    """Authenticate, then run the handler with the caller's name; map operator errors to 4xx."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        who = authenticate(_settings(request), _header(request, "Authorization"))
        if isinstance(who, web.Response):
            return who
        try:
            return await handler(request, who)
        except QueryError as e:
            return error(400, "bad_request", str(e))
        except ReplayRefused as e:
            return error(e.status, e.code, e.detail)
        except _redis_unavailable():
            return error(503, "unavailable", "the event store (Redis) is unreachable; try again shortly",
                         {"Retry-After": "5"})

    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped


def _header(request: web.Request, name: str) -> str | None:
    """A header as text that encodes: bytes that are not UTF-8 (kept by aiohttp as surrogate
    escapes) become U+FFFD, as at the ingress, so such a token is refused (403), not a 500."""
    from hub.ingress.app import text

    value = request.headers.get(name)
    return None if value is None else text(value)


def _redis_unavailable() -> tuple[type[BaseException], ...]:
    from hub.ingress.app import REDIS_UNAVAILABLE

    return (*REDIS_UNAVAILABLE, TimeoutError)


def _settings(request: web.Request) -> Settings:
    from hub.ingress.app import SETTINGS

    return request.app[SETTINGS]


def _store(request: web.Request) -> Store:
    from hub.ingress.app import STORE

    return request.app[STORE]


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

@protected
async def get_events(request: web.Request, who: str) -> web.Response:
    """GET /admin/events?limit&cursor&status&source&kind&since&until"""
    flt = EventFilter.from_params(request.query)
    page = await list_events(_store(request).redis, flt, parse_limit(request.query.get("limit")),
                             request.query.get("cursor") or None)
    return web.json_response({"events": page.items, "next_cursor": page.next_cursor, "scanned": page.scanned})


@protected
async def get_event(request: web.Request, who: str) -> web.Response:
    """GET /admin/events/{id}: record, normalised events, actions with attempts, timeline, payload."""
    event_id = _event_id(request)
    detail = await event_detail(_store(request).redis, event_id)
    if detail is None:
        return error(404, "not_found", f"no event {event_id!r} (unknown, or expired past HUB_RETENTION)")
    return web.json_response(detail)


@protected
async def post_event_replay(request: web.Request, who: str) -> web.Response:
    """POST /admin/events/{id}/replay[?dry_run=1][&force=1]"""
    event_id = _event_id(request)
    force = _flag(request, "force")
    store = _store(request)
    if _flag(request, "dry_run"):
        return web.json_response(await dry_run(store, event_id, force=force, settings=_settings(request)))
    return web.json_response(await replay_event(store, event_id, force=force, by=who), status=202)


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


@protected
async def post_bulk_replay(request: web.Request, who: str) -> web.Response:
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
    job = await create_bulk(store, req, who)
    task = asyncio.create_task(run_bulk(store, job["id"], settings=_settings(request)))
    tasks = request.app[BULK_TASKS]
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return web.json_response({**job, "job_id": job["id"], "status_url": f"/admin/replays/{job['id']}"}, status=202)


@protected
async def get_replay_job(request: web.Request, who: str) -> web.Response:
    """GET /admin/replays/{id}[?results=1]: progress and counts of a bulk replay."""
    job_id = request.match_info["id"]
    if not keys.is_replay_job_id(job_id):
        raise QueryError(f"not a replay job id: {job_id!r}")
    status = await bulk_status(_store(request).redis, job_id, results=_flag(request, "results"))
    if status is None:
        return error(404, "not_found", f"no replay job {job_id!r} (unknown, or older than 7 days)")
    return web.json_response(status)


@protected
async def get_replay_jobs(request: web.Request, who: str) -> web.Response:
    """GET /admin/replays: the most recent bulk replays."""
    return web.json_response({"replays": await recent_jobs(_store(request).redis,
                                                           parse_limit(request.query.get("limit"), 20))})


# -- dead letters -----------------------------------------------------------------------------

@protected
async def get_dead_letters(request: web.Request, who: str) -> web.Response:
    """GET /admin/dead-letters?limit&cursor&source&connector&since"""
    q = request.query
    redis = _store(request).redis
    page = await list_dead_letters(redis, parse_limit(q.get("limit")), q.get("cursor") or None,
                                   source=q.get("source") or None,
                                   since=parse_time(q["since"]) if q.get("since") else None,
                                   connector=q.get("connector") or None)
    return web.json_response({"dead_letters": page.items, "next_cursor": page.next_cursor,
                              "total": int(await redis.zcard(DEAD))})


@protected
async def delete_dead_letter(request: web.Request, who: str) -> web.Response:
    """DELETE /admin/dead-letters/{event id}/{action id}: purge one dead letter (recorded)."""
    return web.json_response(await purge_dead_letter(_store(request), request.match_info["id"], by=who))


# -- incidents --------------------------------------------------------------------------------

@protected
async def post_incident_ack(request: web.Request, who: str) -> web.Response:
    """POST /admin/incidents/{key}/ack: an operator acknowledges (stops the escalation timers)."""
    from hub.storage.incidents import IncidentStore

    store = _store(request)
    incidents = IncidentStore(store.redis, store.retention)
    key = await incidents.resolve(request.match_info["key"])
    if key is None:
        return error(404, "not_found", f"no incident {request.match_info['key']!r} (incident key or alias)")
    acked = await incidents.acknowledge(key, by=who)
    await audit.record(store.redis, who, "ack", key, changed=acked)
    state = await incidents.get(key) or {}
    return web.json_response({"incident": key, "acknowledged": acked,
                              "acknowledged_at": state.get("acknowledged_at"),
                              "acknowledged_by": state.get("acknowledged_by")})


# -- overview and audit -----------------------------------------------------------------------

@protected
async def get_summary(request: web.Request, who: str) -> web.Response:
    """GET /admin/summary: events per state, dead letters, queue depth; and who you are."""
    redis = _store(request).redis
    async with redis.pipeline(transaction=False) as p:
        for s in STATES:
            p.zcard(state_idx(s))
        p.zcard(DEAD)
        p.zcard(PENDING)
        p.zcard(ARQ_QUEUE)
        counts = await p.execute()
    return web.json_response({"you": who, "states": dict(zip(STATES, counts[:len(STATES)], strict=True)),
                              "dead_letters": counts[-3], "pending": counts[-2], "queue": counts[-1]})


@protected
async def get_audit(request: web.Request, who: str) -> web.Response:
    """GET /admin/audit?limit&cursor: operator actions, newest first."""
    entries, cursor = await audit.recent(_store(request).redis, parse_limit(request.query.get("limit"), 100),
                                         request.query.get("cursor") or None)
    return web.json_response({"audit": entries, "next_cursor": cursor})


# -- public: page and API description ---------------------------------------------------------

@lru_cache(maxsize=1)
def _jinja() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                              undefined=jinja2.StrictUndefined)


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


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


async def _cancel_bulk(app: web.Application) -> None:
    """On shutdown, give running bulk replays a moment, then stop (their job reads `interrupted`)."""
    tasks = list(app[BULK_TASKS])
    if tasks:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=5)
    for t in tasks:
        t.cancel()


def setup_admin(app: web.Application) -> None:
    app[BULK_TASKS] = set()
    app.on_shutdown.append(_cancel_bulk)
    r = app.router
    r.add_get("/admin", admin_page)
    r.add_get("/admin/", admin_page)
    r.add_get("/admin/openapi.json", openapi_json)
    r.add_get("/admin/summary", get_summary)
    r.add_get("/admin/events", get_events)
    r.add_get("/admin/events/{id}", get_event)
    r.add_post("/admin/events/{id}/replay", post_event_replay)
    r.add_post("/admin/replay", post_bulk_replay)
    r.add_get("/admin/replays", get_replay_jobs)
    r.add_get("/admin/replays/{id}", get_replay_job)
    r.add_get("/admin/dead-letters", get_dead_letters)
    r.add_delete("/admin/dead-letters/{id:.+}", delete_dead_letter)
    r.add_get("/admin/audit", get_audit)
    r.add_post("/admin/incidents/{key}/ack", post_incident_ack)
