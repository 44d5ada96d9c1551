"""`GET`/`POST /heartbeats/{name}`: a pinger checks in (`heartbeats:` in `hub.yaml`).

The token is `Authorization: Bearer …` or `?token=…` (many pingers cannot set headers),
compared in constant time with the heartbeat's own (an `env:` reference, read when the
ping arrives). An unknown name is 404, a missing or wrong token 401. A ping answers
`200 {"name", "next_due"}` (ISO 8601: when the next ping is expected) after one Redis
script (`hub.storage.heartbeats`); a ping that ends a missed period leaves a
`heartbeat.recovered` in the outbox, recorded by the worker's next check (≤ 5 s).

The web process also tells the workers it is up (`HEARTBEATS_INGRESS`, refreshed every
5 s): while no web process is, pings cannot arrive and no heartbeat is judged missed. When
the web comes back after such a gap, every heartbeat gets one full interval + grace.
The heartbeats are read from the rules file when the web process starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from aiohttp import web

from hub.core import envref
from hub.ingress.shared import SETTINGS, STORE, error, text
from hub.ingress.verify import tokens_equal
from hub.rules import Rules, RulesError, load_rules
from hub.rules.heartbeats import Heartbeat
from hub.storage.connection import REDIS_UNAVAILABLE
from hub.storage.event_store import now_ms
from hub.storage.heartbeats import HeartbeatStore

log = logging.getLogger("hub.ingress.heartbeats")
HEARTBEATS = web.AppKey("heartbeats", dict)
ALIVE_EVERY_S = 5.0
ALIVE_TTL_MS = 20_000


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _presented(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization")
    if auth is not None:
        scheme, _, token = text(auth).partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    token = request.query.get("token")
    return text(token) if token else None


async def ping(request: web.Request) -> web.Response:
    """A pinger checks in: 200 with the next due time; 404 unknown name; 401 wrong token."""
    name = request.match_info["name"]
    beats: dict[str, Heartbeat] = request.app[HEARTBEATS]
    hb = beats.get(name)
    if hb is None:
        return error(404, "not_found", "no such heartbeat")
    expected = envref.resolve(hb.token)
    presented = _presented(request)
    if not expected or presented is None or not tokens_equal(expected, presented):
        return error(401, "unauthorized", "a missing or wrong heartbeat token (Bearer or ?token=)")
    at = now_ms()
    try:
        await HeartbeatStore(request.app[STORE].redis).ping(name, at, hb.window_ms)
    except REDIS_UNAVAILABLE:
        return error(503, "unavailable", "event store unreachable; ping again shortly", {"Retry-After": "5"})
    return web.json_response({"name": name, "next_due": _iso(at + int(hb.interval * 1000))})


def _rules(request_app: web.Application) -> Rules | None:
    settings = request_app[SETTINGS]
    try:
        return load_rules(settings.rules_path())
    except RulesError as e:
        log.error("heartbeats off: the rules file %s is invalid", e.source)
        return None
    except OSError as e:  # unreadable: the web still serves webhooks
        log.error("heartbeats off: the rules file cannot be read: %s", type(e).__name__)
        return None


async def _alive(app: web.Application, state: HeartbeatStore) -> None:
    while True:
        with contextlib.suppress(*REDIS_UNAVAILABLE, TimeoutError):
            await state.mark_ingress_alive(now_ms(), ALIVE_TTL_MS)
        await asyncio.sleep(ALIVE_EVERY_S)


async def heartbeats_ctx(app: web.Application) -> AsyncIterator[None]:
    """Read the heartbeats; after a gap with no web process, give each a full period; say we are up."""
    rules = _rules(app)
    beats = dict(rules.config.heartbeats) if rules is not None else {}
    app[HEARTBEATS] = beats
    task = None
    if beats:
        state = HeartbeatStore(app[STORE].redis)
        with contextlib.suppress(*REDIS_UNAVAILABLE, TimeoutError):
            if not await state.ingress_alive():
                at = now_ms()
                for name, hb in beats.items():
                    await state.postpone(name, at + hb.window_ms)
        task = asyncio.create_task(_alive(app, state))
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def add_heartbeats(app: web.Application) -> None:
    """The ping routes and their start-up (after the store is open)."""
    app.cleanup_ctx.append(heartbeats_ctx)
    app.router.add_get("/heartbeats/{name}", ping)
    app.router.add_post("/heartbeats/{name}", ping)
