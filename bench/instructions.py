"""CPU instructions per request, counted by valgrind's callgrind: a noise-free comparison.

Requests per second on a shared 2-core machine move by ±20 % with whatever else runs;
instruction counts do not (the same run twice agrees within a fraction of a percent). Each
server runs under callgrind; after a warm-up the counters are zeroed, N unique signed
deliveries are sent, and the counters are dumped. Only user-space instructions count: the
kernel's share (syscalls per Redis round trip, which favours the hub's single round trip) is
not in these numbers. Needs `valgrind` (Debian package); about 1.5 min per side.

    python -m bench.instructions [--requests 1500] [--sides baseline,hub]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import redis as sync_redis

from bench import payload
from bench.servers import PinnedRedis, Server, free_port, stored

WARMUP_REQUESTS = 300
CONCURRENCY = 8


def available() -> str | None:
    """Why callgrind cannot run here, or None when it can."""
    missing = [t for t in ("valgrind", "callgrind_control") if not shutil.which(t)]
    return f"{', '.join(missing)} not found (apt-get install valgrind)" if missing else None


async def send(url: str, count: int, prefix: str) -> dict[int, int]:
    """`count` unique deliveries over CONCURRENCY connections; status code → how many."""
    body = payload.body()
    base = payload.headers(body, "")
    statuses: dict[int, int] = {}
    numbers = iter(range(count))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
        async def loop() -> None:
            for i in numbers:
                headers = {**base, "X-GitHub-Delivery": f"{prefix}-{i}"}
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1

        await asyncio.gather(*(loop() for _ in range(CONCURRENCY)))
    return statuses


def _total(path: Path) -> int:
    m = re.search(r"^(?:summary|totals):\s+(\d+)", path.read_text(errors="replace"), re.M)
    if not m:
        raise RuntimeError(f"no instruction total in {path}")
    return int(m.group(1))


def measure(side: str, requests: int) -> dict[str, object]:
    """Instructions per request for one side, with the stored-event check."""
    with tempfile.TemporaryDirectory(prefix=f"bench-ir-{side}-") as tmp:
        work = Path(tmp)
        redis = PinnedRedis(work / "redis", []).start()
        port = free_port()
        env = {**os.environ, "REDIS_URL": redis.url, "GITHUB_WEBHOOK_SECRET": payload.SECRET,
               "HUB_LOG_LEVEL": "WARNING", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        cmd = ([sys.executable, "-m", "bench.baseline_app", "--port", str(port), "--redis-url", redis.url]
               if side == "baseline" else [sys.executable, "-m", "hub", "serve", "--host", "127.0.0.1",
                                           "--port", str(port)])
        out = work / "callgrind.out"
        valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no"]
        log = open(work / f"{side}.log", "ab")
        proc = subprocess.Popen([*valgrind, *cmd], env=env, cwd=work, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        server = Server(side, proc, port)
        try:
            server.wait_ready(timeout=300)
            asyncio.run(send(server.url, WARMUP_REQUESTS, f"ir-{side}-warm"))
            subprocess.run(["callgrind_control", "-z", str(proc.pid)], capture_output=True, check=True)
            statuses = asyncio.run(send(server.url, requests, f"ir-{side}"))
            subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True, check=True)
            dumps = sorted(work.glob("callgrind.out.*"), key=lambda p: p.stat().st_mtime)
            if not dumps:
                raise RuntimeError("callgrind wrote no dump")
            client = sync_redis.Redis.from_url(redis.url)
            in_redis = stored(side, client)
            client.close()
            return {"side": side, "requests": requests, "statuses": statuses,
                    "instructions_per_request": round(_total(dumps[-1]) / requests),
                    "stored_events": in_redis["events"], "expected_events": WARMUP_REQUESTS + requests}
        finally:
            server.stop()
            redis.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--sides", default="baseline,hub")
    args = parser.parse_args(argv)
    why = available()
    if why:
        print(f"bench.instructions: {why}", file=sys.stderr)
        return 2
    results = []
    for side in args.sides.split(","):
        started = time.monotonic()
        r = measure(side, args.requests)
        results.append(r)
        ok = r["stored_events"] == r["expected_events"] and r["statuses"] == {202: args.requests}
        print(f"{side:<9} {r['instructions_per_request'] / 1e3:9.1f} k instructions/request  "
              f"(202s {r['statuses']}, stored {r['stored_events']}/{r['expected_events']} "
              f"{'ok' if ok else 'MISMATCH'}, {time.monotonic() - started:.0f} s)", flush=True)
    by_side = {r["side"]: r["instructions_per_request"] for r in results}
    if "baseline" in by_side and "hub" in by_side:
        print(f"hub / baseline: {by_side['hub'] / by_side['baseline']:.3f}x instructions per request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
