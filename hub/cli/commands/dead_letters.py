"""`incident-hub dead-letters`: actions that ran out of attempts, with their last error."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rich.markup import escape
from rich.table import Table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dead-letters", help="list dead-lettered actions, newest first (reads Redis directly)")
    p.add_argument("--source", help="only events from this source")
    p.add_argument("--connector", help="only actions of this connector (as in `connector.action`)")
    p.add_argument("--since", help="dead-lettered within this age (1h, 7d) or after this time")
    p.add_argument("--limit", type=int, default=50, help="page size (default 50, max 500)")
    p.add_argument("--cursor", help="continue from a previous page's next_cursor")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(fn=run)


def run(args: argparse.Namespace) -> int:
    from hub.cli.common import console, print_json, when, with_store
    from hub.operators.operations import dead_letters_page
    from hub.operators.queries import QueryError, parse_limit, parse_time

    try:
        limit = parse_limit(args.limit)
        since = parse_time(args.since) if args.since else None
    except QueryError as e:
        print(f"incident-hub dead-letters: {e}", file=sys.stderr)
        return 2

    try:
        page = with_store(lambda store: dead_letters_page(store, limit, args.cursor, source=args.source,
                                                          since=since, connector=args.connector))
    except QueryError as e:
        print(f"incident-hub dead-letters: {e}", file=sys.stderr)
        return 2
    if args.json:
        print_json(page)
        return 0
    items: list[dict[str, Any]] = page["dead_letters"]  # type: ignore[assignment]
    total, next_cursor = page["total"], page["next_cursor"]
    out = console()
    table = Table(show_edge=False, pad_edge=False)
    for col in ("dead since", "id (EVENT_ID/ACTION_ID)", "source", "action", "tries", "last error"):
        table.add_column(col, no_wrap=col.startswith("id"))  # copied whole into `purge`
    for d in items:
        err = (d["error"] or "") + (f" — {d['last_response'][:120]}" if d.get("last_response") else "")
        table.add_row(when(d["dead_at"]), escape(d["id"]), d["source"] or "", escape(d["name"] or ""),
                      str(d["attempts"]), escape(err))
    out.print(table)
    out.print(f"{total} dead letter(s) in all" + (f"; more: --cursor {next_cursor}" if next_cursor else ""))
    if items:
        out.print("replay: incident-hub replay --failed   ·   drop one: incident-hub purge ID (the id column)")
    return 0
