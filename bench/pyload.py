"""Fallback load generator with wrk's shape, for machines without wrk.

A closed loop: `--connections` keep-alive connections, each sending the next request as
soon as the previous answer arrived, unique `X-GitHub-Delivery` per request, for
`--duration` seconds. Prints one `BENCH_RESULT {json}` line like bench/wrk_github.lua.
It is slower than wrk, so on one core it may saturate before the server does; the report
says which generator was used.

    python -m bench.pyload --url http://127.0.0.1:8080/webhooks/github --duration 15

With `--template FILE --token T` it sends what bench/wrk_alertmanager.lua sends instead: the
template with every `@ID@` replaced by a per-request id, as a Bearer-token webhook.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import aiohttp

from bench import payload


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted list (0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), round(pct / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


async def run(url: str, connections: int, duration: float, prefix: str, template: bytes | None = None,
              token: str = "") -> dict[str, object]:
    body = payload.body()
    base = payload.headers(body, "")
    if template is not None:
        base = {"Content-Type": "application/json", "User-Agent": "Alertmanager/0.27.0",
                "Authorization": f"Bearer {token}"}
    latencies: list[float] = []
    counts = {"accepted": 0, "other_status": 0, "connect": 0, "read": 0, "timeout": 0}
    timeout = aiohttp.ClientTimeout(total=10)
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started = time.perf_counter()
        deadline = started + duration

        async def loop(conn: int) -> None:
            n = 0
            while time.perf_counter() < deadline:
                n += 1
                delivery = f"{prefix}-c{conn}-{n}"
                if template is None:
                    headers, data = {**base, "X-GitHub-Delivery": delivery}, body
                else:
                    headers, data = base, template.replace(b"@ID@", delivery.encode())
                t0 = time.perf_counter()
                try:
                    async with session.post(url, data=data, headers=headers) as resp:
                        await resp.read()
                        status = resp.status
                except aiohttp.ClientConnectorError:
                    counts["connect"] += 1
                    continue
                except TimeoutError:
                    counts["timeout"] += 1
                    continue
                except aiohttp.ClientError:
                    counts["read"] += 1
                    continue
                latencies.append(time.perf_counter() - t0)
                counts["accepted" if status == 202 else "other_status"] += 1

        await asyncio.gather(*(loop(i) for i in range(connections)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    ms = [x * 1000 for x in latencies]
    return {
        "requests": len(latencies), "duration_s": elapsed, "accepted": counts["accepted"],
        "other_status": counts["other_status"],
        "errors": {"connect": counts["connect"], "read": counts["read"], "write": 0, "timeout": counts["timeout"]},
        "latency_ms": {"p50": percentile(ms, 50), "p90": percentile(ms, 90), "p99": percentile(ms, 99),
                       "max": ms[-1] if ms else 0.0, "mean": sum(ms) / len(ms) if ms else 0.0},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--prefix", default="py")
    parser.add_argument("--template", type=Path, help="body template with @ID@ placeholders (Bearer-token source)")
    parser.add_argument("--token", default="", help="the Bearer token sent with --template")
    args = parser.parse_args()
    template = args.template.read_bytes() if args.template else None
    result = asyncio.run(run(args.url, args.connections, args.duration, args.prefix, template, args.token))
    print("BENCH_RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
