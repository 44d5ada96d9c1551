"""The one shared mechanism that performs an action: skip, rate-limit, call, classify, retry, dead-letter.

Connectors only say what an attempt did (`Outcome`). Everything about *whether* and *when*
to attempt lives here, identically for every connector:

- a recorded success (or skip) is never performed again unless a replay forces it;
- a disabled connector records `skipped` with the reason, not a failure;
- retryable outcomes back off exponentially with full jitter, honouring Retry-After, up to
  the connector's attempt limit and deadline; then the action is dead-lettered;
- permanent outcomes are dead-lettered at once, with the (trimmed) response kept;
- waiting for a rate-limit token is not an attempt.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass, field
from typing import Any

from connectors.base import ActionCall, Connector, Outcome, RetryPolicy
from hub import metrics
from hub.ratelimit import RateLimiter
from hub.store import Store, now_ms

_SECRET_PARAM = re.compile(r"(routing_key|api_key|token|secret|password|webhook_url|authorization)", re.I)


def redact(params: dict[str, Any]) -> dict[str, Any]:
    """Params as they may be stored and shown: secret-looking values replaced."""
    out: dict[str, Any] = {}
    for k, v in params.items():
        if _SECRET_PARAM.search(k) and v:
            out[k] = "***"
        elif isinstance(v, dict):
            out[k] = redact(v)
        else:
            out[k] = v
    return out


@dataclass
class PlannedAction:
    """One action instance a rule asks for. `id` is stable for the event (workflow + step)."""

    id: str
    connector: str
    action: str
    params: dict[str, Any] = field(default_factory=dict)
    idempotency_key: str = ""
    delay: float = 0.0
    unless: tuple[str, ...] = ()
    workflow: str = ""

    @property
    def name(self) -> str:
        return f"{self.connector}.{self.action}"


def backoff(policy: RetryPolicy, attempt: int, retry_after: float | None) -> float:
    """Full-jitter exponential backoff; a server's Retry-After is a floor, not a suggestion."""
    ceiling = min(policy.max_delay, policy.base_delay * (2 ** (attempt - 1)))
    delay = random.uniform(0, ceiling)
    if retry_after is not None:
        delay = max(delay, min(retry_after, policy.max_delay * 4))
    return delay


class ActionRunner:
    def __init__(self, store: Store, connectors: dict[str, Connector], limiter: RateLimiter) -> None:
        self.store = store
        self.connectors = connectors
        self.limiter = limiter

    def new_record(self, planned: PlannedAction) -> dict[str, Any]:
        return {"id": planned.id, "name": planned.name, "connector": planned.connector, "action": planned.action,
                "workflow": planned.workflow, "state": "pending", "idempotency_key": planned.idempotency_key,
                "params": redact(planned.params), "attempts": [], "result": {}, "next_at": None, "error": None,
                "created_at": now_ms()}

    async def run(self, event_id: str, planned: PlannedAction, record: dict[str, Any] | None,
                  received_ms: int, *, force: bool = False) -> dict[str, Any]:
        """Advance one action by at most one attempt; returns its (saved) record."""
        rec = record or self.new_record(planned)
        if rec["state"] in ("succeeded", "skipped") and not force:
            return rec
        if rec["state"] == "retrying" and (rec.get("next_at") or 0) > now_ms():
            return rec
        rec["params"] = redact(planned.params)

        connector = self.connectors.get(planned.connector)
        if connector is None:
            return await self._final(event_id, rec, "dead", f"unknown connector {planned.connector!r}")
        fn = connector.actions().get(planned.action)
        if fn is None:
            return await self._final(event_id, rec, "dead", f"{planned.connector} has no action {planned.action!r}")
        missing = connector.missing_config()
        if missing:
            return await self._final(event_id, rec, "skipped", f"skipped: {missing}")
        policy = connector.retry_policy
        if time.time() * 1000 - received_ms > policy.deadline * 1000:
            return await self._final(event_id, rec, "dead", f"deadline of {policy.deadline:g}s passed")

        attempt_no = len(rec["attempts"]) + 1
        previous = rec["attempts"][-1] if rec["attempts"] else {}
        call = ActionCall(event_id=event_id, action_id=planned.id, idempotency_key=planned.idempotency_key,
                          params=planned.params, attempt=attempt_no,
                          after_ambiguous=bool(previous.get("ambiguous")))
        await self.limiter.wait(connector, call)
        started = time.perf_counter()
        try:
            outcome = await fn(call)
        except Exception as e:  # a connector bug must not lose the event: record and retry
            outcome = Outcome("retryable", None, detail=f"{type(e).__name__}: {e}")
        duration = time.perf_counter() - started
        metrics.ACTIONS.labels(planned.connector, outcome.state).inc()
        metrics.ACTION_SECONDS.labels(planned.connector).observe(duration)
        rec["attempts"].append({"at": now_ms(), "status": outcome.status, "outcome": outcome.state,
                                "error": outcome.detail or None, "duration_ms": round(duration * 1000, 1),
                                "response": outcome.response[:500] or None, "ambiguous": outcome.ambiguous})
        if outcome.result:
            rec["result"] = {**rec.get("result", {}), **outcome.result}

        if outcome.state == "succeeded":
            return await self._final(event_id, rec, "succeeded", None)
        if outcome.state == "skipped":
            return await self._final(event_id, rec, "skipped", outcome.detail)
        if outcome.state == "permanent":
            return await self._final(event_id, rec, "dead", outcome.detail, response=outcome.response)
        if attempt_no >= policy.max_attempts:
            return await self._final(event_id, rec, "dead", f"out of attempts ({attempt_no}): {outcome.detail}",
                                     response=outcome.response)
        delay = backoff(policy, attempt_no, outcome.retry_after)
        rec.update(state="retrying", error=outcome.detail, next_at=now_ms() + int(delay * 1000))
        metrics.RETRIES.labels(planned.connector).inc()
        await self.store.save_action(event_id, rec, {"type": "action", "action": rec["id"], "name": rec["name"],
                                                     "state": "retrying", "status": outcome.status,
                                                     "error": outcome.detail, "retry_in_s": round(delay, 2)})
        return rec

    async def _final(self, event_id: str, rec: dict[str, Any], state: str, error: str | None,
                     response: str = "") -> dict[str, Any]:
        rec.update(state=state, error=error, next_at=None)
        if response:
            rec["last_response"] = response[:2000]
        if state == "dead":
            metrics.DEAD_LETTERED.labels(rec["connector"]).inc()
        last = rec["attempts"][-1] if rec["attempts"] else {}
        await self.store.save_action(event_id, rec, {"type": "action", "action": rec["id"], "name": rec["name"],
                                                     "state": state, "status": last.get("status"),
                                                     "error": error})
        return rec
