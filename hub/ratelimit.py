"""Client-side rate limits per credential, shared by every worker through Redis.

A GCRA limiter in one Lua call: it answers "go now" or "wait N ms"; waiting is not an
attempt. Limits come from `<CONNECTOR>_RATE_LIMIT` (e.g. `120/min`, `1/s`, `0` = off), else
the connector's documented default.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from typing import TYPE_CHECKING

from redis.asyncio import Redis

if TYPE_CHECKING:
    from connectors.base import ActionCall, Connector

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(ms|s|sec|second|m|min|minute|h|hour)\s*$", re.I)
_PER_S = {"ms": 0.001, "s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}

# GCRA: KEYS[1] the theoretical arrival time (ms); ARGV: now ms, interval ms, burst tolerance ms.
_GCRA = """
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
if tat < now then tat = now end
local allow_at = tat - burst
if allow_at > now then return allow_at - now end
redis.call('SET', KEYS[1], tat + interval, 'PX', math.ceil(tat + interval - now + 1000))
return 0
"""


def parse_rate(value: str | None) -> float | None:
    """Seconds between calls for `N/unit`; None for off (`0`, empty)."""
    if value is None or value.strip() in ("", "0", "off", "none"):
        return None
    m = _RATE.match(value)
    if not m:
        raise ValueError(f"rate limit {value!r}: use N/s, N/min or N/hour (0 turns it off)")
    count = float(m.group(1))
    if count <= 0:
        return None
    return _PER_S[m.group(2).lower()] / count


class RateLimiter:
    def __init__(self, redis: Redis, env: dict[str, str] | None = None) -> None:
        self.redis = redis
        self.env = os.environ if env is None else env
        self._script = redis.register_script(_GCRA)
        self._intervals: dict[str, float | None] = {}

    def interval(self, connector: Connector) -> float | None:
        if connector.name not in self._intervals:
            configured = self.env.get(f"{connector.name.upper()}_RATE_LIMIT")
            self._intervals[connector.name] = parse_rate(configured if configured is not None
                                                         else connector.default_rate_limit)
        return self._intervals[connector.name]

    async def wait(self, connector: Connector, call: ActionCall, max_wait: float = 60.0) -> None:
        interval = self.interval(connector)
        key = connector.rate_limit_key(call)
        if interval is None or key is None:
            return
        digest = hashlib.sha256(key.encode()).hexdigest()[:24]
        interval_ms = int(interval * 1000)
        waited = 0.0
        while waited < max_wait:
            import time

            wait_ms = int(await self._script(keys=[f"hub:rl:{connector.name}:{digest}"],
                                             args=[int(time.time() * 1000), interval_ms, 0]))
            if wait_ms <= 0:
                return
            await asyncio.sleep(wait_ms / 1000)
            waited += wait_ms / 1000
