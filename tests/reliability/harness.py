"""Real processes for the reliability suite, and readers of what they left behind.

A `Cluster` is one redis-server (AOF, fsync every second), one `incident-hub serve` and N
`incident-hub worker` subprocesses, all configured through their environment exactly as an
operator would. `Upstreams` are the fake outside systems from `tests/fakes/`, on loopback in
the test's own event loop, with *targeted* faults (a fault can hit only the requests to one
path whose body carries a marker) and a record of what each one answered. A `Sender` posts
signed webhooks like a monitoring tool does. The end state is read from the fakes (what the
outside world saw) and from Redis (what the hub recorded), never from the processes' logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from redis import exceptions as redis_errors

from hub.core.settings import Settings
from hub.storage.connection import connect
from hub.storage.embedded_redis import EmbeddedRedis, free_port
from hub.storage.event_store import FINAL_STATES, ev_key
from tests.conftest import GITHUB_SECRET, GRAFANA_SECRET, INCIDENTIO_SECRET
from tests.fakes import incidentio as fake_incidentio
from tests.fakes import jira as fake_jira
from tests.fakes import opsgenie as fake_opsgenie
from tests.fakes import statuspage as fake_statuspage
from tests.fakes.base import Fault, Recorded
from tests.fakes.incidentio import FakeIncidentIO
from tests.fakes.jira import FakeJira
from tests.fakes.opsgenie import FakeOpsGenie
from tests.fakes.pagerduty import FakePagerDuty
from tests.fakes.shielded import ShieldedUpstream
from tests.fakes.slack import FakeSlack

REPO = Path(__file__).resolve().parents[2]
RULES = Path(__file__).parent / "rules"
CONNECTORS = ("SLACK", "PAGERDUTY", "STATUSPAGE", "JIRA", "INCIDENTIO", "OPSGENIE")

# Inbound credentials, shared by the subprocesses' environment and the in-process signer.
DATADOG_TOKEN = "reliability-datadog-token"
ALERTMANAGER_TOKEN = "reliability-alertmanager-token"
PAGERDUTY_SECRET = "reliability-pagerduty-webhook-secret"
ROUTING_KEY = "RELIABILITYROUTINGKEY0123456789AB"
ADMIN_TOKEN = "reliability-admin-token"

SOURCE_ENV = {
    "GITHUB_WEBHOOK_SECRET": GITHUB_SECRET,
    "INCIDENTIO_WEBHOOK_SECRET": INCIDENTIO_SECRET,
    "GRAFANA_WEBHOOK_SECRET": GRAFANA_SECRET,
    "DATADOG_WEBHOOK_TOKEN": DATADOG_TOKEN,
    "ALERTMANAGER_WEBHOOK_TOKEN": ALERTMANAGER_TOKEN,
    "PAGERDUTY_WEBHOOK_SECRET": PAGERDUTY_SECRET,
    "HUB_ADMIN_TOKEN": ADMIN_TOKEN,
}


def signing_settings(**overrides: Any) -> Settings:
    """Settings holding the inbound secrets above, for signing webhooks in the test process."""
    values: dict[str, Any] = {k.lower(): v for k, v in SOURCE_ENV.items()}
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


# -- fake upstreams ---------------------------------------------------------------------------


@dataclass
class FaultRule:
    """Faults for the requests matching a method, a path prefix and (optionally) a body marker."""

    method: str
    path_prefix: str
    faults: deque[Fault]
    marker: bytes | None = None

    def matches(self, method: str, path: str, body: bytes) -> bool:
        return (method == self.method and path.startswith(self.path_prefix)
                and (self.marker is None or self.marker in body))


def fault_kind(fault: Fault) -> str | None:
    """A short name for what a fault does (None: it lets the request through untouched)."""
    if fault.reset:
        return "reset"
    if fault.status:
        return str(fault.status)
    if fault.stall:
        return "stall"
    return None


class Recording:
    """Mixin for a fake upstream: targeted fault rules, a tally of injected faults, and the
    status each request was finally answered with (a stalled request still completes, as the
    shielded fakes model a server that does not notice the client has gone)."""

    rules: list[FaultRule]
    injected: Counter[str]
    answered: list[tuple[str, str, int]]

    #: Seconds every request takes (real APIs answer in 100 to 300 ms; a worker killed then is mid-call).
    latency: float = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rules = []
        self.injected = Counter()
        self.answered = []

    def target(self, method: str, path_prefix: str, faults: Iterable[Fault], marker: str | None = None) -> None:
        self.rules.append(FaultRule(method, path_prefix, deque(faults), marker.encode() if marker else None))

    def _next_fault(self, method: str, path: str, body: bytes) -> Fault | None:
        for rule in self.rules:
            if rule.faults and rule.matches(method, path, body):
                return rule.faults.popleft()
        faults: deque[Fault] = self.faults  # type: ignore[attr-defined]
        return faults.popleft() if faults else None

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.read()
        requests: list[Recorded] = self.requests  # type: ignore[attr-defined]
        requests.append(Recorded(request.method, request.path, dict(request.query), dict(request.headers), body))
        if self.latency:
            await asyncio.sleep(self.latency)
        fault = self._next_fault(request.method, request.path, body)
        if fault is not None:
            kind = fault_kind(fault)
            if kind:
                self.injected[kind] += 1
            answer = await fault.apply(request)
            if answer is not None:
                return answer
        response = await handler(request)
        self.answered.append((request.method, request.path, response.status))
        return response

    @property
    def faults_injected(self) -> int:
        return sum(self.injected.values())


class PagerDuty(Recording, FakePagerDuty):
    pass


class OpsGenie(Recording, FakeOpsGenie):
    pass


class Statuspage(Recording, fake_statuspage.FakeStatuspage):
    pass


class IncidentIO(Recording, FakeIncidentIO):
    pass


class Jira(Recording, FakeJira):
    pass


class Slack(Recording, FakeSlack, ShieldedUpstream):
    """Slack that, like the real one, still posts a message whose sender stopped waiting.

    Slack incoming webhooks have no idempotency key, so `delivered` can show a repeat when
    an answer was lost; the suite reports those rather than hiding them.
    """

    def __init__(self) -> None:
        super().__init__()
        self.delivered: list[str] = []

    async def hook(self, request: web.Request) -> web.Response:
        response = await super().hook(request)
        if response.status == 200:
            self.delivered.append((await request.json()).get("text", ""))
        return response


class Upstreams:
    """Every fake outside system the default workflows call, on loopback."""

    def __init__(self) -> None:
        self.slack, self.pagerduty, self.statuspage = Slack(), PagerDuty(), Statuspage()
        self.jira, self.incidentio, self.opsgenie = Jira(), IncidentIO(), OpsGenie()

    @property
    def all(self) -> dict[str, Any]:
        return {"slack": self.slack, "pagerduty": self.pagerduty, "statuspage": self.statuspage,
                "jira": self.jira, "incidentio": self.incidentio, "opsgenie": self.opsgenie}

    async def start(self) -> Upstreams:
        for fake in self.all.values():
            await fake.start()
        return self

    async def close(self) -> None:
        for fake in self.all.values():
            await fake.close()

    def env(self) -> dict[str, str]:
        """The connector variables that point every connector at its fake, rate limits off."""
        env = {
            "SLACK_WEBHOOK_URL": self.slack.webhook_url,
            "PAGERDUTY_ROUTING_KEY": ROUTING_KEY, "PAGERDUTY_EVENTS_URL": self.pagerduty.events_url,
            "STATUSPAGE_API_KEY": fake_statuspage.API_KEY, "STATUSPAGE_PAGE_ID": fake_statuspage.PAGE_ID,
            "STATUSPAGE_API_URL": self.statuspage.url,
            "JIRA_URL": self.jira.url, "JIRA_EMAIL": fake_jira.EMAIL, "JIRA_API_TOKEN": fake_jira.TOKEN,
            "JIRA_PROJECT": "OPS",
            "INCIDENTIO_API_KEY": fake_incidentio.API_KEY, "INCIDENTIO_API_URL": self.incidentio.url,
            "OPSGENIE_API_KEY": fake_opsgenie.API_KEY, "OPSGENIE_API_URL": self.opsgenie.url,
        }
        env.update({f"{name}_RATE_LIMIT": "0" for name in CONNECTORS})
        return env

    def slow_down(self, seconds: float) -> None:
        """Make every fake take `seconds` to answer."""
        for fake in self.all.values():
            fake.latency = seconds

    def faults_injected(self) -> dict[str, dict[str, int]]:
        return {name: dict(fake.injected) for name, fake in self.all.items() if fake.injected}


def repeats(values: Iterable[Any]) -> dict[Any, int]:
    """Values seen more than once, with their counts (an empty dict means no duplicates)."""
    return {v: n for v, n in Counter(values).items() if n > 1}


# -- processes ------------------------------------------------------------------------------


def rss_kb(pid: int) -> int:
    """Resident set size of a process (VmRSS from /proc), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


