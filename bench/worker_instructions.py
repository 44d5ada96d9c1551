"""CPU instructions per event of the worker process, counted by callgrind: noise-free A/B.

`bench.worker`'s CPU milliseconds per event move by ±5 % from run to run on a shared machine,
which hides any single change worth less than that. This counts instead. The real
`incident-hub worker` runs under valgrind's callgrind, with the built-in rules, against a
fresh Redis and the fake PagerDuty of `bench.worker` (answers 202 at once). A warm-up of
alert webhooks is recorded (`Store.ingest`, in this process: not counted) and drained; the
counters are zeroed; N more are recorded and drained; the counters are dumped.

    python -m bench.worker_instructions [--events 400] [--warmup 100]

Only user-space instructions of the worker count (not Redis's, not the kernel's). arq's
polling is in the count: under valgrind the worker runs about 50 times slower, so it polls more often
per event than it would natively; the same for every run, so compare runs, not the absolute
figure with `bench.worker`. Needs `valgrind`; about 2 min for 400 events.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.inproc import ROUTING_KEY
from bench.instructions import _total, available
from bench.servers import PinnedRedis
from bench.worker import ingest_alerts, start_fake_pagerduty


async def _ingest(redis_url: str, first: int, count: int) -> None:
    from hub.core.settings import load_settings
    from hub.storage.connection import connect
    from hub.storage.event_store import Store

    pool = connect(redis_url)
    store = Store(pool, load_settings(redis_url=redis_url))
    await ingest_alerts(store, range(first, first + count), "ir")
    await pool.aclose()


async def _done(redis_url: str) -> int:
    from hub.storage.connection import connect
    from hub.storage.event_store import state_idx

    pool = connect(redis_url)
    try:
        return int(await pool.zcard(state_idx("done")))
    finally:
        await pool.aclose()


def _drain(redis_url: str, expected: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (done := asyncio.run(_done(redis_url))) < expected:
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{done} of {expected} events done after {timeout:g}s")
        time.sleep(0.5)


def measure(events: int, warmup: int, timeout: float) -> dict[str, object]:
    fake, pd_url = start_fake_pagerduty()
    with tempfile.TemporaryDirectory(prefix="bench-ir-worker-") as tmp:
        work = Path(tmp)
        redis = PinnedRedis(work / "redis", []).start()
        out = work / "callgrind.out"
        env = {**os.environ, "REDIS_URL": redis.url, "HUB_LOG_LEVEL": "WARNING", "PAGERDUTY_RATE_LIMIT": "0",
               "PAGERDUTY_ROUTING_KEY": ROUTING_KEY, "PAGERDUTY_EVENTS_URL": pd_url + "/v2/enqueue",
               "HUB_WORKER_CONCURRENCY": "20", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        env.pop("HUB_CONFIG", None)  # the built-in rules, as bench.worker
        log = open(work / "worker.log", "ab")
        proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no",
                                 sys.executable, "-m", "hub", "worker"],
                                env=env, cwd=work, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        try:
            asyncio.run(_ingest(redis.url, 0, warmup))
            _drain(redis.url, warmup, proc, timeout)
            subprocess.run(["callgrind_control", "-z", str(proc.pid)], capture_output=True, check=True)
            asyncio.run(_ingest(redis.url, warmup, events))
            _drain(redis.url, warmup + events, proc, timeout)
            subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True, check=True)
            dumps = sorted(work.glob("callgrind.out.*"), key=lambda p: p.stat().st_mtime)
            if not dumps:
                raise RuntimeError("callgrind wrote no dump")
            paged = json.loads(urllib.request.urlopen(pd_url + "/stats", timeout=5).read())["events"]
            return {"events": events, "instructions_per_event": round(_total(dumps[-1]) / events),
                    "pagerduty_triggers": paged, "expected_triggers": warmup + events}
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
            redis.stop()
            fake.terminate()
            fake.join(5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for each drain")
    args = parser.parse_args(argv)
    why = available()
    if why:
        print(f"bench.worker_instructions: {why}", file=sys.stderr)
        return 2
    started = time.monotonic()
    r = measure(args.events, args.warmup, args.timeout)
    ok = r["pagerduty_triggers"] == r["expected_triggers"]
    print(f"worker {int(r['instructions_per_event']) / 1e6:7.3f} M instructions/event over {args.events} events "
          f"(PagerDuty triggers {r['pagerduty_triggers']}/{r['expected_triggers']} {'ok' if ok else 'MISMATCH'}, "
          f"{time.monotonic() - started:.0f} s)", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
