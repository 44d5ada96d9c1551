"""Driving the load: wrk with bench/wrk_github.lua, or bench/pyload.py where wrk is missing.

Both are closed loops over N keep-alive connections and report the same `LoadResult`.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from bench import payload

LUA = Path(__file__).resolve().parent / "wrk_github.lua"
MARK = "BENCH_RESULT "


@dataclass
class LoadResult:
    requests: int
    duration_s: float
    accepted: int
    other_status: int
    errors: dict[str, int]
    latency_ms: dict[str, float]
    generator: str = ""
    #: the load generator's own CPU time, to see whether it had enough of its core
    cpu_s: float = 0.0

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "rps": round(self.rps, 1)}


def choose_generator(loadgen: str, install: bool) -> tuple[str | None, str] | None:
    """For `--loadgen auto|wrk|python`: (wrk's path, or None for the Python generator; how wrk
    was found or why not). None when wrk was required and is missing (said on stderr)."""
    if loadgen not in ("auto", "wrk"):
        return None, "not wanted"
    wrk, how = ensure_wrk(install=install)
    if wrk is None and loadgen == "wrk":
        print(f"bench: wrk unavailable: {how}", file=sys.stderr)
        return None
    return wrk, how


def ensure_wrk(install: bool = True) -> tuple[str | None, str]:
    """Path of wrk (installing the Debian package as root when allowed) and what happened."""
    found = shutil.which("wrk")
    if found:
        return found, "found on PATH"
    if not install:
        return None, "not installed (--no-install)"
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None, "not installed and cannot apt-get install (not root or no apt-get)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for attempt in ("install", "update+install"):
        if attempt == "update+install":
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=300)
        print(f"bench: wrk missing, running apt-get install -y wrk ({attempt})", file=sys.stderr)
        done = subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], env=env, capture_output=True,
                              timeout=300)
        if done.returncode == 0 and shutil.which("wrk"):
            return shutil.which("wrk"), "installed with apt-get"
    return None, "apt-get install wrk failed"


def wrk_version(wrk: str) -> str:
    out = subprocess.run([wrk, "-v"], capture_output=True, text=True)
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else "wrk"


def _parse(output: str, generator: str) -> LoadResult:
    for line in output.splitlines():
        if line.startswith(MARK):
            return LoadResult(**json.loads(line[len(MARK):]), generator=generator)
    raise RuntimeError(f"{generator} printed no result line; output was:\n{output[-2000:]}")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_load(generator: str, url: str, *, connections: int, duration: int, prefix: str,
             pin: list[str], wrk: str | None = None) -> LoadResult:
    """One closed-loop run against `url`; `pin` is a command prefix such as ['taskset', '-c', '1']."""
    cpu0 = _children_cpu()
    result = _run(generator, url, connections=connections, duration=duration, prefix=prefix, pin=pin, wrk=wrk)
    result.cpu_s = round(_children_cpu() - cpu0, 3)
    return result


def _run(generator: str, url: str, *, connections: int, duration: int, prefix: str, pin: list[str],
         wrk: str | None) -> LoadResult:
    if generator == "wrk":
        assert wrk is not None
        with tempfile.NamedTemporaryFile(suffix=".json") as f:
            body = payload.body()
            f.write(body)
            f.flush()
            cmd = [*pin, wrk, "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "5s", "-s", str(LUA),
                   url, "--", f.name, payload.signature(body), prefix, payload.EVENT]
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
        if out.returncode != 0:
            raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr.strip()}")
        return _parse(out.stdout, "wrk")
    cmd = [*pin, sys.executable, "-m", "bench.pyload", "--url", url, "--connections", str(connections),
           "--duration", str(duration), "--prefix", prefix]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    if out.returncode != 0:
        raise RuntimeError(f"bench.pyload failed ({out.returncode}): {out.stderr.strip()[-2000:]}")
    return _parse(out.stdout, "python")
