"""The arq worker: runs `process_event` jobs, the sweeper, and a heartbeat for /readyz.

Jobs carry only the event id (the payload lives in the record) and are serialised as JSON,
never pickle. A job's id is the event id, so an event is in the queue at most once. A large
alert group is worked in `process_chunk` jobs, id `{event id}:chunk:{k}` (`hub.worker.chunks`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from typing import Any

import aiohttp
from arq import Retry, Worker, cron, func
from arq.connections import ArqRedis
from redis import exceptions as redis_errors

from connectors.base import Connector
from hub.core import heap, metrics, strict_json
from hub.core.interactions import ESCALATE_JOB
from hub.core.registry import connector_classes
from hub.core.settings import Settings
from hub.operators.replay import replay_event
from hub.rules import Rules, RulesError, load_rules
from hub.storage import upgrade
from hub.storage.connection import REDIS_UNAVAILABLE, connect, json_dumps, json_loads
from hub.storage.event_store import PROCESS_JOB, Store, now_ms
from hub.storage.incidents import IncidentStore
from hub.storage.ratelimit import RateLimiter
from hub.worker import turns
from hub.worker.actions import ActionRunner
from hub.worker.chunks import CHUNK_JOB
from hub.worker.flapping import FlapReleases
from hub.worker.heartbeats import CHECK_EVERY_S
from hub.worker.interactions import escalate_now
from hub.worker.job_claim import ClaimingWorker
from hub.worker.processor import Processor
from hub.worker.self_heartbeat import self_heartbeat
from hub.worker.storm import StormSummaries
from hub.worker.timers import TIMER_JOB, run_timer

log = logging.getLogger("hub.worker.app")
HEARTBEAT_S = 5.0
SHUTDOWN_WAIT_S = 20
RESTART_MIN_S = 0.5
RESTART_MAX_S = 10.0
#: Lane connections beyond one per concurrent job: the sweeper and heartbeat jobs.
LANE_SPARE = 4


class LiveRules:
    """The rules a worker process plans with: loaded at start, replaced on SIGHUP.

    One per process, handed to each Worker the supervisor builds (a restart keeps the rules
    a SIGHUP loaded); the current Processor is told when they change."""

    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        self.processor: Processor | None = None

    def replace(self, rules: Rules) -> None:
        self.rules = rules
        if self.processor is not None:
            self.processor.rules = rules


def build_connectors(settings: Settings, http: aiohttp.ClientSession, redis: ArqRedis) -> dict[str, Connector]:
    return {name: cls(settings, http, redis) for name, cls in connector_classes().items()}


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx["settings"]
    redis: ArqRedis = ctx["redis"]
    await upgrade.ensure(redis)  # data of an older key layout is renamed before any job runs
    store = Store(redis, settings)
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100, limit_per_host=20),
                                 headers={"User-Agent": "incident-hub/0.1"}, json_serialize=strict_json.dumps_body)
    connectors = build_connectors(settings, http, redis)
    runner = ActionRunner(store, connectors, RateLimiter(redis, settings.rate_limits))
    live: LiveRules | None = ctx.get("live")
    if live is None:
        live = ctx["live"] = LiveRules(load_worker_rules(settings))
    processor = Processor(store, live.rules, runner, settings.hub_max_event_runs,
                          lock_lease=settings.hub_job_timeout + 5, **fan_out_limits(settings, connectors, runner))
    live.processor = processor
    ctx.update(store=store, http=http, connectors=connectors, processor=processor)
    worker_id = f"{socket.gethostname()}:{os.getpid()}"  # one per process: a restarted Worker reuses it
    ctx["worker_id"] = worker_id
    ctx["heartbeat"] = asyncio.create_task(_heartbeat(store, worker_id))


async def _heartbeat(store: Store, worker_id: str) -> None:
    while True:
        with contextlib.suppress(Exception):  # Redis away: /readyz will say so; keep trying
            await store.heartbeat(worker_id)
        await asyncio.sleep(HEARTBEAT_S)


async def shutdown(ctx: dict[str, Any]) -> None:
    """Idempotent: also called by the supervisor when arq could not run it (Redis gone)."""
    task = ctx.pop("heartbeat", None)
    if task:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        store, worker_id = ctx.get("store"), ctx.get("worker_id")
        if store is not None and worker_id:  # not counted by /readyz once stopped (Redis away: it lapses)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await store.forget_worker(worker_id)
    http = ctx.pop("http", None)
    if http:
        await http.close()


def fan_out_limits(settings: Settings, connectors: dict[str, Connector], runner: ActionRunner) -> dict[str, Any]:
    """The Processor's chunking limits, and its time budget per run: the job timeout less the
    longest one step can take (an attempt, and the inline waits for a lock and a rate-limit
    token) and the wait in line for a busy incident before the run (`hub.worker.turns`), so a
    run stops between steps before arq would cancel it mid-call."""
    longest = (max((c.attempt_timeout for c in connectors.values()), default=30.0) + 2 * runner.inline_wait
               + turns.MAX_WAIT_S + 5)
    return {"max_per_job": settings.hub_max_alerts_per_job, "max_per_event": settings.hub_max_alerts_per_event,
            "budget": max(settings.hub_job_timeout / 4, settings.hub_job_timeout - longest)}


async def process_event(ctx: dict[str, Any], event_id: str, force: bool = False) -> None:
    delay = await ctx["processor"].process(event_id, force=force)
    if delay is not None:
        raise Retry(defer=delay)


async def process_chunk(ctx: dict[str, Any], event_id: str, index: int, force: bool = False) -> None:
    """Chunk `index` of a large alert group (`hub.worker.chunks`)."""
    delay = await ctx["processor"].process(event_id, force=force, chunk=index)
    if delay is not None:
        raise Retry(defer=delay)


async def sweep(ctx: dict[str, Any]) -> int:
    """Re-enqueue events stuck before a final state (lost enqueue, killed worker, restart)."""
    store: Store = ctx["store"]
    settings: Settings = ctx["settings"]
    redis: ArqRedis = ctx["redis"]
    requeued = 0
    for event_id in await store.stuck(now_ms() - int(settings.hub_sweep_grace * 1000)):
        job = await redis.enqueue_job(PROCESS_JOB, event_id, _job_id=event_id)
        if job is not None:
            requeued += 1
            metrics.SWEPT.inc()
            await store.add_timeline(event_id, {"type": "requeued", "by": "sweeper"})
        await store.touch(event_id)
    await store.trim_indexes()
    await release_held(ctx)
    await release_flapping(ctx)
    await send_storm_summaries(ctx)
    return requeued


async def send_storm_summaries(ctx: dict[str, Any]) -> int:
    """One summary per storming incident per summary_interval (`hub.worker.storm`); at start too,
    so a restart in the middle of a storm still summarises."""
    store: Store = ctx["store"]
    processor: Processor = ctx["processor"]
    summaries = StormSummaries(store, IncidentStore(store.redis, store.retention), lambda: processor.rules)
    return await summaries.send_due()


async def release_held(ctx: dict[str, Any]) -> int:
    """Alerts a maintenance window held back and whose window has ended: evaluated again
    (`hub.worker.quiet`); at start too, so a window that ended while no worker ran is seen."""
    store: Store = ctx["store"]
    processor: Processor = ctx["processor"]

    async def again(event_id: str) -> None:
        await replay_event(store, event_id, by="maintenance", record_audit=False)

    return await processor.quiet.release_due(again)


async def release_flapping(ctx: dict[str, Any]) -> int:
    """Held resolves of flapping alerts that stayed resolved for the window: resolved now
    (`hub.worker.flapping`); at start too, so a restart in the middle still releases them."""
    store: Store = ctx["store"]

    async def again(event_id: str) -> None:
        await replay_event(store, event_id, by="flapping", record_audit=False)

    releases = FlapReleases(store.redis, IncidentStore(store.redis, store.retention))
    return await releases.release_due(again)


async def check_heartbeats(ctx: dict[str, Any]) -> int:
    """Heartbeats silent for interval + grace become `heartbeat.missed` events (`hub.worker.heartbeats`)."""
    processor: Processor = ctx["processor"]
    beats = processor.quiet.heartbeats
    return await beats.check() if beats is not None else 0


def load_worker_rules(settings: Settings) -> Rules:
    """The rules file for this worker (HUB_CONFIG, ./hub.yaml or the defaults); RulesError if invalid."""
    return load_rules(settings.rules_path())


def reload_rules(settings: Settings, live: LiveRules) -> bool:
    """SIGHUP: load the rules file again; keep the previous rules (and log why) if it is invalid."""
    try:
        rules = load_worker_rules(settings)
    except RulesError as e:
        log.error("rules not reloaded, keeping the previous ones: %s is invalid:\n%s", e.source, e.report())
        return False
    live.replace(rules)
    log.info("rules reloaded from %s (%d workflows)", rules.source, len(rules.config.workflows))
    return True


def watch_sighup(settings: Settings, live: LiveRules) -> None:
    """Reload the rules on SIGHUP (on the running loop)."""
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload_rules, settings, live)


def worker_options(settings: Settings, live: LiveRules | None = None) -> dict[str, Any]:
    """The arq Worker keyword arguments for these settings."""
    return {
        "functions": [func(process_event, name=PROCESS_JOB, max_tries=10_000,  # our own limits apply
                           timeout=settings.hub_job_timeout, keep_result=0),
                      func(process_chunk, name=CHUNK_JOB, max_tries=10_000, timeout=settings.hub_job_timeout,
                           keep_result=0),
                      # a fired timer's result is kept so the same timer id is never queued again
                      func(escalate_now, name=ESCALATE_JOB, max_tries=5, timeout=settings.hub_job_timeout,
                           keep_result=0),
                      func(run_timer, name=TIMER_JOB, max_tries=1_000_000, timeout=settings.hub_job_timeout,
                           keep_result=settings.hub_retention)],
        "cron_jobs": [cron(sweep, second={5, 35}, run_at_startup=True,
                                timeout=settings.hub_job_timeout, keep_result=0),
                      cron(check_heartbeats, second=set(range(0, 60, CHECK_EVERY_S)), run_at_startup=True,
                           timeout=settings.hub_job_timeout, keep_result=0),
                      cron(self_heartbeat, second={30}, keep_result=0,
                           # never longer than the job timeout: arq leases every job for the longest
                           # function timeout + 10 s, so a longer one here delays crash recovery
                           timeout=min(30.0, settings.hub_job_timeout))],
        "on_startup": startup,
        "on_shutdown": shutdown,
        "job_serializer": json_dumps,
        "job_deserializer": json_loads,
        "max_jobs": settings.hub_worker_concurrency,
        "job_timeout": settings.hub_job_timeout,
        "keep_result": 0,
        "poll_delay": 0.1,
        "job_completion_wait": SHUTDOWN_WAIT_S,
        "ctx": {"settings": settings, "live": live},
    }


def make_worker(settings: Settings, redis: ArqRedis | None = None, live: LiveRules | None = None,
                **overrides: Any) -> Worker:
    """An arq Worker; the rules are loaded here (RulesError: refuse to start) unless `live` holds them."""
    live = live if live is not None else LiveRules(load_worker_rules(settings))
    # the scripts and reads of every event's run on connections of their own (hub.storage.lane):
    # one per job that can run at once, and a few for the cron jobs
    pool = redis or connect(settings.redis_url or "redis://127.0.0.1:6379/0", socket_timeout=10,
                            lane=settings.hub_worker_concurrency + LANE_SPARE)
    return ClaimingWorker(redis_pool=pool, **{**worker_options(settings, live), **overrides})


async def close_worker(worker: Worker) -> None:
    """`Worker.close`, also when it raises the CancelledError of the jobs it has just cancelled.

    arq's close cancels the running jobs, then gathers them: the first cancelled one ends
    the gather, skipping its shutdown hook and leaving the Redis pool open.
    """
    try:
        await worker.close()
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # we are being cancelled ourselves
        await asyncio.gather(*worker.tasks.values(), return_exceptions=True)
        worker.tasks.clear()
        await worker.close()


async def supervise(settings: Settings) -> None:
    """Run arq workers until SIGINT/SIGTERM; a lost Redis restarts the worker, not the process.

    arq's worker exits when Redis is unreachable (its poll loop raises). Behind a Sentinel
    failover or a Redis restart that would leave the hub with no workers, so each loss
    builds a fresh Worker (fresh counters, connections and HTTP session) after a backoff.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    current: Worker | None = None

    def on_signal(sig: signal.Signals) -> None:
        stop.set()
        if current is not None:
            current.handle_sig_wait_for_completion(sig)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    live = LiveRules(load_worker_rules(settings))  # invalid: RulesError, no start
    watch_sighup(settings, live)
    heap.settle()  # modules, catalog and rules are loaded (hub.core.heap)
    delay = RESTART_MIN_S
    while not stop.is_set():
        current = make_worker(settings, handle_signals=False, live=live)
        started = loop.time()
        try:
            await current.async_run()
        except asyncio.CancelledError:
            if not stop.is_set():
                raise
        except (*REDIS_UNAVAILABLE, redis_errors.OutOfMemoryError) as e:
            # OutOfMemoryError: Redis at maxmemory (noeviction) refuses arq's own writes; like an
            # outage it passes once the operator makes room, so wait and start again, not exit.
            log.warning("Redis unavailable (%s: %s); restarting the worker in %.1fs", type(e).__name__, e, delay)
        except redis_errors.WatchError as e:
            # redis-py turns a connection lost while arq WATCHes its queue into a WatchError
            # (arq only catches the real-conflict case at EXEC): an outage in disguise.
            log.warning("Redis connection lost inside a transaction (%s); restarting the worker in %.1fs", e, delay)
        except Exception:
            # Anything else from arq's poll loop would end the process and leave the queue with
            # no consumer; a worker that restarts (and says why, loudly) is what on-call wants.
            log.exception("worker stopped unexpectedly; restarting it in %.1fs", delay)
        finally:
            with contextlib.suppress(Exception):
                await close_worker(current)
            await shutdown(current.ctx)
        if stop.is_set():
            break
        if loop.time() - started > 60:
            delay = RESTART_MIN_S
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        delay = min(delay * 2, RESTART_MAX_S)


def run_worker(settings: Settings) -> None:
    try:
        asyncio.run(supervise(settings))
    except RulesError as e:
        raise SystemExit(f"incident-hub: not starting: the rules file is invalid:\n{e.report()}") from None
