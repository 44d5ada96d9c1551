"""`incident-hub heartbeats list|pause|resume`: the heartbeats of the rules file (audited changes)."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("heartbeats", help="heartbeats: list them, pause or resume one")
    verbs = p.add_subparsers(dest="verb", required=True)
    ls = verbs.add_parser("list", help="each heartbeat with its last ping, due time, paused, missed")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(fn=run_list)
    for verb, text in (("pause", "never missed until resumed"), ("resume", "due one interval + grace from now")):
        v = verbs.add_parser(verb, help=text)
        v.add_argument("name")
        v.add_argument("--json", action="store_true", help="machine-readable output")
        v.set_defaults(fn=run_change, change=verb)


def run_list(args: argparse.Namespace) -> int:
    from rich.markup import escape
    from rich.table import Table

    from hub.cli.common import console, print_json, settings_or_exit, when, with_store
    from hub.operators.heartbeats import listing
    from hub.operators.maintenance import file_rules

    rules = file_rules(settings_or_exit())
    result = with_store(lambda store: listing(store, rules))
    if args.json:
        print_json(result)
        return 0
    table = Table(show_edge=False, pad_edge=False)
    for col in ("name", "state", "last ping", "missed after", "service", "severity"):
        table.add_column(col)
    for b in result["heartbeats"]:
        state = "paused" if b["paused"] else "missed" if b["missed_at"] else "ok"
        table.add_row(escape(b["name"]), state, when(b["last_ping"]), when(b["due"]), escape(b["service"]),
                      b["severity"])
    console().print(table)
    return 0


def run_change(args: argparse.Namespace) -> int:
    from hub.cli.common import print_json, settings_or_exit, with_store
    from hub.core.escape import terminal
    from hub.operators.audit import cli_actor
    from hub.operators.heartbeats import pause, resume
    from hub.operators.maintenance import file_rules

    rules = file_rules(settings_or_exit())
    act = pause if args.change == "pause" else resume
    who = cli_actor()
    result = with_store(lambda store: act(store, rules, args.name, who))
    if result is None:
        print(terminal(f"incident-hub heartbeats: no heartbeat {args.name!r} in the rules file"), file=sys.stderr)
        return 1
    if args.json:
        print_json(result)
    else:
        print(terminal(f"{args.name}: {'paused' if result['paused'] else 'resumed'}"
                       + ("" if result["changed"] else " (it already was)")))
    return 0
