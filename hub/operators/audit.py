"""The operators' audit log: who did what to which event, when — kept in Redis, capped.

Every admin action (replay, bulk replay, purge), from the API or the CLI, appends one entry
to a Redis stream, so a 3 a.m. "who replayed this?" has an answer. Entries never carry
secrets: `who` is the token's *name* (``HUB_ADMIN_TOKEN=alice:…``) or ``cli:<user>``.
"""

from __future__ import annotations

import getpass
import json
import re
from typing import Any

from redis.asyncio import Redis

from hub.operators.queries import QueryError
from hub.storage.event_store import PREFIX, now_ms

AUDIT = PREFIX + "audit"
#: Approximate cap on entries kept (XADD MAXLEN ~): months of operator actions.
MAX_ENTRIES = 50_000
_STREAM_ID = re.compile(r"\d{1,20}(-\d{1,20})?")


def _stream_id(value: str) -> bool:
    """A stream id Redis accepts as an exclusive end: two parts that fit 64 bits, not 0-0."""
    if not _STREAM_ID.fullmatch(value):
        return False
    ms, _, seq = value.partition("-")
    parts = (int(ms), int(seq or 0))
    return all(p < 2**64 for p in parts) and parts != (0, 0)


def cli_actor() -> str:
    """`who` for commands run from a shell: the local user name."""
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no passwd entry (containers): still say it came from the CLI
        return "cli"


async def record(redis: Redis, who: str, action: str, target: str, **detail: Any) -> str:
    """Append one entry; returns its stream id."""
    fields = {"at": now_ms(), "who": who, "action": action, "target": target,
              "detail": json.dumps(detail, separators=(",", ":"), default=str)}
    entry_id = await redis.xadd(AUDIT, fields, maxlen=MAX_ENTRIES, approximate=True)
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


async def recent(redis: Redis, limit: int = 100, before: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
    """Newest first; `before` is the previous page's cursor (a stream id, exclusive)."""
    if before and not _stream_id(before):  # Redis would refuse it: bad input, not a server error
        raise QueryError(f"not an audit cursor: {before[:40]!r} (pass the next_cursor of the previous page)")
    top = f"({before}" if before else "+"
    rows = await redis.xrevrange(AUDIT, max=top, min="-", count=limit)
    out = []
    for entry_id, raw in rows:
        f = {k.decode(): v.decode("utf-8", "replace") for k, v in raw.items()}
        out.append({"id": entry_id.decode(), "at": int(f.get("at", 0)), "who": f.get("who", ""),
                    "action": f.get("action", ""), "target": f.get("target", ""),
                    "detail": json.loads(f.get("detail") or "{}")})
    next_cursor = out[-1]["id"] if len(out) == limit else None
    return out, next_cursor
