"""`incident-hub incidents list|show`: open and recent incidents, and one with its alerts, from Redis."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rich.markup import escape
from rich.table import Table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("incidents", help="list incidents or show one with its alerts (reads Redis directly)")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="list|show")

    lp = verbs.add_parser("list", help="incidents, newest declared first, with alert counts and page state")
    lp.add_argument("--state", help="open or resolved (default: both)")
    lp.add_argument("--since", help="declared within this age (1h, 7d) or after this time")
    lp.add_argument("--limit", type=int, default=50, help="page size (default 50, max 500)")
    lp.add_argument("--cursor", help="continue from a previous page's next_cursor")
    lp.add_argument("--json", action="store_true", help="machine-readable output")
    lp.set_defaults(fn=run_list)

    sp = verbs.add_parser("show", help="one incident: record, alerts, joined alerts, timers, timeline")
    sp.add_argument("key", help="the incident key (as `incidents list` shows it) or an alias (e.g. a page's key)")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.set_defaults(fn=run_show)


def _fail(message: str, code: int = 2) -> int:
    print(f"incident-hub incidents: {message}", file=sys.stderr)
    return code


def run_list(args: argparse.Namespace) -> int:
    from hub.cli.common import console, print_json, when, with_store
    from hub.operators.incidents import parse_state
    from hub.operators.operations import incidents_page
    from hub.operators.queries import QueryError, parse_limit, parse_time

    try:
        state = parse_state(args.state)
        limit = parse_limit(args.limit)
        since = parse_time(args.since) if args.since else None
        page = with_store(lambda store: incidents_page(store, limit, args.cursor, state=state, since=since))
    except QueryError as e:
        return _fail(str(e))
    items: list[dict[str, Any]] = page["incidents"]  # type: ignore[assignment]
    if args.json:
        print_json({"incidents": items, "next_cursor": page["next_cursor"]})
        return 0
    table = Table(show_edge=False, pad_edge=False)
    for col in ("declared", "state", "severity", "title", "service", "alerts", "sources", "page", "key"):
        table.add_column(col, max_width=40 if col == "title" else None, no_wrap=col == "key")
    for i in items:
        table.add_row(when(i["declared_at"]), _state(i), i.get("severity") or "", escape(i.get("title") or ""),
                      escape(", ".join(i.get("services") or [])), str(i["alert_count"]),
                      escape(", ".join(s for s in i.get("sources") or [] if s)), escape(_page(i)), escape(i["key"]))
    out = console()
    out.print(table)
    if not items:
        out.print("no incidents match")
    if page["next_cursor"]:
        out.print(f"more: --cursor {page['next_cursor']}")
    return 0


def _state(i: dict[str, Any]) -> str:
    if i["state"] == "resolved":
        return "[green]resolved[/green]"
    return "[yellow]acknowledged[/yellow]" if i.get("acknowledged_at") else "[red]open[/red]"


def _page(i: dict[str, Any]) -> str:
    if not i.get("page_dedup_key"):
        return ""
    return str(i["page_dedup_key"]) + (f" via {i['paged_by']}" if i.get("paged_by") else "")


def run_show(args: argparse.Namespace) -> int:
    from hub.cli.commands.events import timeline_text
    from hub.cli.common import console, print_json, when, with_store
    from hub.operators.operations import incident

    detail = with_store(lambda store: incident(store, args.key))
    if detail is None:
        return _fail(f"no incident {args.key!r} (incident key or alias; unknown, or expired past HUB_RETENTION)", 1)
    if args.json:
        print_json(detail)
        return 0
    i: dict[str, Any] = detail["incident"]  # type: ignore[assignment]
    out = console()
    out.print(f"[bold]{escape(i['key'])}[/bold]  {_state(i)}  {i.get('severity') or '-'}  "
              f"{escape(i.get('title') or '')}")
    facts = [f"declared {when(i['declared_at'])}", f"episode {i.get('episode')}", f"{i['alert_count']} alert(s)",
             "sources " + ", ".join(s for s in i.get("sources") or [] if s)]
    if i.get("services"):
        facts.append("services " + ", ".join(i["services"]))
    if i.get("acknowledged_at"):
        facts.append(f"acknowledged {when(i['acknowledged_at'])} by {i.get('acknowledged_by')}")
    if i.get("resolved_at"):
        facts.append(f"resolved {when(i['resolved_at'])}")
    if i.get("page_dedup_key"):
        facts.append(f"page {_page(i)}")
    if i.get("group"):
        facts.append(f"group {i['group']}")
    facts += [f"{k} {v}" for k, v in (i.get("linked") or {}).items()]
    out.print(escape("  ·  ".join(facts)))
    if detail["alerts"]:
        table = Table(title="alerts", show_edge=False, pad_edge=False, title_justify="left")
        for col in ("status", "title", "source", "first seen", "last seen", "fingerprint"):
            table.add_column(col, max_width=50 if col == "title" else None)
        for a in detail["alerts"]:  # type: ignore[union-attr]
            table.add_row(escape(str(a.get("status") or "")), escape(a.get("title") or ""),
                          escape(str(a.get("source") or "")), when(a.get("first_seen")), when(a.get("last_seen")),
                          escape(a["fingerprint"]))
        out.print(table)
        if detail["alerts_truncated"]:
            out.print(f"(the first {len(detail['alerts'])} of {detail['alerts_total']} alerts)")  # type: ignore[arg-type]
    if detail["joined"]:
        out.print("[bold]joined[/bold] (alerts of other keys correlated into this incident)")
        for j in detail["joined"]:  # type: ignore[union-attr]
            out.print(f"  {escape(str(j['status']))}  {escape(j['incident'])}")
    if detail["timers"]:
        out.print("[bold]timers[/bold]")
        for t in detail["timers"]:  # type: ignore[union-attr]
            due = when(t.get("due_ms")) if t.get("due_ms") else ""
            out.print(f"  {escape(str(t.get('workflow') or ''))} {escape(str(t.get('step') or ''))}  due {due}  "
                      f"[dim]{escape(t['id'])}[/dim]")
    out.print("[bold]timeline[/bold]" + (f" ({detail['timeline_total']} entries, cut)" if detail["timeline_truncated"]
                                          else ""))
    for t in detail["timeline"]:  # type: ignore[union-attr]
        out.print(f"  {when(t.get('at'))}  {escape(str(t.get('type')))}  {escape(timeline_text(t))}")
    return 0
