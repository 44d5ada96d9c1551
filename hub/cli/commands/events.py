"""`incident-hub events list|show`: recent events and one event's full timeline, from Redis."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rich.markup import escape
from rich.table import Table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("events", help="list events or show one event's timeline (reads Redis directly)")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="list|show")

    lp = verbs.add_parser("list", help="events, newest first")
    lp.add_argument("--status", help="a state, a comma list, or failed / final / in_flight")
    lp.add_argument("--source", help="only events of this source (its name, as in POST /webhooks/SOURCE)")
    lp.add_argument("--kind", help="a normalised kind, e.g. deploy.failed")
    lp.add_argument("--since", help="age (1h, 7d), epoch seconds or ISO 8601")
    lp.add_argument("--until", help="as --since")
    lp.add_argument("--limit", type=int, default=50, help="page size (default 50, max 500)")
    lp.add_argument("--cursor", help="continue from a previous page's next_cursor")
    lp.add_argument("--json", action="store_true", help="machine-readable output")
    lp.set_defaults(fn=run_list)

    sp = verbs.add_parser("show", help="one event: record, normalised events, actions with attempts, timeline")
    sp.add_argument("id", help="the event id (ev_…)")
    sp.add_argument("--json", action="store_true", help="machine-readable output (includes the raw payload)")
    sp.set_defaults(fn=run_show)


def run_list(args: argparse.Namespace) -> int:
    from hub.cli.common import console, print_json, styled, when, with_store
    from hub.operators.operations import events_page
    from hub.operators.queries import EventFilter, QueryError, parse_limit

    try:
        flt = EventFilter.from_params({"status": args.status, "source": args.source, "kind": args.kind,
                                       "since": args.since, "until": args.until})
        limit = parse_limit(args.limit)
    except QueryError as e:
        print(f"incident-hub events: {e}", file=sys.stderr)
        return 2

    try:
        page = with_store(lambda store: events_page(store, flt, limit, args.cursor))
    except QueryError as e:
        print(f"incident-hub events: {e}", file=sys.stderr)
        return 2
    items: list[dict[str, Any]] = page["events"]  # type: ignore[assignment]
    if args.json:
        print_json({"events": items, "next_cursor": page["next_cursor"]})
        return 0
    table = Table(show_edge=False, pad_edge=False)
    for col in ("received", "source", "state", "severity", "title", "service", "kinds", "id"):
        table.add_column(col, max_width=40 if col == "title" else None)
    for ev in items:
        table.add_row(when(ev["received_at"]), ev["source"] or "", styled(ev["state"]), ev.get("severity") or "",
                      escape(ev.get("title") or ""), escape(", ".join(ev.get("services") or [])),
                      ", ".join(ev["kinds"]), ev["id"])
    out = console()
    out.print(table)
    if not items:
        out.print("no events match")
    if page["next_cursor"]:
        out.print(f"more: --cursor {page['next_cursor']}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from hub.cli.common import console, print_json, styled, when, with_store
    from hub.operators.queries import event_detail, valid_event_id

    if not valid_event_id(args.id):
        print(f"incident-hub events: not an event id: {args.id!r}", file=sys.stderr)
        return 2
    detail = with_store(lambda store: event_detail(store.redis, args.id))
    if detail is None:
        print(f"incident-hub events: no event {args.id!r} (unknown, or expired past HUB_RETENTION)", file=sys.stderr)
        return 1
    if args.json:
        print_json(detail)
        return 0
    out = console()
    out.print(f"[bold]{detail['id']}[/bold]  {styled(detail['state'])}  {detail['source']}  "
              f"delivery {escape(str(detail['delivery_id']))}  received {when(detail['received_at'])}  "
              f"{detail['size']} bytes  verified by {escape(str(detail['verified']))}")
    if detail.get("error"):
        out.print(f"[red]{escape(detail['error'])}[/red]")
    if detail.get("reason"):
        out.print(f"[yellow]no action: {escape(detail['reason'])}[/yellow]")
    for ev in detail["events"]:
        out.print(f"  event  {ev.get('kind')}  {ev.get('severity') or '-'}  {escape(ev.get('title') or '')}  "
                  f"[dim]{escape(ev.get('fingerprint') or '')}[/dim]")
    for inc in detail.get("incidents") or []:  # what it opened or joined: `incident-hub incidents show KEY`
        out.print(f"  incident  {inc['relation']}  {escape(inc['key'])}  {inc.get('state') or 'expired'}  "
                  f"{escape(inc.get('title') or '')}")
    table = Table(title="actions", show_edge=False, pad_edge=False, title_justify="left")
    for col in ("action", "state", "attempts", "last error"):
        table.add_column(col)
    for a in detail["actions"]:
        replayed = a.get("replayed_at") or 0
        lines = [_attempt(x, before=bool(replayed and (x.get("at") or 0) < replayed)) for x in a.get("attempts", [])]
        if a.get("state") == "retrying" and a.get("next_at"):
            waiting = f" ({a['waiting']})" if a.get("waiting") else ""
            lines.append(escape(f"next retry {when(a['next_at'])}{waiting}"))
        if a.get("state") == "pending" and a.get("scheduled_for"):
            from hub.worker.timers import timer_step

            lines.append(escape(f"scheduled for {when(a['scheduled_for'])} "
                                f"(timer step {timer_step(str(a.get('timer') or ''))[1]})"))
        table.add_row(escape(a.get("name") or a["id"]), styled(a.get("state")), "\n".join(lines) or "-",
                      escape(a.get("error") or ""))
    if detail["actions"]:
        out.print(table)
    out.print("[bold]timeline[/bold]")
    for t in detail["timeline"]:
        out.print(f"  {when(t.get('at'))}  {t.get('type')}  {escape(timeline_text(t))}")
    return 0


def timeline_text(t: dict[str, Any]) -> str:
    """One timeline entry for people: timers name their step and time, other times are readable."""
    from hub.cli.common import when
    from hub.worker.timers import timer_step

    if t.get("type") == "timer" and t.get("timer"):
        workflow, step = timer_step(str(t["timer"]))
        text = f"{t.get('step') or step} ({t.get('workflow') or workflow}) {t.get('state', '')}".strip()
        if t.get("name"):
            text += f": {t['name']}"
        if t.get("due_at"):
            text += f", due {when(int(t['due_at']))}"
        return text + (f" ({t['reason']})" if t.get("reason") else "")
    rest = {k: (when(int(v)) if k.endswith("_at") and isinstance(v, int) else v)
            for k, v in t.items() if k not in ("at", "type")}
    return json.dumps(rest, default=str)


def _attempt(a: dict[str, Any], before: bool = False) -> str:
    from hub.cli.common import when

    status = "no response" if a.get("status") is None else f"HTTP {a['status']}"
    parts = [when(a.get("at")), status]
    if a.get("duration_ms") is not None:
        parts.append(f"{a['duration_ms']} ms")
    if a.get("error"):
        parts.append(str(a["error"]))
    return escape(" · ".join(parts) + (" (before replay)" if before else ""))
