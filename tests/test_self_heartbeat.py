"""The hub's own dead-man's switch (HUB_SELF_HEARTBEAT_URL): pinged while healthy, not once the
workers are gone or the queue is stuck. A real worker and a real HTTP checker on loopback."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from hub.storage.event_store import ARQ_QUEUE, WORKERS, Store, now_ms
from hub.worker.app import make_worker
from hub.worker.self_heartbeat import self_heartbeat
from tests.conftest import make_settings, wait_for


async def checker() -> tuple[TestServer, list[str]]:
    seen: list[str] = []

    async def ping(request: web.Request) -> web.Response:
        seen.append(request.query.get("k", ""))
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/ping", ping)
    server = TestServer(app)
    await server.start_server()
    return server, seen


async def test_pings_while_healthy_and_stops_when_the_workers_die(redis_url: str, redis: Any) -> None:
    server, seen = await checker()
    settings = make_settings(redis_url, hub_self_heartbeat_url=str(server.make_url("/ping?k=s3cret")))
    worker = make_worker(settings, handle_signals=False, poll_delay=0.02)
    task = asyncio.create_task(worker.async_run())
    try:
        await wait_for(lambda: _ready(worker.ctx, redis))
        assert await self_heartbeat(worker.ctx) is True and seen == ["s3cret"]

        # the queue is stuck: a job due 10 minutes ago nobody took
        await redis.zadd(ARQ_QUEUE, {"stuck-job": now_ms() - 600_000})
        assert await self_heartbeat(worker.ctx) is False and len(seen) == 1
        await redis.zrem(ARQ_QUEUE, "stuck-job")
    finally:
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=1)
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    # the worker is gone (its heartbeat stops): a check from anywhere says not alive
    await redis.delete(WORKERS)
    async with aiohttp.ClientSession() as http:
        ctx = {"settings": settings, "store": Store(redis, settings), "http": http}
        assert await self_heartbeat(ctx) is False
    assert len(seen) == 1
    await server.close()


async def test_off_without_the_variable(redis_url: str, redis: Any) -> None:
    settings = make_settings(redis_url)
    assert await self_heartbeat({"settings": settings}) is False


async def _ready(ctx: dict[str, Any], redis: Any) -> bool:
    return "store" in ctx and bool(await redis.zcard(WORKERS))
