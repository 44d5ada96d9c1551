"""What the operator commands (events, dead-letters, replay, purge, report) share.

They talk to Redis directly, so they work while the web process is down: settings from the
environment, REDIS_URL resolved like `serve`/`worker` do (embedded Redis when unset), one
client per command, closed on the way out.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from rich.console import Console, ConsoleOptions, RenderableType
from rich.segment import Segment

from hub.core.escape import terminal
from hub.core.settings import Settings, SettingsError, load_settings
from hub.core.strict_json import dumps_indented
from hub.storage.event_store import Store

T = TypeVar("T")


class SafeConsole(Console):
    """A Console whose text never carries control characters of its own.

    Stored text (titles, errors, responses) comes from payloads and outside systems: an ESC
    sequence in it could rewrite the screen or the clipboard (OSC 52). Every text segment is
    passed through hub.escape.terminal here, in one place; the styles rich adds itself are
    applied after. (Rich markup in stored text is escaped where it is printed.)
    """

    def render(self, renderable: RenderableType, options: ConsoleOptions | None = None) -> Any:
        for seg in super().render(renderable, options):
            yield seg if seg.control else Segment(terminal(seg.text), seg.style)


def console() -> Console:
    """Rich output on stdout; plain (no colour codes) when stdout is not a terminal."""
    return SafeConsole(highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 160)


def settings_or_exit() -> Settings:
    try:
        settings = load_settings()
    except SettingsError as e:
        print(f"incident-hub: bad configuration: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    from hub.cli.main import with_redis

    return with_redis(settings)


def with_store(fn: Callable[[Store], Awaitable[T]]) -> T:
    """Run `fn(store)` on a fresh event loop with a Redis client for this process's settings."""
    settings = settings_or_exit()

    async def main() -> T:
        from hub.storage.connection import connect

        redis = connect(settings.redis_url or "redis://127.0.0.1:6379/0")
        try:
            return await fn(Store(redis, settings))
        finally:
            await redis.aclose()

    return asyncio.run(main())


def print_json(obj: Any) -> None:
    """Indented strict JSON (a payload's NaN as null, as records are written), so jq reads it."""
    print(dumps_indented(obj))


def when(ms: int | None) -> str:
    if not ms:
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


STATE_STYLE = {"done": "green", "succeeded": "green", "partially_failed": "yellow", "retrying": "yellow",
               "skipped": "yellow", "dead": "red", "accepted": "blue", "processing": "blue", "pending": "blue"}


def styled(state: str | None) -> str:
    s = state or ""
    style = STATE_STYLE.get(s)
    return f"[{style}]{s}[/{style}]" if style else s


def settings_and_rules(path: Any, invalid_code: int = 2) -> tuple[Settings, Any] | int:
    """The settings and the rules of `path` (else the configured rules file), or the exit code
    after saying on stderr what is wrong (planning commands: simulate, test)."""
    from hub.rules import RulesError, load_file
    from hub.rules.engine import Rules

    try:
        settings = load_settings()
        return settings, Rules(load_file(path if path else settings.rules_path()))
    except SettingsError as e:
        print(f"incident-hub: bad configuration: {e}", file=sys.stderr)
        return 2
    except RulesError as e:
        print(f"the rules file is invalid (see `incident-hub validate`):\n{e.report()}", file=sys.stderr)
        return invalid_code
