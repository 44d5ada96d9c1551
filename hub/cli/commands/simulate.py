"""`incident-hub simulate SOURCE FILE`: the events and actions a payload would cause, touching nothing."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from multidict import CIMultiDict

#: The event id a simulated payload is planned under (action ids start with it).
SIMULATED_ID = "ev_simulated"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="show the events and actions a webhook payload would cause (no side effects)")
    p.add_argument("source", help="the source's name, as in POST /webhooks/SOURCE")
    p.add_argument("file", type=Path, help="the payload (JSON; '-' reads standard input)")
    p.add_argument("-H", "--header", action="append", default=[], metavar="NAME:VALUE",
                   help="a request header the source needs, e.g. -H 'X-Event-Type: deployment'")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--config", type=Path, help="the rules file (default: HUB_CONFIG, else ./hub.yaml, else the "
                                                "built-in defaults)")
    p.add_argument("--content-type", default="application/json", help="the request's Content-Type")
    p.add_argument("--live", action="store_true",
                   help="read the open incidents from Redis (REDIS_URL), read-only, to say whether each alert "
                        "would open, join (which incident), be deferred or be held as flapping")
    p.set_defaults(fn=run)


def run(args: argparse.Namespace) -> int:
    from connectors.base import BadPayload
    from hub.cli.common import settings_and_rules
    from hub.core.escape import terminal
    from hub.core.registry import sources
    from hub.worker.actions import redact
    from hub.worker.planner import Planner, settings_configured

    src = sources().get(args.source)
    if src is None:
        print(f"unknown source {args.source!r}; known: {', '.join(sorted(sources()))}", file=sys.stderr)
        return 2
    loaded = settings_and_rules(args.config, invalid_code=1)
    if isinstance(loaded, int):
        return loaded
    settings, rules = loaded
    body = sys.stdin.buffer.read() if str(args.file) == "-" else args.file.read_bytes()
    headers = CIMultiDict()
    for h in args.header:
        name, _, value = h.partition(":")
        headers[name.strip()] = value.strip()
    for name, value in src.guess_headers(body).items():
        headers.setdefault(name, value)
    # the worker's planner, offline: no incident history, no claims, nothing written
    planner = Planner(rules, configured=settings_configured(settings))
    rec = {"id": SIMULATED_ID, "source": args.source, "body": body, "headers": headers,
           "content_type": args.content_type, "received_at": int(time.time() * 1000)}
    try:
        events, planned = asyncio.run(planner.plan(rec))
    except BadPayload as e:
        print(f"{args.source}: {e.detail}", file=sys.stderr)
        return 1
    actions = []
    for a in planned:
        row = {"id": a.id, "name": a.name, "workflow": a.workflow, "step": a.step_id, "params": redact(a.params),
               "delay_s": a.delay if a.timer else 0}
        if a.timer:
            row["timer"] = {"after": a.timer.after, "every": a.timer.every, "unless": list(a.unless)}
        if a.render_error:
            row["render_error"] = a.render_error
        row["target"] = target(a.connector, a.params, settings)
        actions.append(row)
    from hub.worker.quiet import would_hold

    held = would_hold(rules, events, rec["received_at"])  # the file's windows; run-time ones are in Redis
    if args.live and not settings.redis_url:
        print("incident-hub: --live needs REDIS_URL", file=sys.stderr)
        return 2
    try:
        incidents = outcomes(rules, events, rec["received_at"], settings.redis_url if args.live else None)
    except ConnectionError as e:
        print(f"incident-hub: --live: Redis unreachable: {e}", file=sys.stderr)
        return 2
    out = {"rules": rules.source, "events": [e.model_dump(mode="json") for e in events], "actions": actions,
           "held": {str(i): why for i, why in held.items()},
           "incidents": {str(i): o for i, o in incidents.items()}}
    flap = rules.config.flapping
    if flap is not None:  # decided on the incident's history, which simulate does not have
        out["flapping"] = {"window_s": flap.window, "threshold": flap.threshold,
                           "note": f"a resolve is held once its alert opened {flap.threshold - 1} episodes within "
                                   f"{_span(flap.window)} (or is flapping); with no history here, none is held"}
    if args.json:
        print(json.dumps(out, indent=2, default=str))
        return 0
    print(f"rules: {rules.source}" + (" (incidents read from Redis, read-only; the actions below are planned "
                                       "without that history)" if args.live else
                                       " (no incident history: each event is taken as the first of its incident)"))
    if flap is not None:
        print(f"flapping: {out['flapping']['note']}")
    for i, e in enumerate(events):
        print(terminal(f"event  {e.kind:<24} {e.severity or '-':<5} {e.fingerprint}  {e.title}"))
        if i in held:
            print(terminal(f"       {held[i]} (its actions below would not run)"))
        if i in incidents:
            print(terminal(f"       incident: {incidents[i]['detail']}"))
            if incidents[i].get("deferred"):
                print(terminal(f"       {incidents[i]['deferred']}"))
    if not events:
        print("no events (recorded as done with no action)")
    for a, row in zip(planned, actions, strict=True):
        when = ""
        if a.timer:
            when = f" after {_span(a.timer.after)}" + (f", every {_span(a.timer.every)}" if a.timer.every else "")
            when += f" unless {', '.join(a.unless)}" if a.unless else ""
        print(f"action {a.name:<26} [{a.workflow}/{a.step_id}]{when}")
        print(f"       {json.dumps(row['params'], default=str)}")
        print(f"       → {row['target']}")
        if a.render_error:
            print(terminal(f"       (renders when it runs; now: {a.render_error})"))
    if events and not planned:
        print("no actions")
    return 0


def outcomes(rules: Any, events: list[Any], at_ms: int, redis_url: str | None) -> dict[int, dict[str, Any]]:
    """Per firing alert: open, join (which incident), repeat, reopen or flapping, and deferral
    (`hub.cli.grouping_preview`); from Redis, read-only, when `redis_url` is given.
    ConnectionError when Redis cannot be reached."""
    from hub.cli import grouping_preview

    if redis_url is None:
        return {i: o for i, e in enumerate(events) if (o := grouping_preview.offline(rules, e)) is not None}

    async def read() -> dict[int, dict[str, Any]]:
        from redis import exceptions as redis_errors

        from hub.storage.connection import connect

        redis = connect(redis_url)
        try:
            found = {}
            for i, e in enumerate(events):
                if (o := await grouping_preview.live(redis, rules, e, at_ms)) is not None:
                    found[i] = o
            return found
        except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as err:
            raise ConnectionError(str(err)) from err
        finally:
            await redis.aclose()
    return asyncio.run(read())


def mask(secret: str) -> str:
    """Enough of a secret to tell two apart (its last 4 characters), never enough to use it."""
    return f"…{secret[-4:]}" if len(secret) >= 12 else "***"


def target(connector: str, params: dict[str, Any], settings: Any) -> str:
    """Where an action would go: which channel, routing key or project, masked but distinguishable."""
    from hub.core.registry import connector_classes

    cls = connector_classes().get(connector)
    if cls is None:
        return connector
    return cls(settings, None, None).describe_target(params, mask)  # type: ignore[arg-type]


def _span(spec: object) -> str:
    if isinstance(spec, dict):
        return ", ".join(f"{k}: {_seconds(v)}" for k, v in spec.items())
    return _seconds(float(spec))  # type: ignore[arg-type]


def _seconds(s: float) -> str:
    for unit, size in (("h", 3600), ("m", 60)):
        if s >= size and s % size == 0:
            return f"{s / size:g}{unit}"
    return f"{s:g}s"
