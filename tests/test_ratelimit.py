"""Client-side rate limits (GCRA in Redis, shared by every worker) and serial locks."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from connectors.base import ActionCall, ActionFn, Connector
from hub.core.settings import load_settings
from hub.storage.ratelimit import Rate, RateLimiter, parse_limit, parse_rate


class Limited(Connector):
    name = "testc"
    default_rate_limit = "1/min"

    def __init__(self) -> None:  # no settings, HTTP or Redis needed to be rate limited
        pass

    def actions(self) -> dict[str, ActionFn]:
        return {}

    def rate_limit_key(self, call: ActionCall) -> str | None:
        return "cred:" + str(call.params.get("cred", "a"))


def call(cred: str = "a") -> ActionCall:
    return ActionCall(event_id="ev", action_id="a", idempotency_key="k", params={"cred": cred})


def test_parse_limit_forms() -> None:
    assert parse_limit("120/min") == Rate(0.5, 1)
    assert parse_limit("1/s") == Rate(1.0, 1)
    assert parse_limit(" 20 / second , burst = 5 ") == Rate(0.05, 5)
    assert parse_limit("10/10s") == Rate(1.0, 1)
    assert parse_limit("3600/hour") == Rate(1.0, 1)
    for off in ("0", "off", "", " none ", None, "0/s"):
        assert parse_limit(off) is None
    assert parse_rate("120/min") == 0.5 and parse_rate("0") is None


@pytest.mark.parametrize("bad", ["fast", "10", "10/fortnight", "5/s,burst=0", "-1/s"])
def test_parse_limit_rejects_nonsense(bad: str) -> None:
    with pytest.raises(ValueError, match="rate limit"):
        parse_limit(bad)


async def test_gcra_spaces_calls_per_credential_across_workers(redis: Any) -> None:
    worker_a, worker_b = RateLimiter(redis, env={}), RateLimiter(redis, env={})
    c = Limited()
    assert await worker_a.acquire(c, call("a")) == 0.0
    wait_same = await worker_b.acquire(c, call("a"))  # another worker, same credential
    assert 0.0 < wait_same <= 60.0
    assert await worker_b.acquire(c, call("b")) == 0.0  # another credential has its own budget


async def test_a_refused_call_spends_nothing(redis: Any) -> None:
    limiter, c = RateLimiter(redis, env={"TESTC_RATE_LIMIT": "1/min,burst=2"}), Limited()
    assert [await limiter.acquire(c, call()) for _ in range(2)] == [0.0, 0.0]
    waits = [await limiter.acquire(c, call()) for _ in range(3)]
    assert all(w > 0 for w in waits)
    # refusals did not push the schedule back: each is told (about) the same time
    assert max(waits) - min(waits) < 1.0


async def test_environment_overrides_the_default_and_zero_turns_it_off(redis: Any) -> None:
    off = RateLimiter(redis, env={"TESTC_RATE_LIMIT": "0"})
    c = Limited()
    assert [await off.acquire(c, call()) for _ in range(5)] == [0.0] * 5
    assert off.limit(c) is None
    assert RateLimiter(redis, env={}).limit(c) == Rate(60.0, 1)


async def test_limits_come_from_the_settings_dotenv_then_environment(
        redis: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The settings read `<CONNECTOR>_RATE_LIMIT` from `.env` and the environment (which wins);
    the limiter takes them from there and reads no file itself."""
    (tmp_path / ".env").write_text("TESTC_RATE_LIMIT=30/min\nOTHER_RATE_LIMIT=5/s\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TESTC_RATE_LIMIT", raising=False)
    assert load_settings().rate_limits["TESTC_RATE_LIMIT"] == "30/min"
    assert RateLimiter(redis, load_settings().rate_limits).limit(Limited()) == Rate(2.0, 1)
    assert RateLimiter(redis).limit(Limited()) == Rate(60.0, 1)  # no settings given: the default, not .env
    monkeypatch.setenv("TESTC_RATE_LIMIT", "off")
    assert RateLimiter(redis, load_settings().rate_limits).limit(Limited()) is None


async def test_wait_gives_up_rather_than_overstaying(redis: Any) -> None:
    limiter, c = RateLimiter(redis, env={"TESTC_RATE_LIMIT": "20/s"}), Limited()
    assert await limiter.wait(c, call()) is True
    assert await limiter.wait(c, call(), max_wait=1.0) is True  # ~50 ms later
    slow = RateLimiter(redis, env={"TESTC_RATE_LIMIT": "1/min"})
    assert await slow.wait(c, call("z")) is True
    assert await slow.wait(c, call("z"), max_wait=0.5) is False


async def test_serial_lock_is_exclusive_owned_and_expires(redis: Any) -> None:
    limiter = RateLimiter(redis, env={})
    token = await limiter.lock("jira", "issue:OPS-1", ttl=30)
    assert token is not None
    assert await limiter.lock("jira", "issue:OPS-1", ttl=30) is None
    assert await limiter.lock("jira", "issue:OPS-2", ttl=30) is not None
    await limiter.unlock("jira", "issue:OPS-1", "not-the-token")
    assert await limiter.lock("jira", "issue:OPS-1", ttl=30) is None  # only the holder releases
    await limiter.unlock("jira", "issue:OPS-1", token)
    short = await limiter.lock("jira", "issue:OPS-1", ttl=0.1)
    assert short is not None
    await asyncio.sleep(0.25)
    assert await limiter.lock("jira", "issue:OPS-1", ttl=30) is not None  # a dead holder's lock expires
