"""`incident-hub maintenance start|list|end`: silence a service for planned work, from a shell.

The same actions as `POST/GET/DELETE /admin/maintenance` (`hub.operators.maintenance`),
audited as `cli:<user>`; they talk to Redis directly, so they work while the web process is
down. Matching alerts are recorded but page nobody until the window ends; those still
firing then are evaluated again.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("maintenance", help="maintenance windows: start one, list them, end one early")
    verbs = p.add_subparsers(dest="verb", required=True)
    s = verbs.add_parser("start", help="start a window now: matching alerts page nobody until it ends")
    s.add_argument("--service", action="append", default=[], help="a catalog service (repeat for more)")
    s.add_argument("--team", action="append", default=[], help="a catalog team (repeat for more)")
    s.add_argument("--source", action="append", default=[], help="an inbound source (repeat for more)")
    s.add_argument("--label", action="append", default=[], metavar="NAME=VALUE", help="a label every alert has")
    s.add_argument("--for", dest="duration", required=True, help="how long, e.g. 30m, 2h (at most 7d)")
    s.add_argument("--reason", default="", help="why (shown in the list and the audit log)")
    s.add_argument("--name", default="", help="a short name (default: the id)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(fn=run_start)
    ls = verbs.add_parser("list", help="windows open now and upcoming")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(fn=run_list)
    e = verbs.add_parser("end", help="end a run-time window now (its held alerts still firing page)")
    e.add_argument("id", help="the window id (mw_…)")
    e.add_argument("--json", action="store_true", help="machine-readable output")
    e.set_defaults(fn=run_end)


def _fail(message: str, code: int = 2) -> int:
    from hub.core.escape import terminal

    print(terminal(f"incident-hub maintenance: {message}"), file=sys.stderr)
    return code


def run_start(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from hub.cli.common import print_json, when, with_store
    from hub.core.escape import terminal
    from hub.operators.audit import cli_actor
    from hub.operators.maintenance import WindowRequest, start

    labels: dict[str, str] = {}
    for item in args.label:
        name, sep, value = item.partition("=")
        if not sep or not name:
            return _fail(f"--label wants NAME=VALUE, got {item!r}")
        labels[name] = value
    try:
        req = WindowRequest.model_validate({
            "match": {"services": args.service, "teams": args.team, "sources": args.source, "labels": labels},
            "duration": args.duration, "reason": args.reason, "name": args.name})
    except ValidationError as e:
        return _fail("; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'input'}: {err['msg']}"
                               for err in e.errors()[:3]))
    who = cli_actor()
    window = with_store(lambda store: start(store, req, who))
    if args.json:
        print_json(window)
    else:
        print(terminal(f"{window['id']}: maintenance until {when(window['end'])} ({_what(window['match'])})"))
    return 0


def _what(match: dict[str, Any]) -> str:
    parts = [f"{k} {', '.join(v)}" for k, v in match.items() if isinstance(v, list) and v]
    parts += [f"{k}={v}" for k, v in (match.get("labels") or {}).items()]
    return "; ".join(parts)


def run_list(args: argparse.Namespace) -> int:
    from rich.markup import escape
    from rich.table import Table

    from hub.cli.common import console, print_json, settings_or_exit, when, with_store
    from hub.operators.maintenance import file_rules, listing

    rules = file_rules(settings_or_exit())
    result = with_store(lambda store: listing(store, rules))
    if args.json:
        print_json(result)
        return 0
    table = Table(show_edge=False, pad_edge=False)
    for col in ("id", "state", "from", "until", "matches", "origin", "reason"):
        table.add_column(col, no_wrap=col == "id")
    for w in result["windows"]:
        table.add_row(escape(w["id"]), "open" if w["active"] else "upcoming", when(w["start"]), when(w["end"]),
                      escape(_what(w["match"])), w["origin"], escape(w.get("reason") or ""))
    out = console()
    out.print(table)
    out.print(f"{len(result['windows'])} window(s)")
    return 0


def run_end(args: argparse.Namespace) -> int:
    from hub.cli.common import print_json, with_store
    from hub.core.escape import terminal
    from hub.operators.audit import cli_actor
    from hub.operators.maintenance import end

    who = cli_actor()
    result = with_store(lambda store: end(store, args.id, who))
    if result is None:
        return _fail(f"no open run-time window {args.id!r}", 1)
    if args.json:
        print_json(result)
    else:
        print(terminal(f"ended {result['id']}; {result['held']} held alert(s) are evaluated again"))
    return 0