@dataclass
class Proc:
    """One hub subprocess, its log file, and how it was started (so it can be started again)."""

    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    log: Path
    popen: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> Proc:
        with open(self.log, "ab") as out:
            out.write(f"--- start {self.starts + 1} at {time.strftime('%H:%M:%S')}\n".encode())
            out.flush()
            self.popen = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdout=out,
                                          stderr=subprocess.STDOUT)
        self.starts += 1
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def rss_kb(self) -> int:
        return rss_kb(self.pid)

    def kill(self) -> None:
        """SIGKILL and reap: no shutdown code runs, as when the machine or the OOM killer takes it."""
        if self.popen is not None:
            if self.popen.poll() is None:
                self.popen.kill()
            self.popen.wait()

    def stop(self, timeout: float = 25.0) -> int | None:
        """SIGTERM (graceful: in-flight jobs finish), SIGKILL after `timeout`."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Cluster:
    """Redis + `incident-hub serve` + N `incident-hub worker`, as subprocesses sharing one env."""

    def __init__(self, base: Path, env: dict[str, str], workers: int = 2, redis_args: tuple[str, ...] = ()) -> None:
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        self.redis = EmbeddedRedis(base / "redis", appendonly=True, extra_args=redis_args)
        self.port = free_port()
        self.env = {**os.environ, **SOURCE_ENV, "HUB_LOG_LEVEL": "WARNING", "HUB_HOST": "127.0.0.1",
                    "HUB_PORT": str(self.port), "HUB_DATA_DIR": str(base / "var"), **env,
                    "REDIS_URL": self.redis.url}
        self.n_workers = workers
        self.web: Proc | None = None
        self.workers: list[Proc] = []
        self._client: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def redis_client(self) -> Any:
        """An ArqRedis client for reading end state (made lazily, on the running loop)."""
        if self._client is None:
            self._client = connect(self.redis.url)
        return self._client

    async def close_client(self) -> None:
        """Drop the test's own Redis client (before Redis goes away; a fresh one is made on next use)."""
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()
            self._client = None

    async def start_redis(self, timeout: float = 30.0) -> None:
        """Start Redis again (same port, same data dir) and wait until it has loaded its AOF."""
        await asyncio.to_thread(self.redis.start)
        await self.close_client()
        deadline = time.monotonic() + timeout
        while True:
            try:
                await self.redis_client.ping()
                return
            except (redis_errors.BusyLoadingError, redis_errors.ConnectionError):
                if time.monotonic() > deadline:
                    raise
                await self.close_client()
                await asyncio.sleep(0.05)

    async def stop_redis(self) -> None:
        """SIGTERM Redis (it writes the AOF out and exits); the test's own client is dropped first."""
        await self.close_client()
        await asyncio.to_thread(self.redis.stop)

    def _proc(self, name: str, *args: str) -> Proc:
        return Proc(name, [sys.executable, "-m", "hub", *args], self.env, self.base, self.base / f"{name}.log")

    async def start(self) -> Cluster:
        self.redis.start()
        self.web = self._proc("web", "serve", "--host", "127.0.0.1", "--port", str(self.port)).start()
        for _ in range(self.n_workers):
            self.start_worker()
        await self.wait_healthy()
        await self.wait_workers(self.n_workers)
        return self

    def start_worker(self) -> Proc:
        """One more worker process."""
        worker = self._proc(f"worker{len(self.workers)}", "worker").start()
        self.workers.append(worker)
        return worker

    async def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while True:
                assert self.web is not None and self.web.alive, f"web exited:\n{self.web and self.web.tail()}"
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with http.get(self.url + "/healthz") as resp:
                        if resp.status == 200:
                            return
                if time.monotonic() > deadline:
                    raise AssertionError(f"web not healthy within {timeout}s:\n{self.web.tail()}")
                await asyncio.sleep(0.1)

    async def wait_workers(self, n: int, timeout: float = 30.0) -> None:
        """Until `n` workers have a fresh heartbeat (each beats as it starts)."""
        deadline = time.monotonic() + timeout
        while True:
            for w in self.workers:
                assert w.alive, f"{w.name} exited:\n{w.tail()}"
            alive = await self.redis_client.zcount("hub:workers", int(time.time() * 1000) - 30_000, "+inf")
            if alive >= n:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{alive} of {n} workers up within {timeout}s")
            await asyncio.sleep(0.1)

    async def worker_beating(self, index: int) -> bool:
        """True once this worker process (this pid) has written its heartbeat, i.e. it is taking jobs."""
        member = f"{socket.gethostname()}:{self.workers[index].pid}"
        return await self.redis_client.zscore("hub:workers", member) is not None

    def kill_worker(self, index: int) -> int:
        """SIGKILL one worker and start it again; returns the killed pid."""
        worker = self.workers[index]
        pid = worker.pid
        worker.kill()
        worker.start()
        return pid

    async def close(self) -> None:
        await self.close_client()
        procs = [*self.workers, *([self.web] if self.web else [])]
        await asyncio.gather(*(asyncio.to_thread(p.stop) for p in procs))
        self.redis.stop()

    def logs(self) -> str:
        parts = [f"== {p.name}\n{p.tail()}" for p in [*([self.web] if self.web else []), *self.workers]]
        return "\n".join(parts)

    async def admin(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        """One call to the admin API with the admin token."""
        async with aiohttp.ClientSession() as http, http.request(
                method, self.url + path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, **kwargs) as resp:
            return resp.status, await resp.json()

    def cli(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """`incident-hub ARGS…` against this cluster's Redis, as an operator would run it."""
        return subprocess.run([sys.executable, "-m", "hub", *args], env=self.env, cwd=self.base, text=True,
                              capture_output=True, timeout=timeout, check=False)


# -- end state ------------------------------------------------------------------------------


async def event_states(redis: Any, ids: Iterable[str]) -> dict[str, str | None]:
    """Each event's state (None: no such record) in one pipelined round trip."""
    ids = list(ids)
    async with redis.pipeline(transaction=False) as p:
        for event_id in ids:
            p.hget(ev_key(event_id), "state")
        raw = await p.execute()
    return {i: (s.decode() if s else None) for i, s in zip(ids, raw, strict=True)}


async def wait_final(redis: Any, ids: Iterable[str], timeout: float, cluster: Cluster | None = None,
                     interval: float = 0.5) -> dict[str, str | None]:
    """Poll until every event is in a final state; the last states on timeout (with logs)."""
    ids = list(ids)
    deadline = time.monotonic() + timeout
    while True:
        states = await event_states(redis, ids)
        if all(s in FINAL_STATES for s in states.values()):
            return states
        if time.monotonic() > deadline:
            waiting = Counter(s for s in states.values() if s not in FINAL_STATES)
            logs = cluster.logs() if cluster else ""
            raise AssertionError(f"not final within {timeout}s: {dict(waiting)}\n{logs}")
        await asyncio.sleep(interval)


async def latencies(redis: Any, ids: Iterable[str]) -> dict[str, float]:
    """Seconds from receipt to the last state change, per event."""
    ids = list(ids)
    async with redis.pipeline(transaction=False) as p:
        for event_id in ids:
            p.hmget(ev_key(event_id), "received_at", "updated_at")
        raw = await p.execute()
    return {i: (int(u) - int(r)) / 1000 for i, (r, u) in zip(ids, raw, strict=True) if r and u}


def spread(values: Iterable[float]) -> dict[str, float]:
    """p50, p99 and max of some seconds, rounded, for the figures."""
    ordered = sorted(values)
    if not ordered:
        return {}
    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)
    return {"p50": pick(0.5), "p99": pick(0.99), "max": round(ordered[-1], 2)}


async def held_locks(redis: Any) -> list[int]:
    """Milliseconds left on each incident lock now held (a dead holder's lock only lapses)."""
    out = []
    async for key in redis.scan_iter(match="hub:incident:*:lock", count=1000):
        out.append(int(await redis.pttl(key)))
    return out


async def dead_letters(redis: Any) -> list[str]:
    return [m.decode() for m in await redis.zrange("hub:dead", 0, -1)]


# -- sending ----------------------------------------------------------------------------------


@dataclass
class Sent:
    """One POST and its answer."""

    status: int
    body: dict[str, Any] = field(default_factory=dict)
    retry_after: str | None = None
    error: str | None = None

    @property
    def event_id(self) -> str | None:
        return self.body.get("event_id") if self.status == 202 else None

    @property
    def retry_later(self) -> bool:
        """A 503 as the contract has it: a JSON error with a detail, and Retry-After in seconds."""
        return (self.status == 503 and self.body.get("error") == "unavailable"
                and isinstance(self.body.get("detail"), str) and bool(self.body["detail"])
                and self.retry_after is not None and self.retry_after.isdigit())


class Sender:
    """Posts webhooks to a hub as a sender would: bounded concurrency, optional steady rate."""

    def __init__(self, url: str, concurrency: int = 16, timeout: float = 15.0) -> None:
        self.url = url
        self.concurrency = concurrency
        self.timeout = timeout
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Sender:
        self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=self.concurrency),
                                           timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._http is not None
        await self._http.close()

    async def post(self, source: str, body: bytes, headers: dict[str, str]) -> Sent:
        assert self._http is not None
        try:
            async with self._http.post(f"{self.url}/webhooks/{source}", data=body, headers=headers) as resp:
                text = await resp.text()
                try:
                    data = json.loads(text)
                except ValueError:
                    data = {"raw": text[:200]}
                return Sent(resp.status, data if isinstance(data, dict) else {"raw": data},
                            resp.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            return Sent(0, error=f"{type(e).__name__}: {e}")

    async def post_all(self, hooks: list[Any], rate: float | None = None) -> list[Sent]:
        """Post every hook (`.source`, `.body`, `.headers`); `rate` per second, else as fast as allowed."""
        gate = asyncio.Semaphore(self.concurrency)
        start = time.monotonic()

        async def one(i: int, hook: Any) -> Sent:
            if rate:
                await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            async with gate:
                return await self.post(hook.source, hook.body, hook.headers)

        return list(await asyncio.gather(*(one(i, h) for i, h in enumerate(hooks))))

