"""The aiohttp ingress: verify, record, enqueue, answer. Plus health, readiness and metrics.

The hot path per webhook is CPU work (verify, parse) and exactly one Redis round trip
(`Store.ingest`). Nothing is acked unless that round trip succeeded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from redis import exceptions as redis_errors

from connectors.base import BadPayload, InboundSource
from hub.core import metrics
from hub.core.registry import sources
from hub.core.settings import Settings
from hub.ingress.heartbeats import add_heartbeats
from hub.ingress.interactions import add_interactions
from hub.ingress.shared import SETTINGS, STORE, error, text
from hub.ingress.verify import AuthError
from hub.operators.admin import admin_app
from hub.storage.connection import REDIS_UNAVAILABLE, SOCKET_TIMEOUT, connect
from hub.storage.event_store import ARQ_QUEUE, DEAD, PENDING, Store
from hub.storage.lane import CommandLane

__all__ = ["REDIS_UNAVAILABLE", "SETTINGS", "STORE", "create_app", "error", "text"]

RETRY_AFTER_S = "5"


class _Reject(Exception):
    def __init__(self, status: int, code: str, detail: str) -> None:
        self.status, self.code, self.detail = status, code, detail


async def _read_body(request: web.Request, limit: int, timeout: float) -> bytes:
    """The raw body, refusing more than `limit` bytes (the app's client_max_size is limit + 1)."""
    if request.content_length is not None and request.content_length > limit:
        raise _Reject(413, "too_large", f"body of {request.content_length} bytes is over the {limit}-byte limit")
    try:
        if request.content.is_eof():  # the whole body already arrived with the headers: no wait
            return await request.read()
        async with asyncio.timeout(timeout):
            return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise _Reject(413, "too_large", f"body is over the {limit}-byte limit") from None
    except web.RequestPayloadError:  # e.g. `Content-Encoding: gzip` on bytes that are not gzip
        encoding = request.headers.get("Content-Encoding", "")
        raise _Reject(400, "undecodable_body",
                      f"body could not be decoded as its Content-Encoding {encoding!r} says") from None
    except TimeoutError:
        raise _Reject(408, "body_timeout", f"body not received within {timeout:g}s") from None


class _SourceMetrics:
    """Per-source metric children, looked up once instead of on every request."""

    def __init__(self, name: str) -> None:
        self.received = metrics.WEBHOOKS_RECEIVED.labels(name)
        self.accepted = metrics.WEBHOOKS_ACCEPTED.labels(name, "accepted")
        self.duplicate = metrics.WEBHOOKS_ACCEPTED.labels(name, "duplicate")
        self.seconds = metrics.INGEST_SECONDS.labels(name)


_METRICS: dict[str, _SourceMetrics] = {}


async def receive_webhook(request: web.Request) -> web.Response:
    name = request.match_info["source"]
    src = sources().get(name)
    if src is None:
        metrics.WEBHOOKS_REJECTED.labels("unknown", "unknown_source").inc()
        return error(404, "unknown_source", f"no source named {name!r}; known: {', '.join(sorted(sources()))}")
    m = _METRICS.get(name) or _METRICS.setdefault(name, _SourceMetrics(name))
    m.received.inc()
    started = time.perf_counter()
    try:
        response, duplicate = await _accept(request, src)
    except _Reject as r:
        metrics.WEBHOOKS_REJECTED.labels(name, r.code).inc()
        return error(r.status, r.code, r.detail)
    except REDIS_UNAVAILABLE:
        metrics.WEBHOOKS_REJECTED.labels(name, "redis_unavailable").inc()
        return error(503, "unavailable", "event store unreachable; nothing was recorded, retry later",
                     headers={"Retry-After": RETRY_AFTER_S})
    except redis_errors.OutOfMemoryError:
        # Redis at maxmemory (noeviction) refuses the ingest script's first write: nothing was
        # recorded, exactly as when it is unreachable. redis-py maps the server's OOM error reply
        # to this class; any other script error stays a bug (500).
        metrics.WEBHOOKS_REJECTED.labels(name, "redis_full").inc()
        return error(503, "unavailable", "event store is full (Redis maxmemory); nothing was recorded, retry later",
                     headers={"Retry-After": RETRY_AFTER_S})
    (m.duplicate if duplicate else m.accepted).inc()
    m.seconds.observe(time.perf_counter() - started)
    return response


async def _accept(request: web.Request, src: InboundSource) -> tuple[web.Response, bool]:
    settings = request.app[SETTINGS]
    missing = src.missing_credentials(settings)
    if missing:
        raise _Reject(401, "source_not_configured", f"{src.name} webhooks are refused: set {missing}")
    body = await _read_body(request, settings.hub_max_body_bytes, settings.hub_body_timeout)
    headers = request.headers
    try:
        verified = src.verify(body, headers, settings)
    except AuthError as e:
        raise _Reject(401, e.code, e.detail) from None
    content_type = request.content_type
    if not src.accepts_content_type(content_type):
        raise _Reject(415, "unsupported_media_type",
                      f"Content-Type {content_type!r} is not accepted; send {src.accepted_content_types}")
    try:
        payload = src.parse_ingress(body, headers, content_type)
        delivery_id = text(src.delivery_id(payload, headers, body))
    except BadPayload as e:
        raise _Reject(400, e.code, e.detail) from None
    kept = {h: headers[h] for h in src.recorded_headers if h in headers}
    result = await request.app[STORE].ingest(src.name, delivery_id, body, kept, content_type, verified)
    return accepted(result.event_id, result.duplicate), result.duplicate


_SAFE_ID = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def accepted(event_id: str, duplicate: bool) -> web.Response:
    """The 202 answer, byte for byte what `web.json_response` writes, without a JSON encoder
    on every webhook: an event id is the hub's own (`ev_` + hex), nothing in it to escape."""
    outcome = "duplicate" if duplicate else "accepted"
    if not _SAFE_ID.issuperset(event_id):  # never for an id the hub made; escape it anyway
        return web.json_response({"event_id": event_id, "status": outcome}, status=202)
    return web.Response(body=f'{{"event_id": "{event_id}", "status": "{outcome}"}}'.encode(), status=202,
                        content_type="application/json", charset="utf-8")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Redis reachable and a worker heartbeat in the last 30 s.

    `?scope=ingress` checks Redis only: the probe for a load balancer in front of web
    processes, which can still record and ack events durably while every worker is down
    (taking them out of rotation then would refuse webhooks that senders may never resend).
    """
    store = request.app[STORE]
    ingress_only = request.query.get("scope") == "ingress"
    try:
        async with asyncio.timeout(2):
            await store.redis.ping()
            workers = None if ingress_only else await store.live_workers()
    except (*REDIS_UNAVAILABLE, TimeoutError):
        return web.json_response({"status": "unavailable", "redis": "unreachable"}, status=503)
    if workers is None:
        return web.json_response({"status": "ok", "redis": "ok", "scope": "ingress"})
    if workers == 0:
        return web.json_response({"status": "unavailable", "redis": "ok", "workers": 0,
                                  "detail": "no worker heartbeat in the last 30 s"}, status=503)
    return web.json_response({"status": "ok", "redis": "ok", "workers": workers})


async def metrics_view(request: web.Request) -> web.Response:
    store = request.app[STORE]
    try:
        async with asyncio.timeout(2):
            async with store.redis.pipeline(transaction=False) as p:
                p.zcard(ARQ_QUEUE)
                p.zcard(PENDING)
                p.zcard(DEAD)
                p.zrangebyscore(ARQ_QUEUE, "-inf", int(time.time() * 1000), start=0, num=1, withscores=True)
                depth, pending, dead, oldest_due = await p.execute()
        metrics.QUEUE_DEPTH.set(depth)
        metrics.PENDING_EVENTS.set(pending)
        metrics.DEAD_LETTERS.set(dead)
        metrics.QUEUE_LAG.set(metrics.queue_lag(oldest_due, time.time()))
    except (*REDIS_UNAVAILABLE, TimeoutError):
        pass  # metrics still render; the gauges keep their last values
    body, content_type = metrics.render()
    return web.Response(body=body, headers={"Content-Type": content_type})


@web.middleware
async def json_errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:
    """aiohttp's own 404/405/413 pages become the contract's JSON error bodies."""
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(e.status, "http_error")
        return error(e.status, code, e.reason, headers={k: v for k, v in e.headers.items()
                                                        if k.lower() == "allow"})


def create_app(settings: Settings, store: Store | None = None) -> web.Application:
    """The web application. Pass `store` to share a Redis client (tests, benchmarks)."""
    app = web.Application(middlewares=[json_errors], client_max_size=settings.hub_max_body_bytes + 1)
    app[SETTINGS] = settings

    async def open_store(app: web.Application) -> Any:
        own = store is None
        redis = connect(settings.redis_url or "redis://127.0.0.1:6379/0") if own else None
        app[STORE] = opened = store or Store(redis, settings)  # type: ignore[arg-type]
        lane = None
        if opened.lane is None:  # the ingest's own connections (hub.storage.lane)
            opened.lane = lane = CommandLane(opened.redis, timeout=SOCKET_TIMEOUT)
        yield
        if lane is not None:
            opened.lane = None
            await lane.aclose()
        if own and redis is not None:
            await redis.aclose()

    app.cleanup_ctx.append(open_store)
    app.router.add_post("/webhooks/{source}", receive_webhook)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_view)
    add_heartbeats(app)
    add_interactions(app)
    app.add_subapp("/admin", admin_app())
    return app
