"""Redis failures are told apart by exception class, never by message text (the text changes
between redis-py releases: 5.3 dropped "OOM" from the OutOfMemoryError message)."""

from __future__ import annotations

import pytest
from redis import exceptions as redis_errors

from hub.storage.connection import connection_lost
from tests.conftest import fixture_request


def _watch_error_while(cause: BaseException | None) -> redis_errors.WatchError:
    try:
        try:
            if cause is not None:
                raise cause
        finally:
            raise redis_errors.WatchError("any wording at all")
    except redis_errors.WatchError as e:
        return e


@pytest.mark.parametrize("cause", [redis_errors.ConnectionError("gone"), redis_errors.TimeoutError("slow"),
                                   ConnectionResetError(), OSError("socket")])
def test_a_watch_error_raised_from_a_lost_connection_is_an_outage(cause: BaseException) -> None:
    assert connection_lost(_watch_error_while(cause))


def test_a_watch_error_from_a_changed_key_is_a_conflict_whatever_it_says() -> None:
    e = redis_errors.WatchError("A ConnectionError occurred on while watching one or more keys")
    assert not connection_lost(e)
    assert not connection_lost(_watch_error_while(None))


async def test_redis_at_maxmemory_answers_503_with_retry_after_and_records_nothing(client, redis) -> None:
    body, headers = fixture_request("github_deployment_status_failure.json")
    await redis.config_set("maxmemory", "1")  # every write that can grow memory is refused (noeviction)
    await redis.config_set("maxmemory-policy", "noeviction")
    try:
        resp = await client.post("/webhooks/github", data=body, headers=headers)
        assert resp.status == 503, await resp.text()
        assert resp.headers["Retry-After"].isdigit()
        assert (await resp.json())["error"] == "unavailable"
    finally:
        await redis.config_set("maxmemory", "0")
    assert await redis.zcard("hub:idx:all") == 0
    resp = await client.post("/webhooks/github", data=body, headers=headers)  # the sender's retry
    assert resp.status == 202 and (await resp.json())["status"] == "accepted"
