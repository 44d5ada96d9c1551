"""`incident-hub report [--days 30] [--by severity|service]`: MTTA, MTTR, incident counts."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rich.markup import escape
from rich.table import Table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="MTTA, MTTR (mean, median), incidents per day by severity or service")
    p.add_argument("--days", type=float, default=30, help="the window, in days before now (default 30)")
    p.add_argument("--by", choices=("severity", "service"), default="severity", help="how to group (default severity)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(fn=run)


def _canonical() -> Any:
    """The catalog's alias folding (`checkout` → `checkout-api`), or None when the rules do not load."""
    from hub.core.settings import SettingsError, load_settings
    from hub.rules import RulesError, load_rules

    try:
        return load_rules(load_settings().rules_path()).canonical_services
    except (RulesError, SettingsError) as e:
        print(f"incident-hub report: service names are not folded into catalog names: {e}", file=sys.stderr)
        return None


def run(args: argparse.Namespace) -> int:
    from hub.cli.common import console, print_json, with_store
    from hub.operators.report import build_report, human_duration

    if args.days <= 0:
        print("incident-hub report: --days must be positive")
        return 2
    canonical = _canonical()
    report: dict[str, Any] = with_store(lambda store: build_report(store.redis, args.days, args.by,
                                                                   canonical=canonical))
    if args.json:
        print_json(report)
        return 0
    out = console()
    table = Table(title=f"incidents in the last {args.days:g} days, by {args.by}", title_justify="left",
                  show_edge=False)
    for col, just in ((args.by, "left"), ("incidents", "right"), ("alerts", "right"), ("per day", "right"),
                      ("MTTA mean", "right"), ("MTTA median", "right"), ("MTTR mean", "right"),
                      ("MTTR median", "right"),
                      ("unacked", "right"), ("unresolved", "right")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]

    def row(name: str, b: dict[str, Any], style: str = "") -> None:
        table.add_row(escape(name), str(b["incidents"]), str(b["alerts"]), f"{b['per_day']:g}",
                      human_duration(b["mtta"]["mean_s"]), human_duration(b["mtta"]["median_s"]),
                      human_duration(b["mttr"]["mean_s"]), human_duration(b["mttr"]["median_s"]),
                      str(b["incidents"] - b["acknowledged"]), str(b["incidents"] - b["resolved"]), style=style)

    for g in report["groups"]:
        row(g["key"], g)
    row("all", report, style="bold")
    out.print(table)
    f = report["followups"]
    if f["rate"] is None:
        out.print("follow-ups: none seen in this window")
    else:
        out.print(f"follow-ups: {f['completed']} of {f['total']} completed ({f['rate'] * 100:.0f}%)")
    return 0
