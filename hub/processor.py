"""One event's trip through the worker: parse → normalise → decide → act → record.

`process()` is idempotent: it may run twice (arq is at-least-once, the sweeper re-enqueues,
a worker may be killed mid-way) and each run only advances what is not final yet.
"""

from __future__ import annotations

import time
from typing import Any

from multidict import CIMultiDict

from hub import metrics
from hub.actions import ActionRunner, PlannedAction
from hub.events import NormalisedEvent
from hub.registry import sources
from hub.rules import Rules
from hub.store import FINAL_STATES, Store, ev_key, now_ms


class Processor:
    def __init__(self, store: Store, rules: Rules, runner: ActionRunner, max_runs: int = 8) -> None:
        self.store = store
        self.rules = rules
        self.runner = runner
        self.max_runs = max_runs

    def normalise(self, rec: dict[str, Any]) -> list[NormalisedEvent]:
        src = sources()[rec["source"]]
        headers = CIMultiDict(rec.get("headers") or {})
        payload = src.parse(rec["body"], headers, rec.get("content_type", "application/json"))
        return src.normalise(payload, headers, self.rules.source_options(rec["source"]))

    async def plan(self, rec: dict[str, Any]) -> tuple[list[NormalisedEvent], list[PlannedAction]]:
        """Normalise and decide, without side effects (also used by dry-run replay and simulate)."""
        events = self.normalise(rec)
        return events, self.rules.plan(events)

    async def process(self, event_id: str, *, force: bool = False) -> float | None:
        """Advance the event; return seconds until it should run again, or None when final."""
        rec = await self.store.get(event_id)
        if rec is None:
            return None  # expired past retention: nothing left to do
        state = rec["state"]
        if state in FINAL_STATES:
            return None
        runs = await self.store.redis.hincrby(ev_key(event_id), "runs", 1)
        if runs > self.max_runs:
            await self._finish(rec, "dead", {"error": f"worker crashed or timed out {runs - 1} times on this event"})
            return None
        if state != "processing":
            await self.store.transition(event_id, rec["received_at"], state, "processing")
            state = "processing"

        try:
            events, planned = await self.plan(rec)
        except Exception as e:  # the ingress validated it, so this is a parser bug: keep it visible
            await self._finish(rec, "dead", {"error": f"parse failed: {type(e).__name__}: {e}"}, state)
            return None
        if "events" not in rec:
            await self.store.record_parsed(event_id, rec["received_at"], [e.model_dump(mode="json") for e in events])

        existing = await self.store.actions(event_id)
        results = []
        for action in planned:
            results.append(await self.runner.run(event_id, action, existing.get(action.id), rec["received_at"],
                                                 force=force))
        waiting = [r["next_at"] for r in results if r["state"] == "retrying"]
        await self.store.redis.hset(ev_key(event_id), "runs", 0)
        if waiting:
            await self.store.touch(event_id)
            return max(0.05, (min(waiting) - now_ms()) / 1000)
        states = {r["state"] for r in results}
        final = "dead" if states == {"dead"} else "partially_failed" if "dead" in states else "done"
        await self._finish(rec, final, {"actions": len(results)}, state)
        return None

    async def _finish(self, rec: dict[str, Any], final: str, note: dict[str, Any], old: str | None = None) -> None:
        await self.store.transition(rec["id"], rec["received_at"], old or rec["state"], final, note,
                                    runs=0, **({"error": note["error"]} if "error" in note else {}))
        metrics.EVENTS_FINISHED.labels(rec["source"], final).inc()
        metrics.PROCESSING_SECONDS.labels(rec["source"]).observe(max(0.0, time.time() - rec["received_at"] / 1000))
