"""HUB_REUSE_PORT: two `incident-hub serve` processes on one host share one port.

Real processes and a real Redis. Which process took a connection is read from the kernel
(the process's socket fds against /proc/net/tcp), so the test does not rely on anything the
servers say about themselves.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis as sync_redis

from hub.storage.embedded_redis import free_port
from hub.storage.event_store import IDX_ALL
from tests.conftest import FIXTURES, GITHUB_SECRET
from tests.test_cli_run import wait_http

pytestmark = pytest.mark.timeout(120)

ESTABLISHED = "01"
LISTEN = "0A"


def serve(tmp_path: Path, redis_url: str, port: int, reuse: bool) -> subprocess.Popen[bytes]:
    env = {**os.environ, "REDIS_URL": redis_url, "HUB_HOST": "127.0.0.1", "HUB_PORT": str(port),
           "GITHUB_WEBHOOK_SECRET": GITHUB_SECRET, "HUB_LOG_LEVEL": "WARNING",
           "HUB_REUSE_PORT": "1" if reuse else "0"}
    return subprocess.Popen([sys.executable, "-m", "hub", "serve"], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def listening(port: int) -> int:
    """Sockets listening on `port` (one per process sharing it)."""
    return sum(1 for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
               if int(line.split()[1].rsplit(":", 1)[1], 16) == port and line.split()[3] == LISTEN)


def established_inodes(port: int) -> set[str]:
    """Socket inodes of the server side of established loopback connections to `port`."""
    out = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == ESTABLISHED:
            out.add(fields[9])
    return out


def socket_inodes(pid: int) -> set[str]:
    out = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(target[len("socket:["):-1])
    return out


def post_github(conn: http.client.HTTPConnection, body: bytes, delivery: str) -> int:
    sig = "sha256=" + hmac.new(GITHUB_SECRET.encode(), body, hashlib.sha256).hexdigest()
    conn.request("POST", "/webhooks/github", body=body,
                 headers={"Content-Type": "application/json", "X-GitHub-Event": "deployment_status",
                          "X-GitHub-Delivery": delivery, "X-Hub-Signature-256": sig})
    resp = conn.getresponse()
    assert json.loads(resp.read())["status"] == "accepted"
    return resp.status


def stop(proc: subprocess.Popen[bytes]) -> str:
    if proc.poll() is None:
        proc.terminate()
    return proc.communicate(timeout=30)[0].decode(errors="replace")


def test_two_serve_processes_share_a_port_and_both_answer(tmp_path: Path, redis_url: str) -> None:
    port = free_port()
    first = serve(tmp_path, redis_url, port, reuse=True)
    second = None
    conns: list[http.client.HTTPConnection] = []
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        second = serve(tmp_path, redis_url, port, reuse=True)
        deadline = time.monotonic() + 30
        while listening(port) < 2:
            assert second.poll() is None, stop(second)
            assert time.monotonic() < deadline, "the second process never listened on the shared port"
            time.sleep(0.1)
        body = (FIXTURES / "github_deployment_status_failure.json").read_bytes()
        # 24 connections kept open: the kernel spreads new connections over both listeners
        # (all 24 landing on one of two has odds of 2^-23).
        for i in range(24):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conns.append(conn)
            assert post_github(conn, body, f"reuse-port-{i}") == 202
        established = established_inodes(port)
        per_process = {p.pid: len(socket_inodes(p.pid) & established) for p in (first, second)}
        assert sum(per_process.values()) == 24, per_process
        assert all(n > 0 for n in per_process.values()), f"one process took every connection: {per_process}"
        client = sync_redis.Redis.from_url(redis_url)
        assert client.zcard(IDX_ALL) == 24  # every 202, from either process, is recorded
        client.close()
    finally:
        for conn in conns:
            conn.close()
        out = [stop(p) for p in (first, second) if p is not None]
    assert all("Traceback" not in o for o in out), out


def test_without_reuse_port_a_second_process_cannot_bind(tmp_path: Path, redis_url: str) -> None:
    port = free_port()
    first = serve(tmp_path, redis_url, port, reuse=False)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        second = serve(tmp_path, redis_url, port, reuse=False)
        assert second.wait(timeout=30) == 1
        out = stop(second)
        assert f"cannot listen on 127.0.0.1:{port}" in out and "HUB_REUSE_PORT=1" in out, out
        assert "Traceback" not in out, out
    finally:
        stop(first)


def test_run_web_2_starts_two_listeners_on_one_port(tmp_path: Path, redis_url: str) -> None:
    port = free_port()
    env = {**os.environ, "REDIS_URL": redis_url, "HUB_HOST": "127.0.0.1", "HUB_PORT": str(port),
           "HUB_LOG_LEVEL": "WARNING"}
    env.pop("HUB_REUSE_PORT", None)
    run = subprocess.Popen([sys.executable, "-m", "hub", "run", "--web", "2", "--workers", "0"], env=env,
                           cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        deadline = time.monotonic() + 30
        while listening(port) < 2:
            assert run.poll() is None and time.monotonic() < deadline, "two web processes never both listened"
            time.sleep(0.1)
    finally:
        out = stop(run)
    assert "a process exited" not in out, out
