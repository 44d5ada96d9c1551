"""Storm summaries at run time: the worker's sweep records one `incident.storm_summary` event
per storming incident per `summary_interval` (`grouping:` in hub.yaml; the state is
`hub.storage.storm`).

`StormSummaries.send_due` takes the incidents whose summary is due (``hub:storm:due``, at most
`BATCH` a sweep): the alerts that joined since the last summary are a range of the incident's
``storm-alerts`` zset (by first-join time after ``hub:storm:summarised``'s mark: O(log n + k),
no scan), their label values counted. Nothing joined since (the storm is over) or the incident
resolved: no summary, and none is due any more (a new storm schedules one again). Else the
summary is recorded as an event of the `storm` source under the delivery id
``storm-<incident hash>-<seq>``, so a sweep that dies after recording it and before moving the
mark records it again as a duplicate (deduplicated: one summary), then the mark moves and the
next summary is due one interval later. Workflows send it (the built-in `storm-summary`), through
the connectors with their rate limits, like any event. A restart loses nothing: all of it is in
Redis and the first sweep (at start) picks it up.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

from hub.core import metrics
from hub.rules import Rules
from hub.rules.storm_source import SOURCE, event_body, top_labels
from hub.storage import keys
from hub.storage.event_store import Store, now_ms
from hub.storage.incidents import IncidentStore

log = logging.getLogger("hub.worker.storm")
#: Summaries recorded per sweep at most (the rest on the next one).
BATCH = 200


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def delivery_id(key: str, seq: int) -> str:
    return f"storm-{hashlib.sha256(key.encode()).hexdigest()[:24]}-{seq}"


class StormSummaries:
    def __init__(self, store: Store, incidents: IncidentStore, rules: Callable[[], Rules]) -> None:
        self.store = store
        self.redis: Redis = store.redis
        self.incidents = incidents
        self._rules = rules

    async def send_due(self, at_ms: int | None = None) -> int:
        """Record the summaries that are due. How many were recorded."""
        at = now_ms() if at_ms is None else at_ms
        due = await self.redis.zrangebyscore(keys.STORM_DUE, "-inf", at, start=0, num=BATCH)
        policy = self._rules().storm_policy()
        sent = 0
        for raw_key in due:
            key = _text(raw_key)
            if policy is None:  # `grouping:` removed from the rules: nothing is summarised
                await self.redis.zrem(keys.STORM_DUE, key)
                continue
            mark = json.loads(await self.redis.hget(keys.STORM_SUMMARISED, key) or "{}")
            state = await self.incidents.get(key)
            began = int(((state or {}).get("storm") or {}).get("since") or 0)  # new since the storm began
            since, seq = max(int(mark.get("to") or 0), began - 1), int(mark.get("seq") or 0)
            joined = await self.redis.zrangebyscore(keys.incident_storm_alerts(key), f"({since}", at,
                                                    withscores=True)
            if not joined or not state or state.get("resolved_at"):
                await self.redis.zrem(keys.STORM_DUE, key)  # over: a new storm schedules one again
                if joined:
                    await self._mark(key, int(max(s for _, s in joined)), seq)
                continue
            members = [_text(m) for m, _ in joined]
            raw_labels = await self.redis.hmget(keys.incident_storm_labels(key), members)
            tops = top_labels([json.loads(r) for r in raw_labels if r])
            body = event_body(key, seq + 1, len(members), tops, state)
            await self.store.ingest(SOURCE, delivery_id(key, seq + 1), body, {}, "application/json", "hub")
            await self._mark(key, int(max(s for _, s in joined)), seq + 1)
            await self.redis.zadd(keys.STORM_DUE, {key: at + policy.interval_ms})
            sent += 1
            metrics.STORM_SUMMARIES.inc()
            metrics.ALERTS_SUMMARISED.inc(len(members))
        return sent

    async def _mark(self, key: str, to: int, seq: int) -> None:
        await self.redis.hset(keys.STORM_SUMMARISED, key, json.dumps({"to": to, "seq": seq}))
