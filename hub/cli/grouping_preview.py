"""What `simulate` says about an event's incident: would it open one, join one (which), be
deferred, or be held as flapping (`grouping:` and `flapping:` in hub.yaml, issue 12).

From the rules alone (`offline`) nothing is known of the incidents open now, so a firing
alert is said to open its incident unless one with the same `grouping.by` values is open
(then it joins that one). With `--live` (`live`) the same questions are answered from Redis,
read-only (GET and HGETALL, mirroring `hub.worker.grouping._CORRELATE`): nothing is written,
no lock is taken. Nothing here names an outside system.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from hub.core.events import Kind, NormalisedEvent
from hub.rules import Rules
from hub.rules.grouping import values
from hub.storage import keys as layout
from hub.storage.flapping import held
from hub.storage.incidents import incident_key

FIRING = (Kind.ALERT_FIRING, Kind.HEARTBEAT_MISSED)


def _span(seconds: float) -> str:
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _correlation_key(rules: Rules, ev: NormalisedEvent) -> tuple[str | None, list[str] | None]:
    grouping = rules.config.grouping
    if grouping is None or not grouping.by or ev.kind != Kind.ALERT_FIRING:
        return None, None
    found = values(grouping, ev, rules.canonical_services)
    if found is None:
        return None, None
    return layout.correlation(hashlib.sha256("\x1f".join(found).encode()).hexdigest()[:32]), found


def _deferral(rules: Rules, ev: NormalisedEvent) -> str | None:
    grouping = rules.config.grouping
    if grouping is None or not grouping.defer or ev.kind not in FIRING:
        return None
    return (f"deferred: its alert workflows wait {_span(grouping.defer)} before acting "
            "(nothing is paged if the incident is resolved by then)")


def offline(rules: Rules, ev: NormalisedEvent) -> dict[str, Any] | None:
    """The incident outcome of one event from the rules alone (None: not an alert)."""
    key = incident_key(ev)
    if ev.kind not in FIRING or not key:
        return None
    out: dict[str, Any] = {"outcome": "open", "incident": key,
                           "detail": f"opens incident {key} (no incident history read)"}
    corr, found = _correlation_key(rules, ev)
    if corr is not None and found is not None:
        window = rules.config.grouping.window  # type: ignore[union-attr]
        out["grouping_values"] = found
        out["detail"] = (f"opens incident {key}, or joins the alert-born incident with {', '.join(found)} if one "
                         f"is open or was opened within {_span(window)} (no incident history read; --live reads it)")
    if (why := _deferral(rules, ev)) is not None:
        out["deferred"] = why
    return out


def _decode(raw: dict[Any, Any]) -> dict[str, Any]:
    return {(k.decode() if isinstance(k, bytes) else k): json.loads(v) for k, v in raw.items()}


async def live(redis: Any, rules: Rules, ev: NormalisedEvent, now_ms: int) -> dict[str, Any] | None:
    """The incident outcome of one event from the state in Redis, read-only (None: not an alert)."""
    key = incident_key(ev)
    if ev.kind not in FIRING or not key:
        return None
    out: dict[str, Any] = {"outcome": "open", "incident": key, "detail": f"opens incident {key}"}
    own = _decode(await redis.hgetall(layout.incident(key)))
    target = key
    if not own:
        alias = await redis.get(layout.incident_alias(key))
        if alias:
            target = alias.decode() if isinstance(alias, bytes) else str(alias)
            own = _decode(await redis.hgetall(layout.incident(target)))
    if own:
        out.update(_existing(own, target, key, now_ms, rules))
    else:
        corr, found = _correlation_key(rules, ev)
        if corr is not None and found is not None:
            out["grouping_values"] = found
            joined = await _correlated(redis, corr, now_ms, rules.config.grouping.window)  # type: ignore[union-attr]
            if joined is not None:
                out.update(outcome="join", incident=joined,
                           detail=f"joins incident {joined} (same {', '.join(found)}): no new page")
    if out["outcome"] in ("open", "reopen") and (why := _deferral(rules, ev)) is not None:
        out["deferred"] = why
    return out


def _existing(state: dict[str, Any], target: str, key: str, now_ms: int, rules: Rules) -> dict[str, Any]:
    """An alert whose incident (its own, or the one it joined) is in Redis."""
    what = "its incident" if target == key else "the incident it joined"
    if held(state):
        return {"outcome": "flapping", "incident": target,
                "detail": f"held as flapping: {what} {target} has its resolve held; the firing keeps its one "
                          "page open (no new page), and the channel hears about it once"}
    if not state.get("resolved_at"):
        return {"outcome": "join" if target != key else "repeat", "incident": target,
                "detail": f"{what} {target} is open: it joins it (no new page)"}
    flap = rules.config.flapping
    detail = f"reopens {what} {target} (a new episode: it pages again)"
    if flap is not None:
        recent = [t for t in state.get("flap_times") or [] if int(t) >= now_ms - int(flap.window * 1000)]
        if len(recent) + 1 >= flap.threshold - 1:
            detail += f"; its next resolve would be held ({len(recent) + 1} firings within {_span(flap.window)})"
    return {"outcome": "reopen", "incident": target, "detail": detail}


async def _correlated(redis: Any, corr: str, now_ms: int, window_s: float) -> str | None:
    """The incident a firing with these values would join (None: it opens its own)."""
    cur = await redis.get(corr)
    if not cur:
        return None
    since, _, target = (cur.decode() if isinstance(cur, bytes) else str(cur)).partition("|")
    state = _decode(await redis.hgetall(layout.incident(target)))
    if not state:
        return target if now_ms - int(since) <= window_s * 1000 else None  # being opened right now
    if state.get("kind") != "alert":
        return None
    if not state.get("resolved_at") or now_ms - int(state.get("declared_at") or 0) <= window_s * 1000:
        return target
    return None
