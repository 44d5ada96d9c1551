"""`incident-hub rules diff OLD NEW`: what a rules change would do to the traffic recorded in Redis."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

EPILOG = """\
Every event recorded in the window (oldest first) is planned against both rule sets, each over
its own in-memory world, as the worker would plan it (nothing is sent). Printed per event that
changes: actions added (+), removed (-) or changed in their parameters (~, secrets masked), and
each alert's incident (opens / joins), suppression by a window and deferral. Then a summary
table. Redis is only read (no script, no write), the window a page at a time.
See docs/rules.md, "Reviewing a rules change against recorded traffic".

exit status: 0 done (with --exit-code: no event changed); 1 with --exit-code, some event changed,
or Redis could not be read; 2 a rules file, --since/--until or --limit could not be used
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rules", help="rules: diff two rule sets against the traffic recorded in Redis")
    verbs = p.add_subparsers(dest="verb", required=True)
    d = verbs.add_parser("diff", help="plan the recorded events against OLD and NEW rules; print what changes",
                         description="Plan the events recorded in Redis in a window against two rules files\n"
                                     "(read-only, nothing sent) and print what the change would do.",
                         epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    d.add_argument("old", type=Path, metavar="OLD.yaml", help="the rules in force")
    d.add_argument("new", type=Path, metavar="NEW.yaml", help="the proposed rules")
    d.add_argument("--since", default="7d", help="window start: an age (1h, 7d), epoch seconds or ISO 8601 "
                                                "(default 7d)")
    d.add_argument("--until", help="window end, as --since (default: now)")
    d.add_argument("--limit", type=int, default=None, metavar="N",
                   help="plan at most the newest N events of the window (default 10000)")
    d.add_argument("--json", action="store_true", help="machine-readable output")
    d.add_argument("--exit-code", action="store_true", help="exit 1 when an event changed (for CI)")
    d.add_argument("--configured-from-env", action="store_true",
                   help="treat only the connectors whose settings are set here as configured (default: all)")
    d.set_defaults(fn=run_diff)


def _fail(text: str) -> int:
    from hub.core.escape import terminal

    print(terminal(f"incident-hub rules diff: {text}"), file=sys.stderr)
    return 2


def run_diff(args: argparse.Namespace) -> int:
    from hub.core.registry import connector_classes
    from hub.core.settings import SettingsError, load_settings
    from hub.operators.queries import QueryError, parse_time
    from hub.operators.rules_diff import DEFAULT_LIMIT
    from hub.rules import RulesError, load_file
    from hub.rules.engine import Rules, configured_connectors
    from hub.storage.event_store import now_ms

    rules: list[Any] = []
    for path in (args.old, args.new):
        try:
            rules.append(Rules(load_file(path)))
        except RulesError as e:
            errors = [p for p in e.problems if p.severity == "error"]
            first = errors[0].format(str(path)).splitlines()[0] if errors else f"{path}: invalid rules"
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            return _fail(f"{first}{more}; see `incident-hub validate`")
    now = now_ms()
    try:
        since = parse_time(args.since, now)
        until = parse_time(args.until, now) if args.until else now
    except QueryError as e:
        return _fail(f"bad --since/--until: {e}")
    if since > until:
        return _fail("--since is after --until")
    limit = DEFAULT_LIMIT if args.limit is None else args.limit
    if limit < 1:
        return _fail("--limit must be at least 1")
    try:
        settings = load_settings()
    except SettingsError as e:
        return _fail(f"bad configuration: {e}")
    configured = configured_connectors(settings) if args.configured_from_env else set(connector_classes())
    from hub.cli.main import with_redis

    settings = with_redis(settings)
    return asyncio.run(_diff(args, settings, rules[0], rules[1], configured, since, until, limit))


async def _diff(args: argparse.Namespace, settings: Any, old: Any, new: Any, configured: set[str],
                since: int, until: int, limit: int) -> int:
    from hub.cli.common import print_json
    from hub.core.escape import terminal
    from hub.operators.rules_diff import EventDiff, diff_recorded, window_size
    from hub.storage.connection import REDIS_UNAVAILABLE, connect

    redis = connect(settings.redis_url or "redis://127.0.0.1:6379/0")
    changes: list[dict[str, Any]] = []

    def on_event(d: EventDiff) -> None:
        if args.json:
            changes.append(d.as_dict())
        else:
            print_event(d)

    progress = None
    try:
        recorded = await window_size(redis, since, until)
        total = min(recorded, limit)
        if not args.json:
            print(terminal(f"rules diff: {old.source} → {new.source}"))
            print(f"window: {_when(since)} … {_when(until)} ({recorded} events recorded"
                  + (f", the newest {limit} planned" if recorded > limit else "") + ")")
        progress = _progress(total)
        summary = await diff_recorded(redis, old, new, configured, since, until, limit, on_event,
                                      progress.update if progress else None)
    except REDIS_UNAVAILABLE as e:
        return _redis_failed(e)
    except Exception as e:
        from redis.exceptions import RedisError

        if isinstance(e, RedisError):  # e.g. NOAUTH, a wrong db: a clear line, never a traceback
            return _redis_failed(e)
        raise
    finally:
        if progress is not None:
            progress.close()
        await redis.aclose()
    if args.json:
        print_json({"old": old.source, "new": new.source, "since": _when(since), "until": _when(until),
                    "limit": limit, **summary.as_dict(), "changes": changes})
    else:
        print_summary(summary)
    return 1 if args.exit_code and summary.changed else 0


def _redis_failed(e: BaseException) -> int:
    from hub.core.escape import terminal

    print(terminal(f"incident-hub rules diff: cannot read Redis (REDIS_URL): {type(e).__name__}: {e}"),
          file=sys.stderr)
    return 1


def _when(ms: int) -> str:
    from hub.cli.common import when

    return when(ms) or "1970-01-01 00:00:00Z"


def _progress(total: int) -> _Bar | None:
    """A progress bar on stderr, only when stderr is a terminal (none in logs or pipes)."""
    return _Bar(total) if total > 0 and sys.stderr.isatty() else None


class _Bar:
    def __init__(self, total: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        self._bar = Progress("planning events", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                             console=Console(stderr=True), transient=True)
        self._task = self._bar.add_task("events", total=total)
        self._bar.start()

    def update(self, done: int) -> None:
        self._bar.update(self._task, completed=done)

    def close(self) -> None:
        self._bar.stop()


def print_event(d: Any) -> None:
    from hub.cli.common import when
    from hub.core.escape import terminal

    services = f" [{d.services}]" if d.services else ""
    title = f" {d.title!r}" if d.title else ""
    lines = [f"{d.id}  {when(d.received_at)}  {d.source}{title}{services}"]
    if d.error:
        lines.append(f"  ! old: {d.error['old'] or 'planned'}; new: {d.error['new'] or 'planned'}")
    for sign, rows in (("-", d.removed), ("+", d.added)):
        for a in rows:
            params = " ".join(f"{k}={v}" for k, v in a["params"].items() if k in KEY_PARAMS)
            lines.append(f"  {sign} {a['action']} [{a['workflow']}/{a['step']}]" + (f" {params}" if params else ""))
    for c in d.changed:
        lines.append(f"  ~ {c['action']} [{c['workflow']}/{c['step']}]")
        for p in c["changes"]:
            lines.append(f"      {p['param']}: {p['old']} → {p['new']}")
    for g in d.grouping:
        what = "deferred" if g["event"] is None else f"{g['kind']} {g['fingerprint']}"
        lines.append(f"  ~ {what}: {g['old']} → {g['new']}")
    print(terminal("\n".join(lines)))


#: Parameters shown on an added or removed action's line (the rest are in --json).
KEY_PARAMS = ("routing_key", "severity", "priority", "dedup_key", "channel", "project", "responders", "team")


def print_summary(summary: Any) -> None:
    from rich.table import Table

    from hub.cli.common import console

    print()
    print(f"{summary.read} events read, {summary.changed} changed"
          + (f", {summary.errors} could not be planned by one rule set or both" if summary.errors else "")
          + (f", {summary.grouping} grouping or suppression changes" if summary.grouping else ""))
    if summary.limit_reached:
        print("--limit reached: older events of the window were not planned (raise --limit or narrow --since)")
    if not summary.actions:
        print("no action added, removed or changed")
        return
    table = Table(show_edge=False, pad_edge=False)
    for col in ("action", "added", "removed", "changed"):
        table.add_column(col, justify="left" if col == "action" else "right")
    for name, n in sorted(summary.actions.items()):
        table.add_row(name, str(n["added"]), str(n["removed"]), str(n["changed"]))
    console().print(table)
