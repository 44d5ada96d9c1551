"""Redis-side cost per request, from INFO deltas around a measured run.

`total_reads_processed` counts the read events Redis served. A client waiting for each
answer sends one batch per round trip (a pipeline or MULTI…EXEC is one batch), so reads
per request ≈ round trips per request. `commandstats` shows what those round trips did;
commands run inside a Lua script are counted there too, each under its own name.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis as sync_redis


@dataclass
class RedisSnapshot:
    reads: int
    commands: int
    cpu_s: float
    calls: dict[str, int]


def snapshot(client: sync_redis.Redis) -> RedisSnapshot:
    stats = client.info("stats")
    cpu = client.info("cpu")
    calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in client.info("commandstats").items()}
    return RedisSnapshot(reads=int(stats["total_reads_processed"]), commands=int(stats["total_commands_processed"]),
                         cpu_s=float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]), calls=calls)


def per_request(before: RedisSnapshot, after: RedisSnapshot, requests: int) -> dict[str, object]:
    """Deltas divided by the number of requests the server accepted in between."""
    n = max(requests, 1)
    # The snapshot itself (three INFO calls) runs between the two readings; leave it out.
    ignore = {"info"}
    calls = {k: round((after.calls.get(k, 0) - before.calls.get(k, 0)) / n, 3) for k in sorted(after.calls)
             if k not in ignore}
    calls = {k: v for k, v in calls.items() if v > 0}  # drop the odd PING/CLIENT of a new connection
    return {
        "round_trips": round((after.reads - before.reads - 3) / n, 3),
        "commands": round((after.commands - before.commands - 3) / n, 3),
        "redis_cpu_us": round((after.cpu_s - before.cpu_s) / n * 1e6, 1),
        "calls": calls,
    }
