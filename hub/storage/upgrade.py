"""One-shot upgrade of data written before key names encoded sender values (`hub.storage.keys`).

Older versions pasted incident keys, aliases, claim subjects, services and environments
into key names as they came. This renames what they wrote to the encoded names, once:

- incident records (a hash whose ``key`` field names its own key) with their timeline and
  timers; their locks are left alone (they lapse within a lease);
- aliases, claims, and the deploy index (a zset's members say their service and
  environment; a set of environments is named by its service).

Values without special characters (hex fingerprints, ``checkout``/``production``)
encode to themselves and are not touched. The result is recorded in ``hub:schema:keys``:
once it is there, `ensure` costs one GET. Every worker calls `ensure` at start, before it
takes a job (one runs the upgrade under a lock, the others wait for it); `incident-hub
upgrade` runs it by hand. An interrupted run starts again safely: each rename is recorded
(in ``hub:upgrade:moved``) in the same transaction, and a recorded name is not renamed twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis

from hub.storage import keys

log = logging.getLogger("hub.storage.upgrade")

VERSION = "2"
MARKER = keys.PREFIX + "schema:keys"
LOCK = keys.PREFIX + "upgrade:lock"
MOVED = keys.PREFIX + "upgrade:moved"
LOCK_MS = 600_000
#: How long a worker waits for another one's upgrade before starting anyway.
WAIT_S = 300.0


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


async def _names(redis: Redis, prefix: str) -> AsyncIterator[str]:
    """Key names under `prefix` (all were written from text, so all are UTF-8)."""
    async for raw in redis.scan_iter(match=prefix + "*", count=1000):
        try:
            yield raw.decode() if isinstance(raw, bytes) else str(raw)
        except UnicodeDecodeError:
            continue


async def _move(redis: Redis, old: str, new: str, counts: dict[str, int], kind: str) -> None:
    """Rename `old` to `new` (unless `new` exists: newer data wins) and record the move."""
    if old == new or await redis.sismember(MOVED, new):
        return
    async with redis.pipeline(transaction=True) as p:
        p.renamenx(old, new)
        p.sadd(MOVED, new)
        p.expire(MOVED, 7 * 86400)
        renamed, _, _ = await p.execute(raise_on_error=False)
    if isinstance(renamed, Exception):
        return  # gone meanwhile (expired)
    if renamed:
        counts[kind] += 1
    else:
        log.warning("upgrade: %s not renamed: %s already exists (the old key is left to expire)", old, new)


async def _incidents(redis: Redis, counts: dict[str, int]) -> None:
    prefix = keys.INCIDENT_PREFIX
    async for name in _names(redis, prefix):
        if await redis.type(name) != b"hash":
            continue
        own = await redis.hget(name, "key")
        try:
            key = json.loads(own) if own is not None else None
        except ValueError:
            continue
        if not isinstance(key, str) or name != prefix + key:
            continue  # a timers hash, or a record already under its encoded name
        for old, new, kind in ((f"{prefix}{key}:timeline", keys.incident_timeline(key), b"list"),
                               (f"{prefix}{key}:timers", keys.incident_timers(key), b"hash")):
            if await redis.type(old) == kind and (kind != b"hash" or not await redis.hexists(old, "key")):
                await _move(redis, old, new, counts, "incident keys")
        await _move(redis, name, keys.incident(key), counts, "incident keys")


async def _named(redis: Redis, prefix: str, build: Any, kind: bytes, counts: dict[str, int], label: str) -> None:
    """Keys whose whole suffix was one raw value (aliases, claims, a service's environments)."""
    async for name in _names(redis, prefix):
        if await redis.sismember(MOVED, name) or await redis.type(name) != kind:
            continue
        await _move(redis, name, build(name[len(prefix):]), counts, label)


async def _deploys(redis: Redis, counts: dict[str, int]) -> None:
    async for name in _names(redis, keys.DEPLOYS_PREFIX):
        if await redis.sismember(MOVED, name) or await redis.type(name) != b"zset":
            continue
        first = await redis.zrange(name, 0, 0)
        try:
            deploy = json.loads(first[0]) if first else None
            service = str(deploy["service"]).casefold()
            env = str(deploy.get("environment") or "unknown").casefold()
        except (ValueError, TypeError, KeyError):
            continue
        await _move(redis, name, keys.deploys(service, env), counts, "deploy keys")


async def upgrade_keys(redis: Redis) -> dict[str, int]:
    """Rename every key of the old layout (see the module docstring); how many of each kind."""
    counts = {"incident keys": 0, "aliases": 0, "claims": 0, "deploy keys": 0}
    await _incidents(redis, counts)
    await _named(redis, keys.ALIAS_PREFIX, keys.incident_alias, b"string", counts, "aliases")
    await _named(redis, keys.CLAIMS_PREFIX, keys.claims, b"hash", counts, "claims")
    await _deploys(redis, counts)  # zsets first: their members say where they go
    await _named(redis, keys.DEPLOYS_PREFIX, keys.deploy_environments, b"set", counts, "deploy keys")
    return counts


async def ensure(redis: Redis, wait_s: float = WAIT_S) -> dict[str, int] | None:
    """Upgrade once (idempotent): the counts when this call did it, None when it was done already."""
    if _text(await redis.get(MARKER) or b"") == VERSION:
        return None
    token = secrets.token_hex(8)
    if not await redis.set(LOCK, token, nx=True, px=LOCK_MS):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while loop.time() < deadline:  # another process is upgrading: take no job before it is done
            await asyncio.sleep(0.5)
            if _text(await redis.get(MARKER) or b"") == VERSION:
                return None
        log.warning("upgrade: another process has held %s for %.0fs; starting anyway", LOCK, wait_s)
        return None
    try:
        counts = await upgrade_keys(redis)
        async with redis.pipeline(transaction=True) as p:
            p.set(MARKER, VERSION)
            p.delete(MOVED)
            await p.execute()
    finally:
        if _text(await redis.get(LOCK) or b"") == token:
            await redis.delete(LOCK)
    if any(counts.values()):
        log.info("upgrade: key layout %s: renamed %s", VERSION, ", ".join(f"{n} {k}" for k, n in counts.items()))
    return counts
