"""Atomic write batches: queued like a MULTI pipeline, sent as one script call.

The worker's writes (a state change, an action record, an incident, claims, lock release)
go out together. A redis-py MULTI/EXEC pipeline packs every command separately and parses
a `QUEUED` reply for each, which made the Python client the worker's largest cost. A
`Batch` queues the same calls, then runs them in one `EVALSHA` with the commands as one
JSON argument: atomic like MULTI/EXEC (a script runs alone), one command and one reply on
the wire whatever the batch holds.

Semantics kept from MULTI/EXEC: every command runs even if an earlier one failed (`pcall`),
and `execute` then raises the first error; a Redis at maxmemory (noeviction) applies
nothing and `execute` raises its OutOfMemoryError, so the callers' "Redis unavailable"
handling applies. Two deliberate differences:

- `expire` is deferred to the end of the batch and sent once per key (the last TTL wins), so
  a key written after its EXPIRE was queued still gets it, and the repeated EXPIREs of
  timeline writes cost nothing. Its place in the replies holds None.
- arguments are sent as text (numbers formatted here), so scores and TTLs are exact.

Every key is passed in KEYS, as scripts should.

Each queued command returns a `Reply` whose `value` is filled in when the batch runs, so a
caller keeps the handle of the reply it needs instead of counting positions in the list
`execute` returns (which breaks as soon as a helper queues one command more or less).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import orjson
from redis.exceptions import NoScriptError, ResponseError

# ops: a JSON array of [command, key index, args...]; NOTED and RELEASE are the two compound
# writes the worker needs inside a batch (scripts cannot call scripts).
_APPLY = """
local OOM = "OOM command not allowed when used memory > 'maxmemory'."
-- Redis at maxmemory refuses a script's first write that can grow memory: stop there, so
-- nothing is applied (as MULTI/EXEC would), rather than let DEL/ZREM-style writes through alone
local function full(r)
  return type(r) == 'table' and r.err and string.find(r.err, 'OOM command not allowed', 1, true)
end
local ops = cjson.decode(ARGV[1])
local out = {}
for i, op in ipairs(ops) do
  local cmd, key = op[1], KEYS[op[2]]
  local r
  if cmd == 'NOTED' then
    -- update an incident's fields only if it exists, and always note it on its timeline
    local tl = KEYS[op[3]]
    if #op > 5 and redis.call('EXISTS', key) == 1 then
      r = redis.pcall('HSET', key, unpack(op, 6))
      if full(r) then return redis.error_reply(OOM) end
    end
    r = redis.pcall('RPUSH', tl, op[4])
    if full(r) then return redis.error_reply(OOM) end
    r = redis.pcall('EXPIRE', tl, op[5])
  elseif cmd == 'NEWER' then
    -- HSET a JSON value unless the field holds one with a later `received_at`
    local old, newer = redis.call('HGET', key, op[3]), false
    if old then
      local ok, d = pcall(cjson.decode, old)
      newer = ok and type(d) == 'table' and tonumber(d['received_at'] or 0) ~= nil
        and tonumber(d['received_at'] or 0) > tonumber(op[4])
    end
    if newer then r = 0 else
      r = redis.pcall('HSET', key, op[3], op[5])
      if full(r) then return redis.error_reply(OOM) end
    end
  elseif cmd == 'RELEASE' then
    if redis.call('GET', key) == op[3] then r = redis.call('DEL', key) else r = 0 end
  else
    r = redis.pcall(cmd, key, unpack(op, 3))
    if full(r) then return redis.error_reply(OOM) end
  end
  if r == nil then r = false end
  out[i] = r
