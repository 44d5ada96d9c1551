"""The processes under test: a fresh Redis per run, and the two servers (baseline, hub).

Each side knows how to start its server, how many requests the server itself says it
accepted (its own counter, not the load generator's view), and how many of those are really
in Redis — so a run whose numbers came from answering without storing is caught.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import redis as sync_redis

from bench import payload
from hub.storage.embedded_redis import EmbeddedRedis, free_port
from hub.storage.event_store import ARQ_JOB_PREFIX, ARQ_QUEUE, IDX_ALL, ev_key

CLK_TCK = os.sysconf("SC_CLK_TCK")


class PinnedRedis(EmbeddedRedis):
    """The hub's embedded Redis (AOF, fsync every second), optionally pinned to CPUs."""

    def __init__(self, data_dir: Path, pin: list[str], extra_args: tuple[str, ...] = ()) -> None:
        super().__init__(data_dir, appendonly=True, extra_args=extra_args)
        self.pin = pin

    def command(self) -> list[str]:
        return [*self.pin, *super().command()]


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def _get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return bytes(resp.read())


@dataclass
class Server:
    """One server process under test."""

    side: str
    proc: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{payload.PATH}"

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.side} server exited with {self.proc.returncode}")
            try:
                _get(f"http://127.0.0.1:{self.port}/healthz", timeout=1)
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.side} server did not answer /healthz within {timeout:g}s")

    def counts(self) -> dict[str, int]:
        """The server's own count of 202s: {'accepted': n, 'duplicate': m}."""
        if self.side == "baseline":
            data = json.loads(_get(f"http://127.0.0.1:{self.port}/stats"))
            return {"accepted": int(data["accepted"]), "duplicate": int(data["duplicate"])}
        text = _get(f"http://127.0.0.1:{self.port}/metrics").decode()
        out = {"accepted": 0, "duplicate": 0}
        for line in text.splitlines():
            if line.startswith("hub_webhooks_accepted_total{") and 'source="github"' in line:
                m = re.search(r'result="(\w+)"', line)
                if m and m.group(1) in out:
                    out[m.group(1)] = int(float(line.rsplit(" ", 1)[1]))
        return out

    def cpu(self) -> tuple[float, float]:
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server(side: str, redis_url: str, pin: list[str], workdir: Path) -> Server:
    """`python -m bench.baseline_app`, or the real `incident-hub serve` (python -m hub serve)."""
    port = free_port()
    env = {**os.environ, "REDIS_URL": redis_url, "GITHUB_WEBHOOK_SECRET": payload.SECRET,
           "HUB_LOG_LEVEL": "WARNING", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    if side == "baseline":
        cmd = [sys.executable, "-m", "bench.baseline_app", "--port", str(port), "--redis-url", redis_url]
    else:
        cmd = [sys.executable, "-m", "hub", "serve", "--host", "127.0.0.1", "--port", str(port)]
    log = open(workdir / f"{side}.log", "ab")
    # cwd is a scratch dir: no .env or hub.yaml of the developer's leaks into the measurement.
    proc = subprocess.Popen([*pin, *cmd], env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    server = Server(side, proc, port)
    try:
        server.wait_ready()
    except Exception:
        server.stop()
        raise
    return server


def _exists_all(client: sync_redis.Redis, keys: list[str], chunk: int = 5000) -> int:
    return sum(int(client.exists(*keys[i:i + chunk])) for i in range(0, len(keys), chunk))


def stored(side: str, client: sync_redis.Redis) -> dict[str, int]:
    """What is really in Redis: recorded events and queued jobs, each checked key by key."""
    queued = [m.decode() for m in client.zrange(ARQ_QUEUE, 0, -1)]
    jobs = _exists_all(client, [ARQ_JOB_PREFIX + j for j in queued])
    if side == "baseline":
        return {"events": len(queued), "queued": len(queued), "jobs": jobs}
    ids = [m.decode() for m in client.zrange(IDX_ALL, 0, -1)]
    records = _exists_all(client, [ev_key(i) for i in ids])
    in_queue = len(set(ids) & set(queued))
    return {"events": records, "queued": in_queue, "jobs": jobs, "indexed": len(ids)}
