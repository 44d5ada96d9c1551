"""`incident-hub purge ID… | --all [--source S] [--connector C] [--older-than 7d]`: drop dead letters.

A purged dead letter is no longer listed nor picked up by `replay --failed`; the action
record and the event's timeline keep the story, and the audit log says who purged it.
ID is `EVENT_ID/ACTION_ID` (as `dead-letters` prints it) or an `EVENT_ID` for all of its dead letters.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("purge", help="remove dead letters from the list (recorded in the audit log)")
    p.add_argument("ids", nargs="*", metavar="ID", help="EVENT_ID/ACTION_ID, or EVENT_ID for all of its dead letters")
    p.add_argument("--all", action="store_true", help="every dead letter matching the filters below")
    p.add_argument("--source", help="with --all: only events from this source")
    p.add_argument("--connector", help="with --all: only actions of this connector")
    p.add_argument("--older-than", help="with --all: only dead letters older than this age (e.g. 7d)")
    p.add_argument("--dry-run", action="store_true", help="list what would be purged; change nothing")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(fn=run)


def run(args: argparse.Namespace) -> int:
    from hub.cli.common import print_json, with_store
    from hub.operators.queries import QueryError, parse_time, split_dead_id, valid_event_id

    if bool(args.ids) == bool(args.all):
        print("incident-hub purge: give dead-letter ids, or --all (with optional filters)", file=sys.stderr)
        return 2
    try:
        for i in args.ids:
            if "/" in i:
                split_dead_id(i)
            elif not valid_event_id(i):
                raise QueryError(f"not an event or dead-letter id: {i!r}")
        before = parse_time(args.older_than) if args.older_than else None
    except QueryError as e:
        print(f"incident-hub purge: {e}", file=sys.stderr)
        return 2
    from hub.operators.audit import cli_actor
    from hub.operators.operations import purge_many

    result: dict[str, Any] = with_store(lambda store: purge_many(
        store, args.ids, by=cli_actor(), every=args.all, source=args.source, connector=args.connector,
        older_than=before, dry_run=args.dry_run))
    if args.json:
        print_json(result)
    else:
        verb = "would purge" if args.dry_run else "purged"
        for d in result["purged"]:
            print(f"{verb} {d}")
        for d, why in result["not_found"].items():
            print(f"not purged {d}: {why}", file=sys.stderr)
        print(f"{len(result['purged'])} dead letter(s) {verb}")
    return 0 if not result["not_found"] else 1