end
return out
"""
_SHA = hashlib.sha1(_APPLY.encode()).hexdigest()


_NUMBERS = (int, float)


def _text(value: Any) -> str:
    if type(value) is str:
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, bool):
        raise TypeError("a boolean is not a Redis value; pass 0/1 or text")
    if isinstance(value, _NUMBERS):
        return repr(value) if isinstance(value, float) else str(value)
    raise TypeError(f"cannot send {type(value).__name__} to Redis")


def _payload(ops: list[list[Any]]) -> bytes:
    """The ops as one JSON argument. They hold only text and ints (`_text`), which orjson writes
    as the stdlib would (UTF-8, not \\u escapes); text it refuses (a lone surrogate) goes the
    stdlib's way, to fail as redis-py's strict encoder always did."""
    try:
        return orjson.dumps(ops)
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(ops, separators=(",", ":"), ensure_ascii=False).encode()


class Reply:
    """The reply of one queued command: `value` is set once its batch has run."""

    __slots__ = ("done", "value")

    def __init__(self) -> None:
        self.value: Any = None
        self.done = False

    def __repr__(self) -> str:
        return f"Reply({self.value!r})" if self.done else "Reply(<not run>)"


class Batch:
    """Writes for one atomic script call; method names and arguments follow redis-py."""

    __slots__ = ("_expires", "_keys", "_ops", "_replies")

    def __init__(self) -> None:
        self._keys: dict[str, int] = {}
        self._ops: list[list[Any]] = []
        self._replies: list[Reply] = []
        self._expires: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self._ops)

    def _key(self, name: str) -> int:
        idx = self._keys.get(name)
        if idx is None:
            idx = self._keys[name] = len(self._keys) + 1
        return idx

    def _reply(self) -> Reply:
        reply = Reply()
        self._replies.append(reply)
        return reply

    def _op(self, cmd: str, name: str, *args: Any) -> Reply:
        idx = self._keys.get(name)
        if idx is None:
            idx = self._keys[name] = len(self._keys) + 1
        # text as it is (the common case, no call); anything else through `_text`
        self._ops.append([cmd, idx, *[a if type(a) is str else _text(a) for a in args]])
        reply = Reply()
        self._replies.append(reply)
        return reply

    # -- the commands the worker uses ----------------------------------------------------------

    def hset(self, name: str, key: str | None = None, value: Any = None,
             mapping: Mapping[str, Any] | None = None) -> Reply:
        pairs: list[Any] = [key, value] if key is not None else []
        for k, v in (mapping or {}).items():
            pairs += [k, v]
        if not pairs:
            raise ValueError("hset needs a key and value or a mapping")
        return self._op("HSET", name, *pairs)

    def hsetnx(self, name: str, key: str, value: Any) -> Reply:
        return self._op("HSETNX", name, key, value)

    def hget(self, name: str, key: str) -> Reply:
        return self._op("HGET", name, key)

    def hdel(self, name: str, *keys: str) -> Reply:
        return self._op("HDEL", name, *keys)

    def delete(self, name: str) -> Reply:
        return self._op("DEL", name)

    def expire(self, name: str, seconds: int) -> Reply:
        self._expires[self._key(name)] = _text(int(seconds))
        self._ops.append(["", 0])  # keeps reply positions; replaced by None
        return self._reply()

    def zadd(self, name: str, mapping: Mapping[str, float | int], *, xx: bool = False, gt: bool = False,
             nx: bool = False) -> Reply:
        args: list[Any] = (["XX"] if xx else []) + (["NX"] if nx else []) + (["GT"] if gt else [])
        for member, score in mapping.items():
            args += [score, member]
        return self._op("ZADD", name, *args)

    def zrem(self, name: str, *members: str) -> Reply:
        return self._op("ZREM", name, *members)

    def zremrangebyscore(self, name: str, min: Any, max: Any) -> Reply:
        return self._op("ZREMRANGEBYSCORE", name, min, max)

    def rpush(self, name: str, *values: Any) -> Reply:
        return self._op("RPUSH", name, *values)

    def sadd(self, name: str, *values: Any) -> Reply:
        return self._op("SADD", name, *values)

    def set(self, name: str, value: Any, ex: int | None = None) -> Reply:
        return self._op("SET", name, value, *(("EX", int(ex)) if ex is not None else ()))

    def update_noted(self, name: str, timeline: str, entry: str, ttl: int, fields: list[Any]) -> Reply:
        """HSET `fields` only if `name` exists; RPUSH `entry` on `timeline` and expire it."""
        self._ops.append(["NOTED", self._key(name), self._key(timeline), entry, _text(ttl),
                          *(_text(f) for f in fields)])
        return self._reply()

    def hset_newer(self, name: str, field: str, received_at: int, value: str) -> Reply:
        """HSET `field` to the JSON `value` unless it holds one with a later `received_at` (0: kept)."""
        self._ops.append(["NEWER", self._key(name), field, _text(received_at), value])
        return self._reply()

    def release(self, name: str, token: str) -> Reply:
        """Delete the lock `name` if it still holds `token`."""
        return self._op("RELEASE", name, token)

    # -- sending ---------------------------------------------------------------------------------

    async def flush(self, redis: Any) -> list[Any]:
        """`execute`, then empty the batch for more writes."""
        try:
            return await self.execute(redis)
        finally:
            self._keys.clear()
            self._ops.clear()
            self._replies.clear()
            self._expires.clear()

    async def execute(self, redis: Any) -> list[Any]:
        """Run the batch atomically; the replies in call order (None for `expire`), also set on
        each command's `Reply`."""
        ops = [op for op in self._ops if op[0]]
        ops += [["EXPIRE", idx, ttl] for idx, ttl in self._expires.items()]
        if not ops:
            return self._fill([None] * len(self._ops))
        keys = list(self._keys)
        payload = _payload(ops)
        try:
            raw = await redis.evalsha(_SHA, len(keys), *keys, payload)
        except NoScriptError:
            raw = await redis.eval(_APPLY, len(keys), *keys, payload)
        for r in raw:
            if isinstance(r, ResponseError):
                raise r
        replies = iter(raw)
        return self._fill([None if not op[0] else next(replies) for op in self._ops])

    def _fill(self, out: list[Any]) -> list[Any]:
        for reply, value in zip(self._replies, out, strict=True):
            reply.value = value
            reply.done = True
        return out
