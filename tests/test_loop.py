"""The processes' event loop (hub/core/loop.py) and the Redis parser: the fast paths the default
install promises are the ones in use."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest


def _loop_in_child(env_value: str | None) -> subprocess.CompletedProcess[str]:
    code = ("import asyncio; from hub.core import loop; kind = loop.install(); "
            "l = asyncio.new_event_loop(); print(kind, type(l).__module__); l.close()")
    env = {"PATH": "/usr/bin:/bin"} | ({"HUB_EVENT_LOOP": env_value} if env_value is not None else {})
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)


def test_serve_and_worker_loops_are_uvloop_by_default() -> None:
    out = _loop_in_child(None)
    assert out.returncode == 0, out.stderr
    kind, module = out.stdout.split()
    assert kind == "uvloop" and module.startswith("uvloop")


def test_hub_event_loop_asyncio_keeps_the_standard_loop() -> None:
    out = _loop_in_child("asyncio")
    kind, module = out.stdout.split()
    assert kind == "asyncio" and module.startswith("asyncio")


def test_an_unknown_loop_name_stops_the_process_naming_the_variable() -> None:
    out = _loop_in_child("twisted")
    assert out.returncode != 0 and "HUB_EVENT_LOOP" in out.stderr


def test_redis_py_parses_with_hiredis() -> None:
    """hiredis is a locked dependency (redis[hiredis]); a Python parser would cost the ingress
    and the worker CPU on every reply without any error to show for it."""
    from redis.asyncio.connection import DefaultParser
    from redis.utils import HIREDIS_AVAILABLE

    assert HIREDIS_AVAILABLE
    assert "hiredis" in DefaultParser.__name__.lower()


@pytest.mark.parametrize("policy", ["uvloop"])
def test_install_sets_the_policy_in_this_process(policy: str) -> None:
    from hub.core import loop

    before = asyncio.get_event_loop_policy()
    try:
        assert loop.install(policy) == "uvloop"
        assert type(asyncio.get_event_loop_policy()).__module__.startswith("uvloop")
    finally:
        asyncio.set_event_loop_policy(before)
