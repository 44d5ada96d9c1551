"""The shared ActionRunner: what it does between a planned action and the outside world.

Most tests use a scripted connector (`Probe`) so each rule of the runner is exercised
exactly; the Slack tests run the real connector against the fake over loopback.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import aiohttp
import pytest

from connectors.base import ActionCall, ActionFn, Connector, Outcome, RetryPolicy, classify_status, parse_retry_after
from connectors.slack import Slack
from hub.storage.event_store import Store, now_ms
from hub.storage.ratelimit import RateLimiter
from hub.worker.actions import ActionRunner, backoff, redact, scrub
from tests.conftest import make_settings
from tests.connector_harness import FAST_RETRY, Harness, planned
from tests.fakes.base import Fault

SECRET = "s3cr3t-api-key-value"


class Probe(Connector):
    """A connector whose attempts are scripted: each call pops the next Outcome (or raises it)."""

    name = "probe"
    retry_policy = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.02, deadline=600)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.script: list[Outcome | Exception] = []
        self.calls: list[ActionCall] = []
        self.serial: str | None = None

    def actions(self) -> dict[str, ActionFn]:
        return {"do": self.do}

    def secrets(self, params: Any = None) -> list[str]:
        return [SECRET]

    def serial_key(self, call: ActionCall) -> str | None:
        return self.serial

    async def do(self, call: ActionCall) -> Outcome:
        self.calls.append(call)
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step


@pytest.fixture
async def env(redis: Any, redis_url: str) -> AsyncIterator[tuple[ActionRunner, Probe, Store]]:
    settings = make_settings(redis_url)
    store = Store(redis, settings)
    async with aiohttp.ClientSession() as http:
        probe = Probe(settings, http, redis)
        runner = ActionRunner(store, {"probe": probe}, RateLimiter(redis, env={}), inline_wait=0.2)
        yield runner, probe, store


async def run(runner: ActionRunner, store: Store, action_id: str = "a1", received: int | None = None,
              **kw: Any) -> dict[str, Any]:
    record = (await store.actions("ev1")).get(action_id)
    return await runner.run("ev1", planned("probe", "do", {"x": 1}, action_id=action_id), record,
                            received or now_ms(), **kw)


async def make_due(store: Store, rec: dict[str, Any]) -> None:
    """Pretend the scheduled retry time has come (the test does not wait for it)."""
    rec["next_at"] = now_ms() - 1
    await store.save_action("ev1", rec)


# -- pure rules ---------------------------------------------------------------------------------

def test_backoff_is_full_jitter_under_an_exponential_ceiling() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=30.0)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (6, 30.0), (20, 30.0)]:
        delays = [backoff(policy, attempt, None) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling / 2  # spread over the range, not pinned to the floor


def test_retry_after_is_a_floor_with_a_cap() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=2.0, max_retry_after=100.0)
    assert all(backoff(policy, 1, 7.0) >= 7.0 for _ in range(50))
    assert backoff(policy, 1, 10_000.0) == 100.0


def test_parse_retry_after_seconds_and_http_date() -> None:
    now = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC).timestamp()
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("Tue, 01 Jan 2030 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after(format_datetime(datetime(2030, 1, 1, 11, 0, tzinfo=UTC), usegmt=True), now=now) == 0.0
    assert parse_retry_after("-5") == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None and parse_retry_after("nan") is None


def test_classify_status_is_one_rule() -> None:
    assert classify_status(202, "", {}).state == "succeeded"
    slow = classify_status(503, "busy", {"Retry-After": "3"})
    assert slow.state == "retryable" and slow.retry_after == 3.0
    assert classify_status(429, "", {}).state == "retryable"
    assert classify_status(420, "", {}, extra_retryable=(420,)).state == "retryable"
    gone = classify_status(404, "channel_not_found", {})
    assert gone.state == "permanent" and gone.detail == "HTTP 404: channel_not_found"


def test_redact_at_any_depth_and_scrub_by_value() -> None:
    params = {"routing_key": "R", "summary": "s", "nested": {"api_key": "K", "ok": 1},
              "targets": [{"webhook_url": "https://hooks"}, "plain"], "key": "fingerprint"}
    assert redact(params) == {"routing_key": "***", "summary": "s", "nested": {"api_key": "***", "ok": 1},
                              "targets": [{"webhook_url": "***"}, "plain"], "key": "fingerprint"}
    assert scrub(f"bad key {SECRET} rejected", [SECRET, "", "abc"]) == "bad key *** rejected"


# -- the runner ---------------------------------------------------------------------------------

async def test_success_is_recorded_and_never_repeated(env: Any) -> None:
    runner, probe, store = env
    probe.script = [Outcome("succeeded", 200, result={"id": "X1"})]
    rec = await run(runner, store)
    again = await run(runner, store)
    assert rec["state"] == again["state"] == "succeeded" and again["result"] == {"id": "X1"}
    assert len(probe.calls) == 1 and len(again["attempts"]) == 1


async def test_dead_stays_dead_on_later_passes(env: Any) -> None:
    """Another action of the event may still be retrying; a dead one is not tried again."""
    runner, probe, store = env
    probe.script = [Outcome("permanent", 404, detail="HTTP 404: nope", response="nope")]
    dead = await run(runner, store)
    later = await run(runner, store)
    assert dead["state"] == later["state"] == "dead" and len(probe.calls) == 1
    assert later["last_response"] == "nope"


async def test_force_starts_a_fresh_round(env: Any) -> None:
    runner, probe, store = env
    probe.script = [Outcome("succeeded", 200), Outcome("retryable", 500, detail="HTTP 500"),
                    Outcome("succeeded", 200)]
    await run(runner, store)
    forced = await run(runner, store, force=True)
    assert forced["state"] == "retrying" and forced["rounds"] == 2 and forced["round_first"] == 1
    await make_due(store, forced)
    final = await run(runner, store)
    assert final["state"] == "succeeded" and len(final["attempts"]) == 3 and probe.calls[-1].attempt == 2


async def test_ambiguity_is_remembered_across_attempts(env: Any) -> None:
    runner, probe, store = env
    probe.script = [Outcome("retryable", None, detail="timed out", ambiguous=True),
                    Outcome("retryable", 500, detail="HTTP 500"), Outcome("succeeded", 201)]
    for _ in range(3):
        rec = await run(runner, store)
        if rec["state"] == "retrying":
            await make_due(store, rec)
    assert [c.after_ambiguous for c in probe.calls] == [False, True, True]
    assert [c.attempt for c in probe.calls] == [1, 2, 3]


async def test_out_of_attempts_is_dead_and_dead_lettered(env: Any, redis: Any) -> None:
    runner, probe, store = env
    probe.script = [Outcome("retryable", 503, detail="HTTP 503", response=f"busy {i}") for i in range(3)]
    for _ in range(3):
        rec = await run(runner, store)
        if rec["state"] == "retrying":
            await make_due(store, rec)
    assert rec["state"] == "dead" and rec["error"] == "out of attempts (3): HTTP 503"
    assert rec["last_response"] == "busy 2" and await redis.zscore("hub:dead", "ev1/a1") is not None


async def test_past_the_deadline_is_dead_without_calling(env: Any) -> None:
    runner, probe, store = env
    rec = await run(runner, store, received=now_ms() - 601_000)
    assert rec["state"] == "dead" and rec["error"] == "deadline of 600s passed" and probe.calls == []


async def test_a_retry_that_would_pass_the_deadline_is_dead_now(env: Any) -> None:
    runner, probe, store = env
    probe.script = [Outcome("retryable", 429, detail="HTTP 429", retry_after=120.0)]
    rec = await run(runner, store, received=now_ms() - 550_000)
    assert rec["state"] == "dead" and "would pass the 600s deadline" in rec["error"]


async def test_a_replayed_record_gets_a_fresh_budget_and_deadline(env: Any) -> None:
    """hub.operators.replay resets a dead record to pending with `replayed_at`, keeping an ambiguous last attempt."""
    runner, probe, store = env
    old = now_ms() - 3_600_000
    record = {**runner.new_record(planned("probe", "do", action_id="a1")), "state": "pending", "replayed_at": now_ms(),
              "attempts": [{"at": old, "status": None, "outcome": "retryable", "ambiguous": True}]}
    await store.save_action("ev1", record)
    probe.script = [Outcome("succeeded", 201)]
    rec = await run(runner, store, received=old)  # far past the deadline, but replayed just now
    assert rec["state"] == "succeeded"
    assert probe.calls[0].attempt == 1 and probe.calls[0].after_ambiguous is True


async def test_a_connector_exception_is_retried_and_secrets_are_scrubbed(env: Any,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    runner, probe, store = env
    probe.script = [RuntimeError(f"boom with {SECRET}"), Outcome("permanent", 401, detail=f"HTTP 401: {SECRET}",
                                                                 response=f'{{"echo": "{SECRET}"}}')]
    first = await run(runner, store)
    assert first["state"] == "retrying" and first["attempts"][0]["error"] == "RuntimeError: boom with ***"
    assert first["attempts"][0]["ambiguous"] is True
    assert "RuntimeError: boom with ***" in caplog.text and SECRET not in caplog.text
    await make_due(store, first)
    dead = await run(runner, store)
    assert SECRET not in str(dead) and SECRET not in str(await store.timeline("ev1"))
    assert dead["last_response"] == '{"echo": "***"}'


async def test_a_held_serial_lock_parks_without_an_attempt(env: Any) -> None:
    runner, probe, store = env
    probe.serial = "incident-7"
    token = await runner.limiter.lock("probe", "incident-7", ttl=30)
    rec = await run(runner, store)
    assert rec["state"] == "retrying" and rec["attempts"] == [] and probe.calls == []
    assert rec["waiting"].startswith("waiting: another call")
    assert token is not None
    await runner.limiter.unlock("probe", "incident-7", token)
    await make_due(store, rec)
    probe.script = [Outcome("succeeded", 200)]
    assert (await run(runner, store))["state"] == "succeeded"


async def test_unknown_connector_or_action_is_dead(env: Any) -> None:
    runner, _probe, _store = env
    nobody = await runner.run("ev1", planned("nobody", "do", action_id="n"), None, now_ms())
    nothing = await runner.run("ev1", planned("probe", "fly", action_id="f"), None, now_ms())
    assert nobody["state"] == nothing["state"] == "dead"
    assert nobody["error"] == "unknown connector 'nobody'" and nothing["error"] == "probe has no action 'fly'"


async def test_a_bad_rate_limit_variable_fails_at_start(redis: Any, redis_url: str) -> None:
    settings = make_settings(redis_url)
    async with aiohttp.ClientSession() as http:
        with pytest.raises(ValueError, match="PROBE_RATE_LIMIT"):
            ActionRunner(Store(redis, settings), {"probe": Probe(settings, http, redis)},
                         RateLimiter(redis, env={"PROBE_RATE_LIMIT": "fast"}))


# -- Slack, for real ---------------------------------------------------------------------------

async def test_slack_job_run_twice_posts_once(redis: Any, redis_url: str, fake_slack: Any,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Slack, "retry_policy", FAST_RETRY)
    settings = make_settings(redis_url, slack_webhook_url=fake_slack.webhook_url)
    fake_slack.faults.append(Fault(status=500))
    async with Harness(redis, settings, Slack) as h:
        action = planned("slack", "notify", {"text": "deploy failed", "severity": "SEV2"})
        rec = await h.run_to_final(action)
        await h.run(action)
    assert rec["state"] == "succeeded" and [a["status"] for a in rec["attempts"]] == [500, 200]
    assert len(fake_slack.requests) == 2 and fake_slack.requests[-1].json()["text"].endswith("deploy failed")


async def test_slack_url_from_params_enables_it_and_never_leaks(redis: Any, redis_url: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    secret_url = "http://[::1/services/T000/B000/SECRETTOKEN"  # malformed: the error quotes the URL
    async with Harness(redis, make_settings(redis_url), Slack) as h:
        rec = await h.run(planned("slack", "notify", {"text": "x", "webhook_url": secret_url}))
    assert rec["state"] == "dead" and rec["attempts"]  # attempted: the param URL enables the connector
    assert rec["error"] == "invalid URL: ***"  # permanent, and the URL in the message is scrubbed
    assert "SECRETTOKEN" not in str(rec) and rec["params"]["webhook_url"] == "***"
