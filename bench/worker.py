"""Worker throughput: events/s through one worker process to a fake PagerDuty, against arq's ceiling.

Run by hand (not part of the test suite):

    .venv/bin/python -m bench.worker [--events 2000] [--rounds 3] [--concurrency 20] [--redis-stats]
                                     [--poll-delay S] [--loop uvloop|asyncio]

One run starts a fresh embedded Redis (`hub.storage.embedded_redis.EmbeddedRedis`, AOF as in
production) and a fake PagerDuty Events API in a child process that answers 202 at once.
Then, alternating, in this one process:

- **ceiling**: arq runs N no-op jobs with the hub's own worker options (concurrency, poll
  delay, JSON serialisation, no results kept): what arq itself can do on this Redis;
- **hub**: N Alertmanager webhooks (one firing alert each, distinct fingerprints, severity
  `error` = SEV2) are recorded with the ingress's own one-round-trip `Store.ingest`, then
  the real worker (`hub.worker.app.make_worker`, the built-in rules) drains them: parse, normalise,
  rules, incident state, one PagerDuty trigger per event through the ActionRunner, records.

Ingest time is not counted; each side is timed from worker start to an empty queue. The
run checks that every event ended `done` and that the fake received one trigger per event.
`PAGERDUTY_RATE_LIMIT=0` for the run: the client-side limit (120/min by default) would
otherwise be what is measured. `--redis-stats` adds, per event, Redis round trips
(`total_reads_processed`), commands and Redis CPU over the hub run (arq's own polling
included), and which commands. Results go to stdout and `bench/results/worker-*.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.inproc import ROUTING_KEY
from hub.core import heap

#: Worker CPU per job of the last run of each side (ms): a side near its wall-clock time per
#: job is CPU-bound; one well below it is bound by arq's polling (see the README).
CPU_MS: dict[str, float] = {}
#: `--poll-delay`: arq's poll delay for every side (None: the hub worker's own, 0.1 s).
POLL_DELAY: float | None = None
RESULTS = Path(__file__).parent / "results"


# -- the fake PagerDuty, in its own process so it does not share the worker's CPU time ---------

def _serve_pagerduty(port: int, ready: Any) -> None:
    from aiohttp import web

    count = 0

    async def enqueue(request: web.Request) -> web.Response:
        nonlocal count
        body = await request.json()
        count += 1
        return web.json_response({"status": "success", "message": "Event processed",
                                  "dedup_key": body.get("dedup_key")}, status=202)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response({"events": count})

    async def reset(request: web.Request) -> web.Response:
        nonlocal count
        count = 0
        return web.json_response({"events": 0})

    app = web.Application()
    app.router.add_post("/v2/enqueue", enqueue)
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
    ready.set()
    web.run_app(app, host="127.0.0.1", port=port, print=None, handle_signals=True, access_log=None)


# -- workload -------------------------------------------------------------------------------------

def start_fake_pagerduty() -> tuple[Any, str]:
    """The fake PagerDuty in a child process of its own, running: (the process, its base URL)."""
    from hub.storage.embedded_redis import free_port

    port = free_port()
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    fake = ctx.Process(target=_serve_pagerduty, args=(port, ready), daemon=True)
    fake.start()
    ready.wait(10)
    time.sleep(0.3)
    return fake, f"http://127.0.0.1:{port}"


def alert_body(i: int, run: str) -> bytes:
    """One Alertmanager webhook with one firing alert, unique per event."""
    fingerprint = f"{run}{i:08x}"
    labels = {"alertname": f"BenchAlert{i}", "namespace": "bench", "pod": f"api-{i}", "severity": "error"}
    alert = {"status": "firing", "labels": labels,
             "annotations": {"summary": f"bench alert {i}", "description": "synthetic load"},
             "startsAt": "2024-06-17T08:12:41.512Z", "endsAt": "0001-01-01T00:00:00Z",
             "generatorURL": "http://prometheus:9090/graph", "fingerprint": fingerprint}
    body = {"receiver": "hub", "status": "firing", "alerts": [alert], "groupLabels": {"alertname": labels["alertname"]},
            "commonLabels": labels, "commonAnnotations": alert["annotations"], "externalURL": "http://am:9093",
            "version": "4", "groupKey": f'{{}}:{{alertname="{labels["alertname"]}"}}', "truncatedAlerts": 0}
    return json.dumps(body, separators=(",", ":")).encode()


async def ingest_alerts(store: Any, numbers: range, run: str) -> None:
    """Record `alert_body(i, run)` for each i as the ingress would (`Store.ingest`, one round trip each)."""
    for i in numbers:
        await store.ingest("alertmanager", f"{run}-{i}", alert_body(i, run), {"User-Agent": "Alertmanager/0.27.0"},
                           "application/json", "bench")


async def _noop(ctx: dict[str, Any], *args: Any) -> None:
    return None


async def _arq_side(redis_url: str, n: int, concurrency: int, job: Any, side: str,
                    prepare: Any = None) -> float:
    """N jobs of `job` through an arq Worker with the hub worker's options: jobs/s.

    Its CPU per job goes to CPU_MS[side]; `prepare(pool, i)` sets up what job i reads.
    """
    from arq import Worker, func

    from hub.core.settings import load_settings
    from hub.storage.connection import connect
    from hub.worker.app import worker_options

    settings = load_settings(redis_url=redis_url, hub_worker_concurrency=concurrency)
    pool = connect(redis_url)
    await pool.flushall()
    opts = worker_options(settings)
    keep = {k: opts[k] for k in ("job_serializer", "job_deserializer", "max_jobs", "job_timeout", "keep_result",
                                 "poll_delay")}
    if POLL_DELAY is not None:
        keep["poll_delay"] = POLL_DELAY
    worker = Worker(functions=[func(job, name=side, keep_result=0)], redis_pool=pool, burst=True,
                    handle_signals=False, **keep)
    for i in range(n):
        await pool.enqueue_job(side, i, _job_id=f"{side}-{i}")
        if prepare is not None:
            await prepare(pool, i)
    heap.settle()  # as `incident-hub worker` does once it has started (hub.core.heap)
    started = time.perf_counter()
    cpu_started = time.process_time()
    await worker.async_run()
    elapsed = time.perf_counter() - started
    CPU_MS[side] = round((time.process_time() - cpu_started) / n * 1000, 3)
    done = worker.jobs_complete
    await worker.close()
    if done != n:
        raise RuntimeError(f"{side} run completed {done} of {n} jobs")
    return n / elapsed


async def ceiling(redis_url: str, n: int, concurrency: int) -> float:
    """arq's own rate for no-op jobs, with the hub worker's options."""
    return await _arq_side(redis_url, n, concurrency, _noop, "noop")


async def http_floor(redis_url: str, pd_url: str, n: int, concurrency: int, durable: bool = False) -> float:
    """arq jobs that each make one bare aiohttp POST to the fake PagerDuty and nothing else.

    The floor of any connector path: no parsing, rules, records or retries, just the queue
    plus the one outside call every event needs. The hub cannot beat this side.

    `durable`: each job also reads its event (HGETALL) before the call and records the
    outcome (HSET) after it: the least any worker that keeps a result per event must do.
    """
    import aiohttp

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))
    url = pd_url + "/v2/enqueue"

    async def post(ctx: dict[str, Any], i: int) -> None:
        if durable:
            await ctx["redis"].hgetall(f"floor:{i}")
        body = {"routing_key": ROUTING_KEY, "event_action": "trigger", "dedup_key": f"floor-{i}",
                "payload": {"summary": f"bench alert {i}", "source": "bench", "severity": "error"}}
        async with session.post(url, json=body) as resp:
            await resp.read()
            if resp.status != 202:
                raise RuntimeError(f"fake PagerDuty answered {resp.status}")
        if durable:
            await ctx["redis"].hset(f"floor:{i}", mapping={"state": "done", "status": resp.status})

    async def record(pool: Any, i: int) -> None:
        await pool.hset(f"floor:{i}", mapping={"state": "accepted", "body": "x" * 700})

    try:
        return await _arq_side(redis_url, n, concurrency, post, "durable" if durable else "post",
                               record if durable else None)
    finally:
        await session.close()


async def hub_rate(redis_url: str, pd_url: str, n: int, concurrency: int, run: str, redis_stats: bool = False
                   ) -> tuple[float, dict[str, Any]]:
    """The real worker draining N alert events, each paging the fake PagerDuty once."""
    import urllib.request

    from hub.core.settings import load_settings
    from hub.rules import DEFAULTS_PATH
    from hub.storage.connection import connect
    from hub.storage.event_store import Store, state_idx
    from hub.worker.app import make_worker

    settings = load_settings(redis_url=redis_url, hub_worker_concurrency=concurrency, hub_config=DEFAULTS_PATH,
                             pagerduty_routing_key=ROUTING_KEY, pagerduty_events_url=pd_url + "/v2/enqueue")
    pool = connect(redis_url)
    await pool.flushall()
    urllib.request.urlopen(urllib.request.Request(pd_url + "/reset", method="POST"), timeout=5).read()
    store = Store(pool, settings)
    await ingest_alerts(store, range(n), run)
    # the worker's own client, as `incident-hub worker` builds it (its lane included)
    worker = make_worker(settings, burst=True, handle_signals=False)
    if POLL_DELAY is not None:
        worker.poll_delay_s = POLL_DELAY
    stats_client = before = None
    if redis_stats:
        import redis as sync_redis

        from bench.redis_stats import snapshot

        stats_client = sync_redis.Redis.from_url(redis_url)
        before = snapshot(stats_client)
    heap.settle()
    started = time.perf_counter()
    cpu_started = time.process_time()
    await worker.async_run()
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    await worker.close()
    redis_cost = None
    if stats_client is not None and before is not None:
        from bench.redis_stats import per_request, snapshot

        redis_cost = per_request(before, snapshot(stats_client), n)
        stats_client.close()
    states = {s: int(await pool.zcard(state_idx(s))) for s in ("accepted", "processing", "done", "partially_failed",
                                                               "dead")}
    await pool.aclose()
    paged = json.loads(urllib.request.urlopen(pd_url + "/stats", timeout=5).read())["events"]
    check: dict[str, Any] = {"states": states, "pagerduty_triggers": paged,
                             "worker_cpu_ms_per_event": round(cpu / n * 1000, 3)}
    if redis_cost is not None:
        check["redis_per_event"] = redis_cost
    if states["done"] != n or paged != n:
        raise RuntimeError(f"hub run did not do the work: {check}")
    return n / elapsed, check


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=20, help="HUB_WORKER_CONCURRENCY (arq max_jobs)")
    parser.add_argument("--redis-stats", action="store_true",
                        help="also report Redis round trips, commands and CPU per event (INFO deltas)")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop",
                        help="the event loop of every side (default uvloop: what `incident-hub worker` runs on)")
    parser.add_argument("--poll-delay", type=float, default=None,
                        help="arq's poll delay for every side (default: the hub worker's, 0.1 s)")
    args = parser.parse_args(argv)
    global POLL_DELAY
    POLL_DELAY = args.poll_delay

    from hub.core.loop import install
    from hub.storage.embedded_redis import EmbeddedRedis

    loop = install(args.loop)
    print(f"event loop: {loop}", flush=True)

    os.environ["PAGERDUTY_RATE_LIMIT"] = "0"
    fake, pd_url = start_fake_pagerduty()
    with tempfile.TemporaryDirectory(prefix="bench-worker-") as tmp:
        redis = EmbeddedRedis(Path(tmp), appendonly=True).start()
        try:
            ceilings, floors, durables, rates, checks = [], [], [], [], []
            for r in range(args.rounds):
                ceilings.append(asyncio.run(ceiling(redis.url, args.events, args.concurrency)))
                floors.append(asyncio.run(http_floor(redis.url, pd_url, args.events, args.concurrency)))
                durables.append(asyncio.run(http_floor(redis.url, pd_url, args.events, args.concurrency,
                                                       durable=True)))
                rate, check = asyncio.run(hub_rate(redis.url, pd_url, args.events, args.concurrency, f"r{r}",
                                                   args.redis_stats))
                rates.append(rate)
                checks.append(check)
                print(f"round {r + 1}: arq no-op {ceilings[-1]:5.0f}/s   + bare POST {floors[-1]:5.0f}/s "
                      f"({floors[-1] / ceilings[-1]:.2f})   + read, POST, write {durables[-1]:5.0f}/s "
                      f"({durables[-1] / ceilings[-1]:.2f})   hub {rate:5.0f} events/s   "
                      f"ratio {rate / ceilings[-1]:.2f}", flush=True)
                print(f"  worker CPU per job: no-op {CPU_MS['noop']:.2f} ms, bare POST {CPU_MS['post']:.2f} ms, "
                      f"read, POST, write {CPU_MS['durable']:.2f} ms, hub {check['worker_cpu_ms_per_event']:.2f} ms",
                      flush=True)
                check["cpu_ms_per_job"] = dict(CPU_MS)
                if "redis_per_event" in check:
                    cost = check["redis_per_event"]
                    top = sorted(cost["calls"].items(), key=lambda kv: -kv[1])[:14]
                    print(f"  redis per event: {cost['round_trips']} round trips, {cost['commands']} commands, "
                          f"{cost['redis_cpu_us']} µs CPU; " + ", ".join(f"{k} {v:g}" for k, v in top), flush=True)
        finally:
            redis.stop()
            fake.terminate()
            fake.join(5)
    result = {"events": args.events, "rounds": args.rounds, "concurrency": args.concurrency, "loop": loop,
              "poll_delay": args.poll_delay,
              "python": sys.version.split()[0], "cpus": os.cpu_count(),
              "arq_noop_jobs_per_s": [round(c) for c in ceilings],
              "arq_bare_post_jobs_per_s": [round(f) for f in floors],
              "arq_read_post_write_jobs_per_s": [round(d) for d in durables],
              "hub_events_per_s": [round(r) for r in rates],
              "median_ratio": round(statistics.median(r / c for r, c in zip(rates, ceilings, strict=True)), 3),
              "checks": checks[-1]}
    result["median_floor_ratio"] = round(statistics.median(f / c for f, c in zip(floors, ceilings, strict=True)), 3)
    result["median_hub_to_floor"] = round(statistics.median(r / f for r, f in zip(rates, floors, strict=True)), 3)
    result["median_durable_ratio"] = round(statistics.median(d / c for d, c in zip(durables, ceilings,
                                                                                  strict=True)), 3)
    print(f"median: arq no-op {statistics.median(ceilings):.0f} jobs/s, arq + bare POST "
          f"{statistics.median(floors):.0f} jobs/s ({result['median_floor_ratio']:.2f} of no-op), + read, POST, "
          f"write {statistics.median(durables):.0f} jobs/s ({result['median_durable_ratio']:.2f}), hub "
          f"{statistics.median(rates):.0f} events/s: ratio {result['median_ratio']:.2f} of no-op (issue 16: ≥ 0.50), "
          f"{result['median_hub_to_floor']:.2f} of bare POST")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"worker-{time.strftime('%Y-%m-%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
