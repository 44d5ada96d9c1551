"""The one shared mechanism that performs an action: skip, pace, call, classify, retry, dead-letter.

Connectors only say what an attempt did (`Outcome`). Everything about *whether* and *when*
to attempt lives here, identically for every connector:

- a recorded success (or skip) is never performed again unless a replay forces it, and a
  dead action stays dead until a replay asks for it again (a fresh round of attempts);
- a disabled connector records `skipped` with the reason, not a failure, and marks the
  record `not_configured` (its identity is not kept: a later event may perform it);
- calls on the same outside object (the connector's `serial_key`) never overlap, across
  all workers; waiting for that lock or for a rate-limit token is not an attempt: the
  runner waits briefly inline, else parks the action and tells the processor when to
  come back;
- retryable outcomes back off exponentially with full jitter, a server's Retry-After
  (seconds or HTTP date) being a floor, up to the connector's attempt limit and deadline;
  then the action is dead-lettered with its last response;
- permanent outcomes are dead-lettered at once, with the (trimmed) response kept;
- once any attempt was ambiguous (it may have reached the outside system), every later
  attempt is told so, and creations look before they create again;
- secrets are scrubbed from everything recorded: params by name, errors and responses by
  value and by kind (hub.scrub: Authorization credentials of any scheme, API-key fields,
  URL credentials, whatever their length).
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from connectors.base import RESPONSE_KEEP, ActionCall, ActionFn, Connector, Outcome, RetryPolicy
from hub.core import metrics
from hub.core.scrub import scrub
from hub.storage.batch import Batch
from hub.storage.event_store import ACTION_FINAL, Store, now_ms
from hub.storage.ratelimit import RateLimiter
from hub.storage.records import ActionRecord

log = logging.getLogger("hub.worker.actions")

_SECRET_PARAM = re.compile(r"(routing_key|api_key|apikey|token|secret|password|webhook_url|authorization|"
                           r"credential|private_key|genie)", re.I)
ATTEMPT_RESPONSE_KEEP = 500
#: Called with a record about to be saved as succeeded; may return what to queue into that save.
OnSuccess = Callable[[ActionRecord], Callable[[Any], None] | None]


@lru_cache(maxsize=4096)
def is_secret_param(name: str) -> bool:
    """Whether a parameter of this name holds a secret (what `redact` masks). Kept per name,
    up to a bound: most are the rules' and connectors' own, asked on every action."""
    return bool(_SECRET_PARAM.search(name))


def redact(params: dict[str, Any]) -> dict[str, Any]:
    """Params as they may be stored and shown: secret-looking values replaced, at any depth."""
    out: dict[str, Any] = {}
    for k, v in params.items():
        if v and is_secret_param(str(k)):
            out[k] = "***"
        else:
            out[k] = _redact_value(v)
    return out


_SEQUENCES = (list, tuple)


def _redact_value(v: Any) -> Any:
    if isinstance(v, dict):
        return redact(v)
    if isinstance(v, _SEQUENCES):
        return [_redact_value(x) for x in v]
    return v


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
        delay = max(delay, min(retry_after, policy.max_retry_after))
    return delay


class ActionRunner:
    """Advances planned actions by at most one attempt per call, recording every step."""

    def __init__(self, store: Store, connectors: dict[str, Connector], limiter: RateLimiter, *,
                 inline_wait: float = 2.0) -> None:
        self.store = store
        self.connectors = connectors
        self.limiter = limiter
        #: Longest inline wait for a rate-limit token or a serial lock before parking.
        self.inline_wait = inline_wait
        limiter.check(connectors.values())

    def new_record(self, planned: PlannedAction) -> ActionRecord:
        return {"id": planned.id, "name": planned.name, "connector": planned.connector, "action": planned.action,
                "workflow": planned.workflow, "state": "pending", "idempotency_key": planned.idempotency_key,
                "params": redact(planned.params), "attempts": [], "result": {}, "next_at": None, "error": None,
                "created_at": now_ms()}

    async def run(self, event_id: str, planned: PlannedAction, record: ActionRecord | None,
                  received_ms: int, *, force: bool = False, on_success: OnSuccess | None = None,
                  pending: Batch | None = None) -> ActionRecord:
        """Advance one action by at most one attempt; returns its (saved) record.

        `pending`: the caller's batch of not-yet-sent writes. Outcomes that protect nothing
        outside (decided without a call: skipped, dead) and successes of calls the outside
        system deduplicates (`Connector.repeat_safe`) are queued on it for the caller's next
        write; anything else is written at once, with it. It is always sent before a call
        goes out, so a success that a repeat would duplicate is on record before anything else.

        `on_success(record)`, when this call records a success, may return a function that
        queues more writes into the transaction that saves it (one round trip, atomically).

        A final action (succeeded, skipped, dead) is returned untouched unless `force`
        (then it gets a fresh round of attempts). A replay that resets a record to
        `pending` (hub.replay) gets a fresh round too: attempts and the deadline count
        from `replayed_at`.
        """
        record = record or self.new_record(planned)
        if record["state"] in ACTION_FINAL:
            if not force:
                return record
            self._new_round(record)
        elif record["state"] == "retrying" and (record.get("next_at") or 0) > now_ms():
            return record
        record["params"] = redact(planned.params)

        connector = self.connectors.get(planned.connector)
        if connector is None:
            return await self._final(event_id, record, "dead", f"unknown connector {planned.connector!r}",
                                     pending=pending, defer=True)
        fn = connector.actions().get(planned.action)
        if fn is None:
            return await self._final(event_id, record, "dead", f"{planned.connector} has no action {planned.action!r}",
                                     pending=pending, defer=True)
        missing = connector.missing_config(planned.params)
        if missing:
            record["not_configured"] = True  # the processor gives its identity back (see docs/connectors.md)
            return await self._final(event_id, record, "skipped", f"skipped: {missing}",
                                     pending=pending, defer=True)
        record.pop("not_configured", None)
        policy = connector.retry_policy
        started_ms = max(received_ms, record.get("round_started_at") or 0, record.get("replayed_at") or 0)
        if now_ms() - started_ms > policy.deadline * 1000:
            return await self._final(event_id, record, "dead", f"deadline of {policy.deadline:g}s passed",
                                     pending=pending, defer=True)

        replayed = record.get("replayed_at") or 0
        round_attempts = [a for a in record["attempts"][record.get("round_first", 0):] if a.get("at", 0) >= replayed]
        attempt_no = len(round_attempts) + 1
        call = ActionCall(event_id=event_id, action_id=planned.id, idempotency_key=planned.idempotency_key,
                          params=planned.params, attempt=attempt_no,
                          after_ambiguous=any(a.get("ambiguous") for a in record["attempts"]))

        serial = connector.serial_key(call)
        token = None
        if serial is not None:
            token = await self._lock(connector, serial)
            if token is None:
                return await self._park(event_id, record, 0.25 + random.uniform(0, 0.5),
                                        f"waiting: another call on the same {connector.name} object is running",
                                        pending)
        try:
            known = await self._unchanged(connector, planned.action, call)
            if known is not None:  # nothing to send: no token spent, no call made
                outcome, duration = known, 0.0
            else:
                wait = await self._pace(connector, call)
                if wait > 0:
                    return await self._park(event_id, record, wait, f"waiting: {connector.name} rate limit", pending)
                if pending:
                    await pending.flush(self.store.redis)
                outcome, duration = await self._attempt(connector, fn, call)
        finally:
            if token is not None and serial is not None:
                await self.limiter.unlock(connector.name, serial, token)

        secrets = connector.secrets(planned.params)
        outcome.detail = scrub(outcome.detail, secrets)
        outcome.response = scrub(outcome.response, secrets)
        metrics.ACTIONS.labels(planned.connector, outcome.state).inc()
        metrics.ACTION_SECONDS.labels(planned.connector).observe(duration)
        record["attempts"].append({"at": now_ms(), "status": outcome.status, "outcome": outcome.state,
                                "error": outcome.detail or None, "duration_ms": round(duration * 1000, 1),
                                "response": outcome.response[:ATTEMPT_RESPONSE_KEEP] or None,
                                "ambiguous": outcome.ambiguous})
        record.pop("waiting", None)
        if outcome.result:
            record["result"] = {**record.get("result", {}), **outcome.result}

        if outcome.state == "succeeded":
            return await self._final(event_id, record, "succeeded", None,
                                     also=on_success(record) if on_success else None,
                                     pending=pending, defer=planned.action in connector.repeat_safe)
        if outcome.state == "skipped":
            return await self._final(event_id, record, "skipped", outcome.detail, pending=pending)
        if outcome.state == "permanent":
            return await self._final(event_id, record, "dead", outcome.detail, response=outcome.response,
                                     pending=pending)
        if attempt_no >= policy.max_attempts:
            return await self._final(event_id, record, "dead", f"out of attempts ({attempt_no}): {outcome.detail}",
                                     response=outcome.response, pending=pending)
        delay = backoff(policy, attempt_no, outcome.retry_after)
        if now_ms() + delay * 1000 - started_ms > policy.deadline * 1000:
            return await self._final(event_id, record, "dead", f"next retry would pass the {policy.deadline:g}s "
                                     f"deadline: {outcome.detail}", response=outcome.response, pending=pending)
        record.update(state="retrying", error=outcome.detail, next_at=now_ms() + int(delay * 1000))
        metrics.RETRIES.labels(planned.connector).inc()
        await self._save(event_id, record, {"type": "action", "action": record["id"], "name": record["name"],
                                         "state": "retrying", "status": outcome.status,
                                         "error": outcome.detail, "retry_in_s": round(delay, 2)}, pending)
        return record

    async def _save(self, event_id: str, record: ActionRecord, timeline: dict[str, Any] | None,
                    pending: Batch | None, also: Callable[[Any], None] | None = None, *, defer: bool = False) -> None:
        """Write the record now (with whatever is pending), or queue it on `pending` when `defer`."""
        p = pending if pending is not None else Batch()
        self.store.save_action_into(p, event_id, record, timeline)
        if also is not None:
            also(p)
        if not defer or pending is None:
            await p.flush(self.store.redis)

    # -- steps -------------------------------------------------------------------------------

    @staticmethod
    def _new_round(record: ActionRecord) -> None:
        """A replay: a fresh attempt budget and deadline, history kept."""
        record.update(state="pending", next_at=None, error=None, round_first=len(record["attempts"]),
                   round_started_at=now_ms(), rounds=record.get("rounds", 1) + 1)
        record.pop("last_response", None)

    async def _lock(self, connector: Connector, serial: str) -> str | None:
        ttl = connector.attempt_timeout + 10
        deadline = time.monotonic() + self.inline_wait
        while True:
            token = await self.limiter.lock(connector.name, serial, ttl)
            if token is not None or time.monotonic() >= deadline:
                return token
            await asyncio.sleep(0.05)

    async def _pace(self, connector: Connector, call: ActionCall) -> float:
        """0 once a token is spent; else how long to park the action (nothing spent)."""
        waited = 0.0
        while True:
            delay = await self.limiter.acquire(connector, call)
            if delay <= 0:
                return 0.0
            if waited + delay > self.inline_wait:
                return delay
            await asyncio.sleep(delay)
            waited += delay

    @staticmethod
    async def _unchanged(connector: Connector, action: str, call: ActionCall) -> Outcome | None:
        """`Connector.unchanged`; a failing look is no answer (the attempt decides, as before)."""
        try:
            return await connector.unchanged(action, call)
        except Exception as e:  # e.g. Redis gone for a moment: the call itself will tell
            log.warning("%s: could not tell whether %s is unchanged: %s", connector.name, call.action_id,
                        type(e).__name__)
            return None

    async def _attempt(self, connector: Connector, fn: ActionFn, call: ActionCall) -> tuple[Outcome, float]:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(connector.attempt_timeout):
                outcome = await fn(call)
        except TimeoutError:
            outcome = Outcome("retryable", None, detail=f"attempt took over {connector.attempt_timeout:g}s",
                              ambiguous=True)
        except Exception as e:  # a connector bug must not lose the event: record it and retry
            outcome = Outcome("retryable", None, detail=f"{type(e).__name__}: {e}", ambiguous=True)
            # no traceback: exception texts may quote secrets; the scrubbed detail is logged instead
            log.error("%s action %s raised: %s", connector.name, call.action_id,
                      scrub(outcome.detail, connector.secrets(call.params)))
        return outcome, time.perf_counter() - started

    async def _park(self, event_id: str, record: ActionRecord, delay: float, reason: str,
                    pending: Batch | None = None) -> ActionRecord:
        """Not an attempt: come back in `delay` seconds."""
        first = record.get("waiting") != reason
        record.update(state="retrying", next_at=now_ms() + max(1, int(delay * 1000)), waiting=reason)
        timeline = {"type": "action", "action": record["id"], "name": record["name"], "state": "retrying",
                    "waiting": reason, "retry_in_s": round(delay, 2)} if first else None
        await self._save(event_id, record, timeline, pending)
        return record

    async def _final(self, event_id: str, record: ActionRecord, state: str, error: str | None,
                     response: str = "", also: Callable[[Any], None] | None = None,
                     pending: Batch | None = None, defer: bool = False) -> ActionRecord:
        record.update(state=state, error=error, next_at=None)
        record.pop("waiting", None)
        if response:
            record["last_response"] = response[:RESPONSE_KEEP]
        if state == "dead":
            metrics.DEAD_LETTERED.labels(record["connector"]).inc()
            log.warning("action %s of %s dead-lettered: %s", record["name"], event_id, error)
        last = record["attempts"][-1] if record["attempts"] else {}
        await self._save(event_id, record, {"type": "action", "action": record["id"], "name": record["name"],
                                         "state": state, "status": last.get("status"), "error": error},
                         pending, also, defer=defer)
        return record
