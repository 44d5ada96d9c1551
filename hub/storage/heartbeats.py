"""Heartbeat state in Redis: last ping, paused, missed; when each is due; an outbox of events.

Keys (`hub.storage.keys`): ``hub:hb:{name}`` (hash: last_ping, paused, missed_at),
``hub:hb:due`` (zset: name → ms when it counts as missed), ``hub:hb:outbox`` (zset: the
`heartbeat.missed` / `.recovered` events decided but not yet recorded, by ms).

Every decision is one Lua script, so two workers (or a worker and a ping) never both act on
one heartbeat: a ping moves the due time and, if the heartbeat was missed, puts a
`recovered` in the outbox; the check claims a due heartbeat (marks it missed, takes it off
the due set) and puts a `missed` in the outbox. The outbox is then recorded as events with
the outbox member as the delivery id, so an event decided before a crash is recorded after
the restart, and never twice (the ingest deduplicates).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from hub.storage import keys

_PING_LUA = """
redis.call('HSET', KEYS[1], 'last_ping', ARGV[2])
if redis.call('HGET', KEYS[1], 'paused') ~= '1' then
  redis.call('ZADD', KEYS[2], tonumber(ARGV[2]) + tonumber(ARGV[3]), ARGV[1])
end
if redis.call('HEXISTS', KEYS[1], 'missed_at') == 1 then
  redis.call('HDEL', KEYS[1], 'missed_at')
  redis.call('ZADD', KEYS[3], ARGV[2], 'recovered|' .. ARGV[1] .. '|' .. ARGV[2])
  return 1
end
return 0
"""

_CLAIM_LUA = """
local due = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not due or tonumber(due) > tonumber(ARGV[2]) then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('HGET', KEYS[1], 'paused') == '1' or redis.call('HEXISTS', KEYS[1], 'missed_at') == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'missed_at', due)
redis.call('ZADD', KEYS[3], ARGV[2], 'missed|' .. ARGV[1] .. '|' .. due)
return 1
"""

_ENSURE_LUA = """
if redis.call('HGET', KEYS[1], 'paused') == '1' or redis.call('HEXISTS', KEYS[1], 'missed_at') == 1 then
  return 0
end
return redis.call('ZADD', KEYS[2], 'NX', ARGV[2], ARGV[1])
"""


@dataclass(frozen=True)
class Outboxed:
    """An event decided and not yet recorded."""

    member: str
    kind: str  # "missed" or "recovered"
    name: str
    at: int


def parse_member(member: str) -> Outboxed | None:
    kind, _, rest = member.partition("|")
    name, _, at = rest.rpartition("|")
    if kind not in ("missed", "recovered") or not name or not at.isdigit():
        return None
    return Outboxed(member, kind, name, int(at))


class HeartbeatStore:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._ping = redis.register_script(_PING_LUA)
        self._claim = redis.register_script(_CLAIM_LUA)
        self._ensure = redis.register_script(_ENSURE_LUA)

    def _keys(self, name: str) -> list[str]:
        return [keys.heartbeat(name), keys.HEARTBEATS_DUE, keys.HEARTBEATS_OUTBOX]

    async def ping(self, name: str, at_ms: int, window_ms: int) -> bool:
        """Record a ping; True when it ends a missed period (a `recovered` is in the outbox)."""
        return bool(await self._ping(keys=self._keys(name), args=[name, at_ms, window_ms]))

    async def claim_missed(self, name: str, at_ms: int) -> bool:
        """Mark it missed if it is due by `at_ms` (one caller wins); the `missed` goes to the outbox."""
        return bool(await self._claim(keys=self._keys(name), args=[name, at_ms]))

    async def ensure(self, name: str, due_ms: int) -> bool:
        """Track a heartbeat not tracked yet (new in the file, or state lost): due at `due_ms`."""
        return bool(await self._ensure(keys=self._keys(name), args=[name, due_ms]))

    async def postpone(self, name: str, due_ms: int) -> None:
        """Due no earlier than `due_ms` (the hub was not reachable: the pinger gets a full period)."""
        await self.redis.zadd(keys.HEARTBEATS_DUE, {name: due_ms}, xx=True, gt=True)

    async def due(self, at_ms: int, limit: int = 500) -> list[tuple[str, int]]:
        rows = await self.redis.zrangebyscore(keys.HEARTBEATS_DUE, "-inf", at_ms, start=0, num=limit, withscores=True)
        return [(m.decode() if isinstance(m, bytes) else m, int(s)) for m, s in rows]

    async def outbox(self, limit: int = 500) -> list[Outboxed]:
        rows = await self.redis.zrange(keys.HEARTBEATS_OUTBOX, 0, limit - 1)
        out = []
        for raw in rows:
            item = parse_member(raw.decode() if isinstance(raw, bytes) else raw)
            if item is not None:
                out.append(item)
            else:
                await self.redis.zrem(keys.HEARTBEATS_OUTBOX, raw)
        return out

    async def done(self, member: str) -> None:
        await self.redis.zrem(keys.HEARTBEATS_OUTBOX, member)

    async def pause(self, name: str, at_ms: int) -> bool:
        """Paused: never missed until resumed. False when it already was."""
        async with self.redis.pipeline(transaction=True) as p:
            p.hget(keys.heartbeat(name), "paused")
            p.hset(keys.heartbeat(name), mapping={"paused": "1", "paused_at": at_ms})
            p.zrem(keys.HEARTBEATS_DUE, name)
            was, *_ = await p.execute()
        return was != b"1"

    async def resume(self, name: str, at_ms: int, window_ms: int) -> bool:
        """Tracked again, due a full period from now. False when it was not paused."""
        async with self.redis.pipeline(transaction=True) as p:
            p.hget(keys.heartbeat(name), "paused")
            p.hset(keys.heartbeat(name), mapping={"paused": "0"})
            p.hdel(keys.heartbeat(name), "paused_at")
            p.zadd(keys.HEARTBEATS_DUE, {name: at_ms + window_ms})
            was, *_ = await p.execute()
        return was == b"1"

    async def state(self, name: str) -> dict[str, Any]:
        async with self.redis.pipeline(transaction=False) as p:
            p.hgetall(keys.heartbeat(name))
            p.zscore(keys.HEARTBEATS_DUE, name)
            raw, due = await p.execute()
        f = {k.decode(): v.decode() for k, v in raw.items()}
        return {"last_ping": int(f["last_ping"]) if f.get("last_ping") else None,
                "paused": f.get("paused") == "1",
                "missed_at": int(float(f["missed_at"])) if f.get("missed_at") else None,
                "due": int(due) if due is not None else None}

    async def mark_ingress_alive(self, at_ms: int, ttl_ms: int) -> None:
        await self.redis.set(keys.HEARTBEATS_INGRESS, at_ms, px=ttl_ms)

    async def ingress_alive(self) -> bool:
        return bool(await self.redis.exists(keys.HEARTBEATS_INGRESS))
