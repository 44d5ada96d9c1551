"""hub.storage.batch: the worker's atomic write batches, against a real Redis."""

from __future__ import annotations

import pytest
from redis.exceptions import ResponseError

from hub.storage.batch import Batch
from hub.storage.connection import connect


@pytest.fixture
async def redis(redis_url):
    client = connect(redis_url)
    await client.flushdb()
    yield client
    await client.aclose()


async def test_replies_come_back_in_call_order_with_expire_deferred(redis) -> None:
    p = Batch()
    p.hset("h", mapping={"a": "1", "b": 2})
    p.expire("h", 100)
    p.hsetnx("h", "a", "other")
    p.hget("h", "a")
    p.rpush("l", "x", "y")
    p.zadd("z", {"m": 1700000000123})
    p.sadd("s", "k")
    p.set("str", "v", ex=50)
    replies = await p.execute(redis)
    assert replies == [2, None, 0, b"1", 2, 1, 1, b"OK"]
    assert await redis.hgetall("h") == {b"a": b"1", b"b": b"2"}
    assert 0 < await redis.ttl("h") <= 100
    assert await redis.zscore("z", "m") == 1700000000123  # exact: scores are sent as text
    assert 0 < await redis.ttl("str") <= 50


async def test_expire_applies_to_a_key_created_after_it_was_queued(redis) -> None:
    p = Batch()
    p.expire("later", 30)  # in MULTI this would be a no-op on a missing key
    p.rpush("later", "entry")
    p.expire("later", 60)  # the last TTL wins
    await p.execute(redis)
    assert 30 < await redis.ttl("later") <= 60


async def test_update_noted_sets_fields_only_on_an_existing_record(redis) -> None:
    p = Batch()
    p.update_noted("inc:missing", "inc:missing:tl", '{"type":"x"}', 100, ["status", '"open"'])
    await p.execute(redis)
    assert not await redis.exists("inc:missing")
    assert await redis.lrange("inc:missing:tl", 0, -1) == [b'{"type":"x"}']

    await redis.hset("inc:there", "title", '"t"')
    p = Batch()
    p.update_noted("inc:there", "inc:there:tl", '{"type":"y"}', 100, ["status", '"open"'])
    await p.execute(redis)
    assert await redis.hget("inc:there", "status") == b'"open"'
    assert 0 < await redis.ttl("inc:there:tl") <= 100


async def test_hset_newer_keeps_a_value_received_later(redis) -> None:
    p = Batch()
    p.hset_newer("alerts", "fp", 200, '{"status": "resolved", "received_at": 200}')
    p.hset_newer("alerts", "fp", 100, '{"status": "firing", "received_at": 100}')  # older: kept out
    p.hset_newer("alerts", "other", 100, '{"status": "firing", "received_at": 100}')
    assert await p.execute(redis) == [1, 0, 1]
    assert await redis.hget("alerts", "fp") == b'{"status": "resolved", "received_at": 200}'
    p = Batch()
    p.hset_newer("alerts", "fp", 300, '{"status": "firing", "received_at": 300}')
    await p.execute(redis)
    assert await redis.hget("alerts", "fp") == b'{"status": "firing", "received_at": 300}'


async def test_release_deletes_a_lock_only_with_its_token(redis) -> None:
    await redis.set("lock:a", "mine")
    await redis.set("lock:b", "theirs")
    p = Batch()
    p.release("lock:a", "mine")
    p.release("lock:b", "mine")
    assert await p.execute(redis) == [1, 0]
    assert not await redis.exists("lock:a")
    assert await redis.get("lock:b") == b"theirs"


async def test_a_failing_command_raises_after_the_others_ran(redis) -> None:
    await redis.set("text", "v")
    p = Batch()
    p.rpush("text", "x")  # WRONGTYPE
    p.hset("h", "after", "1")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await p.execute(redis)
    assert await redis.hget("h", "after") == b"1"  # as MULTI/EXEC: the rest still ran


async def test_the_script_is_loaded_again_after_a_script_flush(redis) -> None:
    p = Batch()
    p.set("a", "1")
    await p.execute(redis)
    await redis.script_flush()
    p = Batch()
    p.set("a", "2")
    await p.execute(redis)
    assert await redis.get("a") == b"2"


async def test_unicode_and_json_values_are_stored_byte_for_byte(redis) -> None:
    value = '{"title":"Base de données \\u00e9 — ünïcode","nul":"\\u0000"}'
    p = Batch()
    p.hset("h", "v", value)
    p.hset("h", "w", "naïve ☃")
    p.hset("h", "n", "a\x00b")
    await p.execute(redis)
    assert await redis.hget("h", "n") == b"a\x00b"
    assert (await redis.hget("h", "v")).decode() == value
    assert (await redis.hget("h", "w")).decode() == "naïve ☃"


async def test_text_that_is_not_unicode_is_refused_and_nothing_is_written(redis) -> None:
    """A lone surrogate (text decoded from bytes that were not UTF-8) cannot be sent: the
    batch fails as redis-py's strict encoder always made it fail, with nothing applied."""
    p = Batch()
    p.hset("h", "ok", "fine")
    p.hset("h", "bad", "x\udcff")
    with pytest.raises(UnicodeEncodeError):
        await p.execute(redis)
    assert await redis.exists("h") == 0


def test_values_that_are_not_text_or_numbers_are_refused() -> None:
    p = Batch()
    with pytest.raises(TypeError):
        p.hset("h", "k", True)
    with pytest.raises(TypeError):
        p.rpush("l", {"a": 1})


async def test_a_full_redis_applies_nothing_and_says_out_of_memory(redis) -> None:
    from redis.exceptions import OutOfMemoryError

    await redis.zadd("idx", {"ev1": 1})
    await redis.zadd("pending", {"ev1": 1})
    old = (await redis.config_get("maxmemory"))["maxmemory"]
    await redis.config_set("maxmemory", 1)  # noeviction: every write that can grow memory is refused
    try:
        p = Batch()
        p.hset("ev:1", "state", "done")  # refused
        p.zrem("idx", "ev1")  # would be allowed alone: it must not apply without the rest
        p.zrem("pending", "ev1")
        p.expire("ev:1", 60)
        with pytest.raises(OutOfMemoryError):
            await p.execute(redis)
        p = Batch()
        p.update_noted("inc:1", "inc:1:tl", '{"type":"x"}', 100, [])
        p.zrem("idx", "ev1")
        with pytest.raises(OutOfMemoryError):
            await p.execute(redis)
    finally:
        await redis.config_set("maxmemory", old)
    assert await redis.zscore("idx", "ev1") == 1
    assert await redis.zscore("pending", "ev1") == 1
    assert not await redis.exists("ev:1", "inc:1:tl")
