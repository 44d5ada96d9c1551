"""A real Sentinel setup on loopback from the same redis-server binary: primary, replica, 3 sentinels."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from hub.storage.embedded_redis import EmbeddedRedis, free_port, redis_server_binary

MASTER = "hubmaster"


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class SentinelCluster:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.primary = EmbeddedRedis(base / "primary", appendonly=True)
        self.replica = EmbeddedRedis(base / "replica", appendonly=True)
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{MASTER}/0"

    def start(self) -> SentinelCluster:
        self.primary.start()
        self.replica.extra_args = ("--replicaof", "127.0.0.1", str(self.primary.port))
        self.replica.start()
        for port in self.sentinel_ports:
            d = self.base / f"sentinel-{port}"
            d.mkdir(parents=True, exist_ok=True)
            conf = d / "sentinel.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {d}\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {self.primary.port} 2\n"
                f"sentinel down-after-milliseconds {MASTER} 1000\n"
                f"sentinel failover-timeout {MASTER} 5000\n"
                f"sentinel parallel-syncs {MASTER} 1\n")
            log = open(d / "log", "ab")
            self.sentinels.append(subprocess.Popen([redis_server_binary(), str(conf), "--sentinel"],
                                                   stdout=log, stderr=subprocess.STDOUT))
            log.close()
        deadline = time.monotonic() + 15
        while not all(_ping(p) for p in self.sentinel_ports):
            if time.monotonic() > deadline:
                raise RuntimeError("sentinels did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        for s in self.sentinels:
            s.kill()
            s.wait()
        self.primary.kill()
        self.replica.kill()
