"""Client-side rate limits per credential, and per-key serialisation, shared by every worker through Redis.

Rate limits are GCRA (a leaky bucket with a burst allowance) in one Lua call that answers
"go now" (and spends a token) or "wait N ms" (and spends nothing). The clock is Redis's own
``TIME``, so workers on hosts with skewed clocks still share one schedule. Waiting for a
token is not an attempt: the runner waits briefly inline, else parks the action.

Limits come from ``<CONNECTOR>_RATE_LIMIT`` (environment or ``.env``, as the settings read
them: `Settings.rate_limits`, passed in as `env`), e.g. ``120/min``, ``1/s``,
``20/s,burst=5``; ``0`` or ``off`` turns the limit off. Unset: the connector's documented
default.

Serial locks (``lock``/``unlock``) keep two calls on the same outside object (one ticket,
one status-page incident) from running at once; a lock expires on its own if its
holder dies.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from redis.asyncio import Redis

from hub.storage import keys

if TYPE_CHECKING:
    from connectors.base import ActionCall, Connector

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)?\s*(ms|s|sec|second|m|min|minute|h|hour)\s*"
                   r"(?:,\s*burst\s*=\s*(\d+)\s*)?$", re.I)
_PER_S = {"ms": 0.001, "s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}
_OFF = ("", "0", "off", "none")

# GCRA. KEYS[1]: theoretical arrival time (ms). ARGV: interval ms, burst tolerance ms.
# Returns 0 when the call may go now (and records it), else the ms to wait.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local allow_at = tat - tolerance
if allow_at > now then return allow_at - now end
local new_tat = tat + interval
redis.call('SET', KEYS[1], new_tat, 'PX', new_tat - now + 1000)
return 0
"""

_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Rate:
    """`burst` calls may go back to back; on average one per `interval` seconds."""

    interval: float
    burst: int = 1


def parse_limit(value: str | None) -> Rate | None:
    """`N/unit` (unit: ms, s, min, hour; optionally `N/10s`) with an optional `,burst=B`; None = off."""
    if value is None or value.strip().lower() in _OFF:
        return None
    m = _RATE.match(value)
    if not m:
        raise ValueError(f"rate limit {value!r}: use N/s, N/min or N/hour, optionally ',burst=B' (0 turns it off)")
    count = float(m.group(1))
    if count <= 0:
        return None
    per = float(m.group(2) or 1) * _PER_S[m.group(3).lower()]
    burst = int(m.group(4) or 1)
    if burst < 1:
        raise ValueError(f"rate limit {value!r}: burst must be at least 1")
    return Rate(per / count, burst)


def parse_rate(value: str | None) -> float | None:
    """Seconds between calls for `N/unit`; None for off (`0`, empty)."""
    rate = parse_limit(value)
    return rate.interval if rate else None


class RateLimiter:
    def __init__(self, redis: Redis, env: Mapping[str, str] | None = None) -> None:
        """`env`: the `<CONNECTOR>_RATE_LIMIT` variables (`Settings.rate_limits`); none: the defaults."""
        self.redis = redis
        self.env: Mapping[str, str] = env or {}
        self._script = redis.register_script(_GCRA)
        self._unlock = redis.register_script(_UNLOCK)
        self._limits: dict[str, Rate | None] = {}

    @staticmethod
    def variable(connector: Connector) -> str:
        return f"{connector.name.upper()}_RATE_LIMIT"

    def limit(self, connector: Connector) -> Rate | None:
        """The configured (else default) limit; raises ValueError naming the variable if it is bad."""
        if connector.name not in self._limits:
            var = self.variable(connector)
            configured = self.env.get(var)
            try:
                self._limits[connector.name] = parse_limit(configured if configured is not None
                                                           else connector.default_rate_limit)
            except ValueError as e:
                raise ValueError(f"{var}: {e}") from None
        return self._limits[connector.name]

    def check(self, connectors: Iterable[Connector]) -> None:
        """Fail at start, with the variable's name, rather than at the first action."""
        for connector in connectors:
            self.limit(connector)

    def interval(self, connector: Connector) -> float | None:
        rate = self.limit(connector)
        return rate.interval if rate else None

    async def acquire(self, connector: Connector, call: ActionCall) -> float:
        """Spend a token and return 0.0, or spend nothing and return the seconds to wait."""
        rate = self.limit(connector)
        key = connector.rate_limit_key(call)
        if rate is None or key is None:
            return 0.0
        interval_ms = max(1, round(rate.interval * 1000))
        wait_ms = int(await self._script(keys=[keys.rate_limit(connector.name, key)],
                                         args=[interval_ms, interval_ms * (rate.burst - 1)]))
        return max(0.0, wait_ms / 1000)

    async def wait(self, connector: Connector, call: ActionCall, max_wait: float = 60.0) -> bool:
        """Wait for a token for up to `max_wait` seconds; True once one is spent, False if none came."""
        waited = 0.0
        while True:
            delay = await self.acquire(connector, call)
            if delay <= 0:
                return True
            if waited + delay > max_wait:
                return False
            await asyncio.sleep(delay)
            waited += delay

    async def lock(self, scope: str, key: str, ttl: float) -> str | None:
        """Take the serial lock for `key`; its token, or None when another holder has it."""
        token = secrets.token_hex(8)
        ok = await self.redis.set(keys.serial_lock(scope, key), token, nx=True, px=max(1, int(ttl * 1000)))
        return token if ok else None

    async def unlock(self, scope: str, key: str, token: str) -> None:
        """Release the lock if it is still ours (it may have expired and been taken since)."""
        await self._unlock(keys=[keys.serial_lock(scope, key)], args=[token])
