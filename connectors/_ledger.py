"""What a connector created outside, remembered in Redis so it is never created twice.

Statuspage incidents and Jira issues have no idempotency key on create. The ledger gives
them one, in three steps around the create call:

1. ``get(key)``: a record means the thing exists; use it, create nothing.
2. ``begin(key)`` just before sending: an *intent* marker (first-attempt time, ms). If the
   worker dies or the answer is lost after this point, the next attempt sees the intent and
   searches the outside system before creating (the connector knows how to search).
3. ``put(key, record)`` after the outside system said yes, before the runner records
   success; it clears the intent in the same transaction.

``clear_intent(key)`` is for answers that prove nothing was created (4xx, 429, refused
connection), so the next attempt need not search.
"""

from __future__ import annotations

import json
import time
from typing import Any

from redis.asyncio import Redis

from hub.storage import keys

RECORD_TTL_S = 180 * 86400  # outlives any incident worth updating
INTENT_TTL_S = 7 * 86400


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
            p.delete(self._key("intent", key))
            await p.execute()

    async def intent(self, key: str) -> int | None:
        """Milliseconds since the epoch of the first unconfirmed create attempt, if any."""
        raw = await self.redis.get(self._key("intent", key))
        return int(raw) if raw else None

    async def begin(self, key: str) -> int:
        """Mark a create as in flight; keeps the earliest time when one is already marked."""
        ms = int(time.time() * 1000)
        await self.redis.set(self._key("intent", key), ms, nx=True, ex=INTENT_TTL_S)
        return await self.intent(key) or ms

    async def clear_intent(self, key: str) -> None:
        await self.redis.delete(self._key("intent", key))
