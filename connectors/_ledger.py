"""What a connector created outside, remembered in Redis so it is never created twice.

Statuspage incidents and Jira issues have no idempotency key on create. The ledger gives
them one, in three steps around the create call:

1. ``get(key)``: a record means the thing exists; use it, create nothing.
2. ``begin(key, in_doubt_for)`` just before sending: an *intent* marker (first-attempt
   time, ms). If the worker dies or the answer is lost after this point, the next attempt
   sees the intent and searches the outside system before creating (the connector knows
   how to search).
3. ``put(key, record)`` after the outside system said yes, before the runner records
   success; it clears the intent in the same transaction.

``clear_intent(key)`` is for answers that prove nothing was created (4xx, 429, refused
connection), so the next attempt need not search.

A search that finds nothing proves nothing while a request that lost its answer may still be
running on the server: a request that timed out on our side can still create the thing a
few seconds later. So the intent carries a *settle* time: ``begin`` sets it to when the
request would have timed out plus a grace, ``lost(key, grace)`` moves it to now + grace
after a timeout or reset, and ``answered(key)`` clears it when the server did answer (a
5xx). ``pending(key)`` reports both; a connector creates again only once it has passed.
"""

from __future__ import annotations

import json
import time
from typing import Any, NamedTuple

from redis.asyncio import Redis

from hub.storage import keys

RECORD_TTL_S = 180 * 86400  # outlives any incident worth updating
INTENT_TTL_S = 7 * 86400


class Pending(NamedTuple):
    """An unconfirmed create: when it was first attempted, and how long until an empty
    search is conclusive (0 when it already is)."""

    first_ms: int
    settles_in: float


class CreationLedger:
    def __init__(self, redis: Redis, connector: str, scope: str) -> None:
        self.redis = redis
        self.connector, self.scope = connector, scope

    def _key(self, kind: str, key: str) -> str:
        return keys.ledger(self.connector, self.scope, kind, key)

    async def get(self, key: str) -> dict[str, Any] | None:
        raw = await self.redis.get(self._key("rec", key))
        return json.loads(raw) if raw else None

    async def put(self, key: str, record: dict[str, Any]) -> None:
        async with self.redis.pipeline(transaction=True) as p:
            p.set(self._key("rec", key), json.dumps(record, separators=(",", ":")), ex=RECORD_TTL_S)
            p.delete(self._key("intent", key), self._key("settle", key))
            await p.execute()

    async def intent(self, key: str) -> int | None:
        """Milliseconds since the epoch of the first unconfirmed create attempt, if any."""
        raw = await self.redis.get(self._key("intent", key))
        return int(raw) if raw else None

    async def pending(self, key: str) -> Pending | None:
        """The unconfirmed create for the key, if any (one round trip)."""
        first, settle = await self.redis.mget(self._key("intent", key), self._key("settle", key))
        if not first:
            return None
        left = (int(settle) / 1000 - time.time()) if settle else 0.0
        return Pending(int(first), max(0.0, left))

    async def begin(self, key: str, in_doubt_for: float) -> None:
        """Mark a create as in flight (keeping the earliest time when one is already marked);
        a search finds nothing conclusively only `in_doubt_for` seconds from now (the
        request's timeout and a grace), should this worker die before it knows the answer."""
        now_ms = int(time.time() * 1000)
        async with self.redis.pipeline(transaction=True) as p:
            p.set(self._key("intent", key), now_ms, nx=True, ex=INTENT_TTL_S)
            p.set(self._key("settle", key), now_ms + int(in_doubt_for * 1000), ex=INTENT_TTL_S)
            await p.execute()

    async def lost(self, key: str, grace: float) -> None:
        """The create's answer was lost (timeout, reset): the server may still be creating it."""
        await self.redis.set(self._key("settle", key), int((time.time() + grace) * 1000), ex=INTENT_TTL_S)

    async def answered(self, key: str) -> None:
        """The server answered the create (a 5xx): nothing more is in flight, a search is conclusive."""
        await self.redis.delete(self._key("settle", key))

    async def clear_intent(self, key: str) -> None:
        await self.redis.delete(self._key("intent", key), self._key("settle", key))


async def settle_after_failed_create(ledger: CreationLedger, key: str, outcome: Any, grace: float) -> None:
    """Book-keeping after a create that did not succeed (`outcome` is a `connectors.base.Outcome`):
    a lost answer may still land, a 5xx was an answer, anything else created nothing."""
    if outcome.ambiguous:
        await ledger.lost(key, grace)
    elif outcome.status is not None and outcome.status >= 500:
        await ledger.answered(key)
    else:
        await ledger.clear_intent(key)  # refused or never sent: nothing was created
