"""People acting on incidents from a tool's messages (buttons): `POST <InteractionSource.path>`.

Per request, before anything runs: the source's signing secret is configured (else 503), the
raw bytes are authentic (`verify`, else 401), the body is one of the hub's buttons (`parse`,
else 400), and the incident it names exists in Redis and is open (acknowledge: not yet
acknowledged), else 200 with `ignored` and nothing is recorded (the tool shows nothing went
wrong; the message is edited by the event that changed it). Then the click is claimed once, in one Redis
script: by its identity (the tool's retries of it) and by its window (a second click of the same
button on the same message within `WINDOW_S`). A claimed click is recorded durably and the
answer is 200 at once; the work is a worker's:

- acknowledge and resolve: an event of the hub's `interaction` source (`hub.core.interactions`),
  processed like any event, so the normal workflows run; audited here with the person's id;
- escalate now: an arq job (`hub.worker.interactions`) queued by the same script, which fires
  the incident's next escalation timer early and audits it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json

from aiohttp import web
from redis import exceptions as redis_errors

from connectors.base import BadPayload, InteractionSource
from hub.core.interactions import ESCALATE_JOB, SOURCE, Interaction
from hub.core.registry import interaction_sources
from hub.ingress.shared import SETTINGS, STORE, error
from hub.ingress.verify import AuthError
from hub.operators import audit
from hub.storage.connection import REDIS_UNAVAILABLE
from hub.storage.event_store import ARQ_JOB_PREFIX, ARQ_QUEUE, PREFIX, now_ms
from hub.storage.incidents import IncidentStore

#: A second click of one button on one message within this many seconds does nothing more.
WINDOW_S = 30
_CLAIM = PREFIX + "interaction:"

# KEYS: identity claim, window claim, job key, queue. ARGV: identity ttl ms, window ttl ms,
# job id ('' for none), job bytes, score ms, job ttl ms. 1 when claimed now, 0 when seen before.
_CLAIM_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
if ARGV[3] ~= '' then
  redis.call('PSETEX', KEYS[3], ARGV[6], ARGV[4])
  redis.call('ZADD', KEYS[4], ARGV[5], ARGV[3])
end
return 1
"""


def _claim_key(kind: str, text: str) -> str:
    return _CLAIM + kind + ":" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def escalate_job(job_id: str, spec: dict[str, object], enqueue_ms: int) -> bytes:
    """The job in arq's format, JSON-serialised (the worker's deserializer is JSON)."""
    return json.dumps({"t": None, "f": ESCALATE_JOB, "a": [spec], "k": {}, "et": enqueue_ms},
                      separators=(",", ":")).encode()


def handler(src: InteractionSource) -> web.RequestHandler:
    async def receive(request: web.Request) -> web.Response:
        try:
            return await _receive(request, src)
        except (*REDIS_UNAVAILABLE, redis_errors.OutOfMemoryError):
            return error(503, "unavailable", "event store unreachable or full; nothing was recorded, retry later",
                         headers={"Retry-After": "5"})
    return receive


async def _receive(request: web.Request, src: InteractionSource) -> web.Response:
    settings = request.app[SETTINGS]
    missing = src.missing_credentials(settings)
    if missing:
        return error(401, "interactions_not_configured",  # like a webhook source with no secret
                     f"{src.name} interactions are refused until {missing} is set (its requests are signed with it)")
    limit = settings.hub_max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        return error(413, "too_large", f"body of {request.content_length} bytes is over the {limit}-byte limit")
    try:
        async with asyncio.timeout(settings.hub_body_timeout):
            body = await request.read()
    except TimeoutError:
        return error(408, "body_timeout", f"body not received within {settings.hub_body_timeout:g}s")
    try:
        src.verify(body, request.headers, settings)
    except AuthError as e:
        return error(401, e.code, e.detail)
    try:
        click = src.parse(body, request.headers, request.content_type)
    except BadPayload as e:
        return error(400, e.code, e.detail)
    store = request.app[STORE]
    incidents = IncidentStore(store.redis, store.retention)
    key = await incidents.resolve(click.incident)
    state = await incidents.get(key) if key is not None else None
    if key is None or not state:
        return web.json_response({"status": "ignored", "detail": "no such incident (expired, or never the hub's)"})
    if state.get("resolved_at"):  # a button on a message not yet edited: the workflows ran already
        return web.json_response({"status": "ignored", "detail": "the incident is resolved"})
    if click.action == "acknowledge" and state.get("acknowledged_at"):
        return web.json_response({"status": "ignored", "detail": "the incident is acknowledged"})
    return await _record(request, src, click, key)


async def _record(request: web.Request, src: InteractionSource, click: Interaction, key: str) -> web.Response:
    store = request.app[STORE]
    redis = store.redis
    ms = now_ms()
    identity, window = _claim_key("id", click.identity), _claim_key("window", click.window)
    job_id, job = "", b""
    if click.action == "escalate":
        job_id = ESCALATE_JOB + ":" + identity.rsplit(":", 1)[1]
        job = escalate_job(job_id, {"incident": key, "by": click.by, "via": src.name, "at": ms, "click": job_id}, ms)
    claimed = await redis.eval(_CLAIM_SCRIPT, 4, identity, window, ARQ_JOB_PREFIX + job_id, ARQ_QUEUE,
                               int(store.retention * 1000), WINDOW_S * 1000, job_id, job, ms,
                               int(store.retention * 1000))
    if not claimed:
        return web.json_response({"status": "duplicate"})
    if click.action == "escalate":  # audited by the job, which knows which step it fired
        return web.json_response({"status": "accepted", "job": job_id})
    try:
        result = await store.ingest(SOURCE, click.identity, click.body(key, ms), {}, "application/json", src.name)
    except BaseException:
        await redis.delete(identity, window)  # not recorded: the tool's retry may try again
        raise
    await audit.record(redis, click.by, click.action, key, via=src.name, event_id=result.event_id)
    return web.json_response({"status": "accepted", "event_id": result.event_id})


def add_interactions(app: web.Application) -> None:
    """Mount each connector module's interactions endpoint (`interactions = …`)."""
    for src in interaction_sources().values():
        app.router.add_post(src.path, handler(src))
