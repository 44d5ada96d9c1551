"""The hub's own dead-man's switch: with HUB_SELF_HEARTBEAT_URL set, a worker GETs it every
minute while the hub is healthy, so an outside checker pages when the hub itself dies.

Healthy means: Redis answers (the job came through it), a worker has beaten within 30 s, and
the oldest due job in the queue has waited less than `STUCK_S`. One worker a minute pings
(arq runs a cron job once per tick across workers); when every worker is dead, nobody does.
The URL is never logged (it often carries a token).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import aiohttp

from hub.core import metrics
from hub.storage.event_store import ARQ_QUEUE, Store

log = logging.getLogger("hub.worker.self_heartbeat")
#: A queue whose oldest due job has waited this long is stuck: no ping.
STUCK_S = 300.0
TIMEOUT_S = 10.0


async def unhealthy(store: Store) -> str | None:
    """Why the hub should not say it is alive, or None."""
    if await store.live_workers(30) < 1:
        return "no worker alive"
    oldest = await store.redis.zrangebyscore(ARQ_QUEUE, "-inf", int(time.time() * 1000), start=0, num=1,
                                             withscores=True)
    lag = metrics.queue_lag(oldest, time.time())
    if lag > STUCK_S:
        return f"the queue is stuck (oldest due job waited {lag:.0f}s)"
    return None


async def self_heartbeat(ctx: dict[str, Any]) -> bool:
    """The worker's cron: ping HUB_SELF_HEARTBEAT_URL if the hub is healthy. True when pinged."""
    url = ctx["settings"].hub_self_heartbeat_url
    if not url:
        return False
    why = await unhealthy(ctx["store"])
    if why is not None:
        log.warning("self heartbeat not sent: %s", why)
        return False
    http: aiohttp.ClientSession = ctx["http"]
    try:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as resp:
            if resp.status >= 400:
                log.warning("self heartbeat answered %d", resp.status)
                return False
    except (aiohttp.ClientError, TimeoutError) as e:
        log.warning("self heartbeat failed: %s", type(e).__name__)
        return False
    return True
