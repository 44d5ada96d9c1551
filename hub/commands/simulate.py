"""`incident-hub simulate SOURCE FILE`: the events and actions a payload would cause, touching nothing."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from multidict import CIMultiDict


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="show the events and actions a webhook payload would cause (no side effects)")
    p.add_argument("source", help="datadog, grafana, alertmanager, incidentio, github or pagerduty")
    p.add_argument("file", type=Path, help="the payload (JSON; '-' reads standard input)")
    p.add_argument("-H", "--header", action="append", default=[], metavar="NAME:VALUE",
                   help="a request header the source needs, e.g. -H 'X-GitHub-Event: deployment_status'")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(fn=run)


def run(args: argparse.Namespace) -> int:
    from connectors.base import BadPayload
    from hub.registry import sources
    from hub.rules import Rules

    src = sources().get(args.source)
    if src is None:
        print(f"unknown source {args.source!r}; known: {', '.join(sorted(sources()))}", file=sys.stderr)
        return 2
    body = sys.stdin.buffer.read() if str(args.file) == "-" else args.file.read_bytes()
    headers = CIMultiDict()
    for h in args.header:
        name, _, value = h.partition(":")
        headers[name.strip()] = value.strip()
    if args.source == "github" and "X-GitHub-Event" not in headers:
        guess = _guess_github_event(body)
        if guess:
            headers["X-GitHub-Event"] = guess
    rules = Rules()
    try:
        payload = src.parse(body, headers, "application/json")
        events = src.normalise(payload, headers, rules.source_options(args.source))
    except BadPayload as e:
        print(f"{args.source}: {e.detail}", file=sys.stderr)
        return 1
    planned = rules.plan(events)
    out = {"events": [e.model_dump(mode="json") for e in events],
           "actions": [{"id": a.id, "name": a.name, "params": a.params, "delay_s": a.delay} for a in planned]}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    for e in events:
        print(f"event  {e.kind:<24} {e.severity or '-':<5} {e.fingerprint}  {e.title}")
    if not events:
        print("no events (recorded as done with no action)")
    for a in planned:
        delay = f" after {a.delay:g}s" if a.delay else ""
        print(f"action {a.name:<24}{delay} {json.dumps(a.params)[:200]}")
    if events and not planned:
        print("no actions")
    return 0


def _guess_github_event(body: bytes) -> str | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    for key in ("deployment_status", "workflow_run", "deployment"):
        if isinstance(data, dict) and data.get(key):
            return key
    return "ping" if isinstance(data, dict) and "zen" in data else None
