"""`incident-hub replay ID… | --failed [--source S] [--since 1h] [--dry-run] [--force]`.

Runs in this process against Redis (the web process may be down): the selection is
snapshotted into a replay job (visible at GET /admin/replays/{id}), each event is handed
back to the workers, and a progress bar and a summary table show how it went.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="replay events through the current rules (by id, or --failed)")
    p.add_argument("ids", nargs="*", metavar="ID", help="event ids (ev_…)")
    p.add_argument("--failed", action="store_true", help="every event that is dead or partially_failed")
    p.add_argument("--status", help="instead of --failed: events in this state (comma list allowed)")
    p.add_argument("--source", help="only events from this source")
    p.add_argument("--kind", help="only events of this normalised kind")
    p.add_argument("--since", help="only events received within this age (1h, 7d) or after this time")
    p.add_argument("--until", help="only events received before this time")
    p.add_argument("--limit", type=int, default=10_000, help="at most this many events (default 10000)")
    p.add_argument("--dry-run", action="store_true", help="show what would run; change nothing")
    p.add_argument("--force", action="store_true",
                   help="re-run succeeded actions too (with their original idempotency keys)")
    p.add_argument("--json", action="store_true", help="machine-readable output (no progress bar)")
    p.set_defaults(fn=run)


def run(args: argparse.Namespace) -> int:
    from hub.cli.common import with_store
    from hub.operators.queries import EventFilter, QueryError, parse_states, parse_time, valid_event_id
    from hub.operators.replay import BULK_MAX, FAILED_STATES, BulkRequest

    if not args.ids and not args.failed and not args.status:
        print("incident-hub replay: give event ids, or --failed (or --status S) to select by filter", file=sys.stderr)
        return 2
    if args.ids and (args.failed or args.status):
        print("incident-hub replay: give either ids or a filter, not both", file=sys.stderr)
        return 2
    bad = [i for i in args.ids if not valid_event_id(i)]
    if bad:
        print(f"incident-hub replay: not an event id: {bad[0]!r}", file=sys.stderr)
        return 2
    try:
        flt = EventFilter(states=parse_states(args.status) or FAILED_STATES, source=args.source, kind=args.kind,
                          since=parse_time(args.since) if args.since else None,
                          until=parse_time(args.until) if args.until else None)
    except QueryError as e:
        print(f"incident-hub replay: {e}", file=sys.stderr)
        return 2
    req = BulkRequest(ids=tuple(args.ids), filter=flt, force=args.force, dry_run=args.dry_run,
                      limit=max(1, min(args.limit, BULK_MAX)))
    job, plans = with_store(lambda store: _replay(store, req, args))
    if args.json:
        from hub.cli.common import print_json

        print_json({**job, "plans": plans} if plans else job)
    else:
        _summary(job, plans)
    # Named events that could not be replayed (unknown, in flight) are a failure of the command too.
    refused = job.get("failed", 0) + (job.get("skipped", 0) if args.ids and not args.dry_run else 0)
    return 0 if refused == 0 else 1


async def _replay(store: Any, req: Any, args: argparse.Namespace) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from rich.console import Console

    from hub.operators.audit import cli_actor
    from hub.operators.replay import ReplayRefused, bulk_status, create_bulk, dry_run, run_bulk

    job = await create_bulk(store, req, cli_actor())
    total = job["total"]
    if args.json or total == 0:
        await run_bulk(store, job["id"])
    else:
        with Progress(TextColumn("replaying" if not req.dry_run else "planning"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=Console(stderr=True), transient=False) as bar:
            task = bar.add_task("replay", total=total)
            await run_bulk(store, job["id"], on_progress=lambda done, _t, _o: bar.update(task, completed=done))
    plans = []
    if req.dry_run and req.ids and len(req.ids) <= 20:
        for event_id in req.ids:
            try:
                plans.append(await dry_run(store, event_id, force=req.force))
            except ReplayRefused as e:
                plans.append({"event_id": event_id, "error": e.code, "detail": e.detail})
    return await bulk_status(store.redis, job["id"], results=True) or job, plans


def _summary(job: dict[str, Any], plans: list[dict[str, Any]]) -> None:
    from hub.cli.common import console

    out = console()
    for plan in plans:
        if "error" in plan:
            out.print(f"{plan['event_id']}: [red]{escape(plan['detail'])}[/red]")
            continue
        t = Table(title=f"{plan['event_id']} ({plan['state']}) — dry run", title_justify="left", show_edge=False)
        for col in ("action", "would", "why"):
            t.add_column(col)
        for a in plan["actions"]:
            t.add_row(escape(a["name"] or a["id"]), a["would"],
                      escape(a.get("reason", "") + (f" — {a['note']}" if a.get("note") else "")))
        out.print(t)
    counts = Table(title=f"replay {job['id']}" + (" (dry run)" if job.get("dry_run") else ""), title_justify="left",
                   show_edge=False)
    for col in ("selected", "processed", "replayed" if not job.get("dry_run") else "would run", "skipped", "failed"):
        counts.add_column(col, justify="right")
    counts.add_row(str(job["total"]), str(job["processed"]),
                   str(job["would_run"] if job.get("dry_run") else job["replayed"]), str(job["skipped"]),
                   str(job["failed"]))
    out.print(counts)
    if job.get("dry_run") and not plans:  # a selection by filter: what would run, action by action
        rows = [(r["event_id"], a) for r in job.get("results", []) for a in r.get("actions") or []]
        if rows:
            t = Table(title="would run", title_justify="left", show_edge=False)
            for col in ("event", "action", "why"):
                t.add_column(col)
            for event_id, a in rows[:100]:
                t.add_row(event_id, escape(a.get("name") or a["id"]), escape(a.get("reason") or ""))
            out.print(t)
            if len(rows) > 100:
                out.print(f"… and {len(rows) - 100} more actions (see --json)")
    problems = [r for r in job.get("results", []) if r.get("outcome") in ("skipped", "failed") and r.get("detail")]
    if problems:
        t = Table(title="not replayed", title_justify="left", show_edge=False)
        t.add_column("event")
        t.add_column("why")
        for r in problems[:50]:
            t.add_row(r["event_id"], escape(r["detail"]))
        out.print(t)
        if len(problems) > 50:
            out.print(f"… and {len(problems) - 50} more (see --json)")
    if not job.get("dry_run") and job.get("replayed"):
        out.print("the workers take it from here: incident-hub events list --status in_flight")
