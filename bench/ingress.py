"""`make bench`: incident-hub's ingress against a bare aiohttp + arq receiver, same load.

For each round and side (order alternates: B H, H B, …): a fresh Redis (AOF on, as in
production), the server on its own CPU, a warm-up, then a measured closed-loop run of
unique signed GitHub deliveries. After each run the bench checks that every 202 the server
counted is really in Redis (record + queued job), and reads the Redis round trips and
commands per request from INFO deltas. Results go to stdout and bench/results/.

    python -m bench.ingress [--duration 15] [--rounds 2] [--connections 32] [--loadgen auto|wrk|python]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from statistics import median
from typing import Any

import redis as sync_redis

from bench import instructions, payload
from bench.load import LoadResult, choose_generator, run_load, wrk_version
from bench.redis_stats import per_request, snapshot
from bench.servers import PinnedRedis, start_server, stored

RESULTS = Path(__file__).resolve().parent / "results"
SIDES = ("baseline", "hub")
#: Issue 16: at least 1.5x the naive receiver's throughput, at most its p99.
TARGET_RPS_RATIO = 1.5
TARGET_P99_RATIO = 1.0
SETTLE_S = 1.0


def pinning() -> tuple[list[str], list[str], str]:
    """(server prefix, load + Redis prefix, description): server on CPU 0, the rest on CPU 1."""
    cpus = os.sched_getaffinity(0)
    if shutil.which("taskset") and {0, 1} <= cpus:
        return ["taskset", "-c", "0"], ["taskset", "-c", "1"], "server on CPU 0; load generator and Redis on CPU 1"
    return [], [], "not pinned (taskset or a second CPU missing)"


def measure(side: str, rnd: int, args: argparse.Namespace, generator: str, wrk: str | None,
            pins: tuple[list[str], list[str]]) -> dict[str, Any]:
    server_pin, load_pin = pins
    run_id = f"{side}-r{rnd}-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix=f"bench-{side}-") as tmp:
        work = Path(tmp)
        redis = PinnedRedis(work / "redis", load_pin, tuple(args.redis_arg)).start()
        client = sync_redis.Redis.from_url(redis.url)
        server = None
        try:
            server = start_server(side, redis.url, server_pin, work)
            if args.warmup:
                run_load(generator, server.url, connections=args.connections, duration=args.warmup,
                         prefix=f"{run_id}-warm", pin=load_pin, wrk=wrk)
                time.sleep(SETTLE_S)
            counts0 = server.counts()
            snap0 = snapshot(client)
            cpu0 = server.cpu()
            load = run_load(generator, server.url, connections=args.connections, duration=args.duration,
                            prefix=run_id, pin=load_pin, wrk=wrk)
            time.sleep(SETTLE_S)
            cpu1 = server.cpu()
            snap1 = snapshot(client)
            counts1 = server.counts()
            accepted = counts1["accepted"] - counts0["accepted"]
            window = load.duration_s or args.duration
            user, system = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]

            def per_req(seconds: float) -> float:
                return round(seconds / max(accepted, 1) * 1e6, 1)

            in_redis = stored(side, client)
            return {
                "side": side, "round": rnd, "loadavg_1m": round(os.getloadavg()[0], 2), "load": load.as_dict(),
                "server": {"accepted": accepted, "duplicate": counts1["duplicate"] - counts0["duplicate"],
                           "accepted_total": counts1["accepted"], "cpu_us_per_request": per_req(user + system),
                           "cpu_user_us_per_request": per_req(user), "cpu_sys_us_per_request": per_req(system)},
                "redis": per_request(snap0, snap1, accepted),
                # which core was the bottleneck: the server's, or the one wrk and Redis share
                "cpu_busy": {"server_core": round((user + system) / window, 2),
                             "load_and_redis_core": round((load.cpu_s + snap1.cpu_s - snap0.cpu_s) / window, 2)},
                "stored": in_redis,
                "checks": checks(side, load, accepted, counts1, in_redis, args.connections),
            }
        finally:
            if server:
                server.stop()
            client.close()
            redis.stop()


def checks(side: str, load: LoadResult, accepted: int, counts: dict[str, int], in_redis: dict[str, int],
           connections: int) -> dict[str, bool]:
    """The honesty checks: a 202 means stored and queued, and the client saw what the server did."""
    total = counts["accepted"]
    result = {
        # every 202 the server answered (warm-up included) is a record in Redis with a queued job
        "every_202_recorded": in_redis["events"] == total,
        "every_202_queued": in_redis["queued"] == total and in_redis["jobs"] == total,
        "no_duplicates": counts["duplicate"] == 0,
        # the load generator's 202s: all counted by the server; at most one in flight per connection unseen
        "client_202s_match_server": load.accepted <= accepted <= load.accepted + connections,
        "no_errors": load.other_status == 0 and not any(load.errors.values()),
    }
    if side == "hub":
        result["every_202_indexed"] = in_redis["indexed"] == total
    return result


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for side in SIDES:
        mine = [r for r in runs if r["side"] == side]
        out[side] = {
            "rps": round(median(r["load"]["rps"] for r in mine), 1),
            "p50_ms": round(median(r["load"]["latency_ms"]["p50"] for r in mine), 3),
            "p99_ms": round(median(r["load"]["latency_ms"]["p99"] for r in mine), 3),
            "cpu_us_per_request": round(median(r["server"]["cpu_us_per_request"] for r in mine), 1),
            "cpu_user_us_per_request": round(median(r["server"]["cpu_user_us_per_request"] for r in mine), 1),
            "cpu_sys_us_per_request": round(median(r["server"]["cpu_sys_us_per_request"] for r in mine), 1),
            "redis_round_trips": mine[-1]["redis"]["round_trips"],
            "redis_commands": mine[-1]["redis"]["commands"],
            "redis_cpu_us": round(median(r["redis"]["redis_cpu_us"] for r in mine), 1),
            "redis_calls": mine[-1]["redis"]["calls"],
        }
    b, h = out["baseline"], out["hub"]
    out["ratios"] = {
        "rps": round(h["rps"] / b["rps"], 3) if b["rps"] else None,
        "p50": round(h["p50_ms"] / b["p50_ms"], 3) if b["p50_ms"] else None,
        "p99": round(h["p99_ms"] / b["p99_ms"], 3) if b["p99_ms"] else None,
        "cpu_per_request": round(h["cpu_us_per_request"] / b["cpu_us_per_request"], 3)
        if b["cpu_us_per_request"] else None,
    }
    out["targets"] = {
        f"hub rps >= {TARGET_RPS_RATIO}x baseline": (out["ratios"]["rps"] or 0) >= TARGET_RPS_RATIO,
        f"hub p99 <= {TARGET_P99_RATIO}x baseline": (out["ratios"]["p99"] or 99) <= TARGET_P99_RATIO,
    }
    return out


def print_report(meta: dict[str, Any], runs: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    p = print
    p(f"\nload generator: {meta['generator']}  ({meta['connections']} connections, {meta['duration_s']} s measured "
      f"after {meta['warmup_s']} s warm-up, {meta['rounds']} round(s), order {' '.join(meta['order'])})")
    p(f"body: {meta.get('body_bytes')} bytes; pinning: {meta['pinning']}; load average before: "
      f"{meta['loadavg_before']}")
    p(f"{'side':<9}{'round':>6}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'202s':>9}{'stored/acked':>15}"
      f"{'cpu µs/req':>12}{'busy 0/1':>10}{'load 1m':>9}{'checks':>8}")
    for r in runs:
        ok = "ok" if all(r["checks"].values()) else "FAIL"
        p(f"{r['side']:<9}{r['round']:>6}{r['load']['rps']:>10.0f}{r['load']['latency_ms']['p50']:>9.2f}"
          f"{r['load']['latency_ms']['p99']:>9.2f}{r['server']['accepted']:>9}"
          f"{str(r['stored']['events']) + '/' + str(r['server']['accepted_total']):>15}"
          f"{r['server']['cpu_us_per_request']:>12.0f}"
          f"{'{:.2f}/{:.2f}'.format(r['cpu_busy']['server_core'], r['cpu_busy']['load_and_redis_core']):>10}"
          f"{r['loadavg_1m']:>9.2f}{ok:>8}")
    p("")
    for side in SIDES:
        s = summary[side]
        p(f"{side:<9} median: {s['rps']:.0f} req/s, p50 {s['p50_ms']:.2f} ms, p99 {s['p99_ms']:.2f} ms, "
          f"server CPU {s['cpu_us_per_request']:.0f} µs/req (user {s['cpu_user_us_per_request']:.0f}, "
          f"sys {s['cpu_sys_us_per_request']:.0f}); Redis {s['redis_round_trips']:.2f} round trips, "
          f"{s['redis_commands']:.2f} commands, {s['redis_cpu_us']:.0f} µs CPU per request")
        calls = ", ".join(f"{k} {v:g}" for k, v in s["redis_calls"].items())
        p(f"{'':<9} commands per request: {calls}")
    r = summary["ratios"]
    p(f"\nhub / baseline: throughput {r['rps']}x, p50 {r['p50']}x, p99 {r['p99']}x, "
      f"server CPU per request {r['cpu_per_request']}x")
    for name, ok in summary["targets"].items():
        p(f"  target {name}: {'met' if ok else 'NOT met'}")
    if "instructions" in summary:
        ir = summary["instructions"]
        p(f"callgrind, user-space instructions per request: baseline {ir['baseline'] / 1e3:.0f} k, "
          f"hub {ir['hub'] / 1e3:.0f} k ({ir['ratio']}x)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=15, help="measured seconds per run (default 15)")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up seconds before each run (default 3)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds; each runs both sides, order alternating (default 3)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--no-install", action="store_true", help="never apt-get install wrk")
    parser.add_argument("--instructions", action="store_true",
                        help="also count instructions per request under callgrind (bench/instructions.py, ~3 min)")
    parser.add_argument("--out", type=Path, default=None,
                        help="result file (default bench/results/ingress-<date>.json)")
    parser.add_argument("--body", choices=payload.SIZES, default=os.environ.get("BENCH_BODY") or "10k",
                        help="the GitHub delivery sent: 10k (as GitHub sent the fixture) or 2k (bench/payload.py)")
    parser.add_argument("--redis-arg", action="append", default=[], metavar="ARG",
                        help="an extra redis-server argument for both sides, repeatable (e.g. "
                             "--redis-arg=--auto-aof-rewrite-percentage --redis-arg=0: no AOF rewrite "
                             "in the window)")
    args = parser.parse_args(argv)
    os.environ["BENCH_BODY"] = args.body  # the load generators and bench.instructions read it

    chosen = choose_generator(args.loadgen, install=not args.no_install)
    if chosen is None:
        return 2
    wrk, how = chosen
    generator = "wrk" if wrk else "python"
    gen_desc = f"{wrk_version(wrk)} ({how})" if wrk else f"Python aiohttp closed loop (bench/pyload.py; wrk: {how})"
    server_pin, load_pin, pin_desc = pinning()
    order = [side for rnd in range(args.rounds) for side in (SIDES if rnd % 2 == 0 else SIDES[::-1])]
    meta: dict[str, Any] = {
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "generator": gen_desc,
        "connections": args.connections, "duration_s": args.duration, "warmup_s": args.warmup,
        "rounds": args.rounds, "order": [s[0].upper() for s in order], "pinning": pin_desc,
        "loadavg_before": " ".join(f"{x:.2f}" for x in os.getloadavg()), "cpus": os.cpu_count(),
        "python": platform.python_version(), "redis_args": args.redis_arg, "commit": _commit(),
        "body_bytes": len(payload.body()),
    }
    runs = []
    for i, side in enumerate(order):
        rnd = i // 2 + 1
        print(f"bench: round {rnd}, {side}: {args.warmup} s warm-up + {args.duration} s ...", file=sys.stderr,
              flush=True)
        runs.append(measure(side, rnd, args, generator, wrk, (server_pin, load_pin)))
    meta["loadavg_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    summary = summarise(runs)
    if args.instructions:
        why = instructions.available()
        if why:
            print(f"bench: skipping --instructions: {why}", file=sys.stderr)
        else:
            print("bench: counting instructions per request under callgrind ...", file=sys.stderr, flush=True)
            counted = {side: instructions.measure(side, 1500) for side in SIDES}
            ir = {side: int(str(c["instructions_per_request"])) for side, c in counted.items()}
            summary["instructions"] = {**ir, "ratio": round(ir["hub"] / ir["baseline"], 3), "runs": counted}
    print_report(meta, runs, summary)
    out = args.out or RESULTS / f"ingress-{dt.datetime.now().strftime('%Y-%m-%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "summary": summary, "runs": runs}, indent=2) + "\n")
    print(f"\nresults written to {out}")
    failed = [f"{r['side']} round {r['round']}: {k}" for r in runs for k, ok in r["checks"].items() if not ok]
    if failed:
        print("bench: honesty checks FAILED: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parent).stdout.strip()
    except OSError:
        return ""


if __name__ == "__main__":
    sys.exit(main())
