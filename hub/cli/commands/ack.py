"""`incident-hub ack INCIDENT`: an operator's acknowledgement, which stops escalation.

For when on-call acknowledged somewhere the hub cannot see (a phone call, a chat): the
escalation timers re-check the incident when they fire and stand down once it is acked.
INCIDENT is the hub's incident key (`<source>:<id>`, an alert fingerprint, or an alias).
"""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ack", help="acknowledge an incident as an operator (stops its escalation)")
    p.add_argument("incident", help="incident key (e.g. <source>:<id>), or an alert fingerprint")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(fn=run)


def run(args: argparse.Namespace) -> int:
    from hub.cli.common import print_json, with_store
    from hub.core.escape import terminal
    from hub.operators.audit import cli_actor
    from hub.operators.operations import acknowledge

    who = cli_actor()
    result = with_store(lambda store: acknowledge(store, args.incident, who))
    if result is None:
        print(f"incident-hub ack: no incident {args.incident!r}", file=sys.stderr)
        return 1
    if args.json:
        print_json(result)
    elif result["acknowledged"]:
        print(terminal(f"acknowledged {result['incident']} as {who}"))
    else:
        print(terminal(f"{result['incident']} was already acknowledged by {result['acknowledged_by']}"))
    return 0
