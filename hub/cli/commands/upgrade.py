"""`incident-hub upgrade`: bring data written by an older version to the current key layout.

Workers do this themselves when they start (`hub.storage.upgrade.ensure`); the command is for doing
it ahead of time, or to see what it renamed. Safe to run more than once.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("upgrade", help="rename Redis keys of an older layout (workers also do it at start)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(fn=run)


def run(args: argparse.Namespace) -> int:
    from hub.cli.common import print_json, with_store
    from hub.storage import upgrade
    from hub.storage.event_store import Store

    async def go(store: Store) -> dict[str, int] | None:
        return await upgrade.ensure(store.redis)

    counts = with_store(go)
    if args.json:
        print_json({"version": upgrade.VERSION, "renamed": counts})
    elif counts is None:
        print(f"key layout {upgrade.VERSION}: already up to date")
    else:
        done = ", ".join(f"{n} {kind}" for kind, n in counts.items())
        print(f"key layout {upgrade.VERSION}: renamed {done}")
    return 0
