"""The event loop the hub's processes run on: uvloop when it is installed (the default
install, the Docker image and the benchmarks have it), else asyncio's own.

uvloop's transports and scheduler cost fewer instructions per request and per Redis round
trip than asyncio's; nothing in the hub depends on which loop runs. `HUB_EVENT_LOOP=asyncio`
chooses the standard loop, e.g. to rule the loop out when debugging.
"""

from __future__ import annotations

import asyncio
import os

CHOICES = ("uvloop", "asyncio")


def install(choice: str | None = None) -> str:
    """Make new event loops of the chosen kind; returns the kind actually in use."""
    choice = (choice or os.environ.get("HUB_EVENT_LOOP") or "uvloop").strip().lower()
    if choice not in CHOICES:
        raise SystemExit(f"incident-hub: HUB_EVENT_LOOP must be one of {', '.join(CHOICES)}, not {choice!r}")
    if choice == "asyncio":
        return "asyncio"
    try:
        import uvloop
    except ImportError:  # an install without it (e.g. Windows): the standard loop works the same
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"
