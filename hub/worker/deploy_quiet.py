"""Deploy quiet periods: a deploy of a service with `deploy_quiet` opens a window on it.

The window is an ordinary run-time maintenance window (`hub.worker.quiet` holds the alerts
and evaluates those still firing again when it ends), id ``deploy:{service}``, origin
``deploy``:

- `deploy.started` opens it (or keeps the one open) until `deploy_quiet_max` after its start;
- `deploy.succeeded` ends it `deploy_quiet` from now (a success without a start opens one);
- `deploy.failed` ends it now: a failing deploy's alerts matter at once.

It never outlives `deploy_quiet_max` from its start, even when no status ever arrives. The
alerts it holds are due when it ends, so moving its end moves theirs.
"""

from __future__ import annotations

import json
from typing import Any

from redis.asyncio import Redis

from hub.core.events import Kind, NormalisedEvent
from hub.rules import Rules
from hub.storage import keys

DEPLOY_KINDS = (Kind.DEPLOY_STARTED, Kind.DEPLOY_SUCCEEDED, Kind.DEPLOY_FAILED)


def window_id(service: str) -> str:
    return f"deploy:{service}"


def next_window(rules: Rules, ev: NormalisedEvent, service: str, existing: dict[str, Any] | None,
                at_ms: int) -> dict[str, Any] | None:
    """The quiet period of `service` after deploy event `ev` (pure; None: it leaves it alone).

    `existing`: the window stored under `window_id(service)`, if any (ended ones too)."""
    catalog = rules.config.catalog
    spec = catalog.services.get(service)
    quiet = getattr(spec, "deploy_quiet", None) if spec is not None else None
    if not quiet or ev.kind not in DEPLOY_KINDS:
        return None
    is_open = existing is not None and int(existing["end"]) > at_ms
    if ev.kind == Kind.DEPLOY_FAILED and not is_open:
        return None
    start = int(existing["start"]) if is_open and existing is not None else at_ms
    cap = start + int(catalog.deploy_quiet_max * 1000)
    if ev.kind == Kind.DEPLOY_STARTED:
        end = cap
    elif ev.kind == Kind.DEPLOY_SUCCEEDED:
        end = min(at_ms + int(quiet * 1000), cap)
    else:
        end = at_ms
    return {"id": window_id(service), "name": f"deploy of {service}", "match": {"services": [service]},
            "start": start, "end": end, "reason": f"{ev.kind} {ev.attributes.get('sha') or ''}".strip(),
            "origin": "deploy", "by": "deploy"}


async def apply(redis: Redis, rules: Rules, events: list[NormalisedEvent], at_ms: int) -> list[dict[str, Any]]:
    """Open, move or end the quiet periods these deploy events call for; the timeline notes."""
    notes: list[dict[str, Any]] = []
    for ev in events:
        if ev.kind not in DEPLOY_KINDS:
            continue
        for service in rules.canonical_services(ev.services):
            if not getattr(rules.config.catalog.services.get(service), "deploy_quiet", None):
                continue  # no read of Redis for a service without a quiet period
            wid = window_id(service)
            raw = await redis.hget(keys.MAINTENANCE_WINDOWS, wid)
            window = next_window(rules, ev, service, json.loads(raw) if raw else None, at_ms)
            if window is None:
                continue
            end = window["end"]
            held = await redis.hgetall(keys.QUIET_HELD)
            mine = [k for k, v in held.items() if json.loads(v).get("window") == wid]
            async with redis.pipeline(transaction=True) as p:
                p.hset(keys.MAINTENANCE_WINDOWS, wid, json.dumps(window, separators=(",", ":")))
                p.zadd(keys.MAINTENANCE_ENDS, {wid: end})
                if mine:
                    p.zadd(keys.QUIET_DUE, {(k.decode() if isinstance(k, bytes) else k): end for k in mine})
                await p.execute()
            notes.append({"type": "deploy_quiet", "service": service, "until": end, "kind": ev.kind})
    return notes
