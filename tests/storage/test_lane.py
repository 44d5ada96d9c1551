"""The ingest's own Redis connections (`hub.storage.lane`): against the real Redis of the root
conftest, plus a silent TCP server for the timeout. What the pool's per-command probe used to
guard (a connection holding an answer that is not the next command's) must hold here too."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, NoScriptError, ResponseError, WatchError
from redis.exceptions import TimeoutError as RedisTimeoutError

from hub.storage.connection import connect
from hub.storage.event_store import Store
from hub.storage.lane import CommandLane, LaneClient, pack
from tests.storage.test_event_store import BODY


@pytest.fixture
async def lane(redis: Redis) -> AsyncIterator[CommandLane]:
    lane = CommandLane(redis, size=2, timeout=2.0)
    yield lane
    await lane.aclose()


@given(st.lists(st.one_of(st.binary(max_size=40), st.text(max_size=20)), min_size=1, max_size=8))
@settings(max_examples=200, deadline=None)
def test_pack_writes_what_redis_pys_encoder_writes(args: list[Any]) -> None:
    expected = b"".join(Connection().pack_command(b"ECHO", *args))
    assert pack([b"ECHO", *args]) == expected


async def test_a_call_answers_and_connections_are_reused_up_to_the_size(lane: CommandLane, redis: Redis) -> None:
    answers = await asyncio.gather(*(lane.call(pack([b"ECHO", f"m{i}"])) for i in range(10)))
    assert answers == [f"m{i}".encode() for i in range(10)]
    names = [c["name"] for c in await redis.client_list()]
    lib_clients = [c for c in await redis.client_list() if c["cmd"] == "echo"]
    assert len(lib_clients) == 2, names  # size=2: ten calls went over two connections


async def test_an_error_answer_is_raised_and_the_connection_stays_usable(lane: CommandLane) -> None:
    with pytest.raises(ResponseError):
        await lane.call(pack([b"NOSUCHCOMMAND"]))
    assert await lane.call(pack([b"PING"])) in (b"PONG", "PONG", True)


async def test_a_connection_the_server_closed_while_idle_is_replaced_without_an_error(
        lane: CommandLane, redis: Redis) -> None:
    """A Redis restart closes every idle connection; the next ingest must not fail for it."""
    await lane.call(pack([b"CLIENT", b"SETNAME", b"lane-under-test"]))
    killed = await redis.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    assert killed >= 1
    assert await lane.call(pack([b"ECHO", b"after"]), resend=True) == b"after"


async def test_a_connection_seen_closed_while_idle_is_reconnected_before_the_command_is_sent(
        lane: CommandLane, redis: Redis) -> None:
    """Once the server's hang-up has reached the event loop, the command was not sent yet:
    it goes out once, on a new connection, even without `resend`."""
    await lane.call(pack([b"PING"]))
    await redis.delete("lane:test:count")
    await redis.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    await asyncio.sleep(0.1)  # the hang-up arrives
    assert await lane.call(pack([b"INCR", b"lane:test:count"])) == 1
    assert await redis.get("lane:test:count") == b"1"
    await redis.delete("lane:test:count")


@dataclass
class HangUp:
    """A server that hangs up on INCR, unanswered, and answers PING (and the connection
    set-up); what it received."""

    client: Redis
    received: list[bytes]


@contextlib.asynccontextmanager
async def _fake_redis(port: int, serve: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
                      ) -> AsyncIterator[tuple[Redis, list[asyncio.StreamWriter]]]:
    """A TCP server on `port` whose connections `serve` handles, a client of it, and the
    server's side of each connection (closed at the end)."""
    writers: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await serve(reader, writer)

    server = await asyncio.start_server(accept, "127.0.0.1", port)
    client = Redis.from_url(f"redis://127.0.0.1:{port}/0")
    try:
        yield client, writers
    finally:
        await client.aclose()
        server.close()
        for w in writers:
            w.close()
        await server.wait_closed()


@pytest.fixture
async def hang_up(unused_tcp_port: int) -> AsyncIterator[HangUp]:
    received: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            received.append(data)
            if b"INCR" in data:
                writer.close()
                return
            # redis-py's connection set-up (CLIENT SETINFO) and PING
            writer.write(b"+OK\r\n" * data.count(b"CLIENT") + b"+PONG\r\n" * data.count(b"PING"))
            await writer.drain()

    async with _fake_redis(unused_tcp_port, serve) as (client, _):
        yield HangUp(client, received)


async def test_a_command_not_marked_for_resending_is_not_sent_twice(hang_up: HangUp) -> None:
    """A connection lost with the command unanswered (it may have run): without `resend` the
    ConnectionError is the caller's to handle, and the command was sent once only."""
    lane = CommandLane(hang_up.client, size=1, timeout=2.0)
    try:
        assert await lane.call(pack([b"PING"])) in (b"PONG", "PONG", True)
        with pytest.raises(RedisConnectionError):
            await lane.call(pack([b"INCR", b"lane:test:count"]))
        assert sum(chunk.count(b"INCR") for chunk in hang_up.received) == 1
    finally:
        await lane.aclose()


async def test_a_cancelled_call_leaves_no_answer_for_the_next_one(lane: CommandLane, redis: Redis) -> None:
    """Cancelled while Redis still owes it an answer (a blocking pop): that answer must not be
    read as the answer to the next command on the same connection."""
    await redis.delete("lane:test:list")
    one = CommandLane(redis, size=1, timeout=5.0)
    try:
        pending = asyncio.create_task(one.call(pack([b"BLPOP", b"lane:test:list", b"1"])))
        await asyncio.sleep(0.2)
        pending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pending
        await redis.rpush("lane:test:list", "late")  # the BLPOP's answer, had its connection lived
        assert await one.call(pack([b"ECHO", b"mine"])) == b"mine"
    finally:
        await one.aclose()
        await redis.delete("lane:test:list")


async def test_callers_past_the_size_wait_and_a_cancelled_waiter_loses_no_connection(redis: Redis) -> None:
    one = CommandLane(redis, size=1, timeout=5.0)
    try:
        first = asyncio.create_task(one.call(pack([b"BLPOP", b"lane:test:empty", b"0.3"])))
        await asyncio.sleep(0.05)
        gone = asyncio.create_task(one.call(pack([b"ECHO", b"never"])))
        waiting = asyncio.create_task(one.call(pack([b"ECHO", b"second"])))
        await asyncio.sleep(0.05)
        gone.cancel()
        assert await asyncio.wait_for(waiting, 3) == b"second"
        assert await first is None
        assert await one.call(pack([b"ECHO", b"third"])) == b"third"
    finally:
        await one.aclose()


@dataclass
class Silent:
    """A TCP server that accepts and never answers (a Redis that has stopped), and a client of it."""

    client: Redis
    conns: list[asyncio.StreamWriter]


@pytest.fixture
async def silent(unused_tcp_port: int) -> AsyncIterator[Silent]:
    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        return None  # the connection stays open, unanswered

    async with _fake_redis(unused_tcp_port, never_answer) as (client, writers):
        yield Silent(client, writers)


async def test_a_server_that_never_answers_times_out_and_a_later_call_starts_afresh(silent: Silent) -> None:
    lane = CommandLane(silent.client, size=1, timeout=0.3)
    try:
        for _ in range(2):  # the second call gets a new connection, not the stuck one
            with pytest.raises(TimeoutError):
                await lane.call(pack([b"PING"]))
        assert len(silent.conns) == 2
    finally:
        await lane.aclose()


async def test_a_caller_waiting_for_a_connection_has_the_same_deadline(silent: Silent) -> None:
    """Behind a Redis that stopped answering, a caller waiting for the lane's one connection
    fails at its own deadline, not at the deadline of the call ahead of it plus its own."""
    lane = CommandLane(silent.client, size=1, timeout=2.0)
    loop = asyncio.get_running_loop()
    try:
        ahead = asyncio.create_task(lane.call(pack([b"PING"])))
        await asyncio.sleep(1.0)
        started = loop.time()
        with pytest.raises(TimeoutError):
            await lane.call(pack([b"PING"]))  # waits for `ahead`'s connection, which never frees in time
        waited = loop.time() - started
        with pytest.raises(TimeoutError):
            await ahead
        assert waited < 2.6, f"waited {waited:.2f}s: the wait for a connection was not inside the deadline"
    finally:
        await lane.aclose()


async def test_redis_away_is_a_connection_error(unused_tcp_port: int) -> None:
    client = Redis.from_url(f"redis://127.0.0.1:{unused_tcp_port}/0", socket_connect_timeout=1)
    lane = CommandLane(client, size=1)
    try:
        with pytest.raises(RedisConnectionError):
            await lane.call(pack([b"PING"]))
    finally:
        await lane.aclose()
        await client.aclose()


async def test_an_ingest_through_the_lane_writes_what_the_pool_path_writes(redis: Redis, settings: Any) -> None:
    pooled, laned = Store(redis, settings), Store(redis, settings, lane=CommandLane(redis))
    try:
        a = await pooled.ingest("github", "lane-d-1", BODY, {"X-GitHub-Event": "ping"}, "application/json", "x")
        b = await laned.ingest("github", "lane-d-2", BODY, {"X-GitHub-Event": "ping"}, "application/json", "x")
        again = await laned.ingest("github", "lane-d-1", BODY, {}, "application/json", "x")
        ra, rb = await pooled.get(a.event_id), await pooled.get(b.event_id)
        assert ra is not None and rb is not None
        different = {"id", "delivery_id", "received_at", "updated_at"}
        assert {k: v for k, v in ra.items() if k not in different} == \
               {k: v for k, v in rb.items() if k not in different}
        assert again.duplicate and again.event_id == a.event_id
        await redis.script_flush()  # a Redis that lost its scripts: loaded again, no error
        c = await laned.ingest("github", "lane-d-3", BODY, {}, "application/json", "x")
        assert not c.duplicate and await pooled.get(c.event_id) is not None
    finally:
        assert laned.lane is not None
        await laned.lane.aclose()


# -- LaneClient: the worker's client, its hot commands through a lane ---------------------------


@pytest.fixture
async def laned(redis_url: str) -> AsyncIterator[LaneClient]:
    client = connect(redis_url, lane=1)
    assert isinstance(client, LaneClient)
    yield client
    await client.aclose()


async def _lane_connections(redis: Redis, command: str) -> int:
    return sum(1 for c in await redis.client_list() if c["cmd"] == command)


async def test_a_lane_client_answers_its_hot_commands_as_the_pool_does(laned: LaneClient, redis: Redis) -> None:
    await redis.hset("lane:test:h", mapping={"a": "1", "é": "ü"})
    assert await laned.hgetall("lane:test:h") == await redis.hgetall("lane:test:h") == {b"a": b"1",
                                                                                       "é".encode(): "ü".encode()}
    assert await laned.hgetall("lane:test:missing") == {}
    assert await laned.hget("lane:test:h", "a") == b"1"
    assert await laned.hmget("lane:test:h", ["a", "zz"]) == [b"1", None]
    # numbers are sent as redis-py writes them; a boolean is refused, as by the pool
    assert await laned.eval("return {ARGV[1], ARGV[2]}", 0, 12, 1.5) == [b"12", b"1.5"]
    with pytest.raises(DataError):
        await laned.eval("return 1", 0, True)
    await redis.delete("lane:test:h")


async def test_a_lane_client_sends_its_hot_commands_over_its_lane_and_the_rest_over_the_pool(
        laned: LaneClient, redis: Redis) -> None:
    before = await _lane_connections(redis, "hgetall")
    for _ in range(5):
        await laned.hgetall("lane:test:h")
    assert await _lane_connections(redis, "hgetall") == before + 1  # lane=1: one connection, reused
    await laned.set("lane:test:s", "1")  # not a hot command: the pool
    assert await _lane_connections(redis, "hgetall") == before + 1
    await laned.aclose()
    assert await _lane_connections(redis, "hgetall") == before
    await redis.delete("lane:test:s")


async def test_a_lane_client_raises_redis_errors_and_reloads_a_lost_script(laned: LaneClient, redis: Redis) -> None:
    await redis.set("lane:test:s", "x")
    with pytest.raises(ResponseError):  # WRONGTYPE
        await laned.hgetall("lane:test:s")
    with pytest.raises(NoScriptError):
        await laned.evalsha("0" * 40, 0)
    script = laned.register_script("return redis.call('GET', KEYS[1])")
    await redis.script_flush()
    assert await script(keys=["lane:test:s"]) == b"x"  # NoScriptError, loaded, run once
    await redis.delete("lane:test:s")


async def test_a_lane_client_times_out_with_redis_pys_timeout_error(silent: Silent, unused_tcp_port: int) -> None:
    """Callers (the worker's actions among them) tell Redis timeouts from their own by class."""
    client = LaneClient.from_url(f"redis://127.0.0.1:{unused_tcp_port}/0", socket_timeout=0.3).use_lane(1)
    try:
        with pytest.raises(RedisTimeoutError):
            await client.hget("h", "f")
    finally:
        await client.aclose()


async def test_a_lane_clients_transaction_answers_as_the_pools_does(laned: LaneClient, redis: Redis) -> None:
    await redis.set("lane:test:s", "x")
    await redis.hset("lane:test:h", "a", "1")
    results = []
    for client in (laned, redis):
        async with client.pipeline(transaction=True) as pipe:
            pipe.get("lane:test:s")
            pipe.incr("lane:test:n")
            pipe.expire("lane:test:n", 60)
            pipe.hgetall("lane:test:h")
            results.append(await pipe.execute())
    assert results[0] == [b"x", 1, True, {b"a": b"1"}]
    assert results[1] == [b"x", 2, True, {b"a": b"1"}]
    async with laned.pipeline(transaction=False) as pipe:
        pipe.get("lane:test:s")
        pipe.hget("lane:test:h", "a")
        assert await pipe.execute() == [b"x", b"1"]
    await redis.delete("lane:test:s", "lane:test:h", "lane:test:n")


async def test_a_lane_clients_transaction_goes_over_its_lane(laned: LaneClient, redis: Redis) -> None:
    before = await _lane_connections(redis, "exec")
    for _ in range(3):
        async with laned.pipeline(transaction=True) as pipe:
            pipe.incr("lane:test:n")
            await pipe.execute()
    assert await _lane_connections(redis, "exec") == before + 1  # lane=1: one connection, reused
    await laned.set("lane:test:s", "1")  # the pool's connection, not the lane's
    assert await _lane_connections(redis, "exec") == before + 1
    await redis.delete("lane:test:n", "lane:test:s")


async def test_an_error_in_a_lane_transaction_is_raised_and_the_next_one_runs(laned: LaneClient, redis: Redis) -> None:
    await redis.set("lane:test:s", "x")
    async with laned.pipeline(transaction=True) as pipe:
        pipe.incr("lane:test:n")
        pipe.hgetall("lane:test:s")  # WRONGTYPE when it runs; MULTI/EXEC still runs the rest
        with pytest.raises(ResponseError):
            await pipe.execute()
    assert await redis.get("lane:test:n") == b"1"
    async with laned.pipeline(transaction=True) as pipe:
        pipe.incr("lane:test:n")
        assert await pipe.execute() == [2]
    async with laned.pipeline(transaction=True) as pipe:
        pipe.execute_command("NOSUCHCOMMAND")  # refused when queued: EXECABORT, nothing runs
        pipe.incr("lane:test:n")
        with pytest.raises(ResponseError):
            await pipe.execute()
    assert await redis.get("lane:test:n") == b"2"
    await redis.delete("lane:test:s", "lane:test:n")


async def test_a_watching_pipeline_of_a_lane_client_keeps_redis_pys_semantics(laned: LaneClient, redis: Redis) -> None:
    await redis.set("lane:test:w", "1")
    async with laned.pipeline(transaction=True) as pipe:
        await pipe.watch("lane:test:w")
        assert await pipe.get("lane:test:w") == b"1"
        await redis.set("lane:test:w", "2")  # changed under the WATCH
        pipe.multi()
        pipe.set("lane:test:w", "3")
        with pytest.raises(WatchError):
            await pipe.execute()
    assert await redis.get("lane:test:w") == b"2"
    await redis.delete("lane:test:w")


async def test_a_lane_client_encodes_text_as_the_client_is_configured_to(redis_url: str) -> None:
    """UTF-8 text goes out as it is; a client set to another encoding still gets that one."""
    latin = LaneClient.from_url(redis_url, encoding="latin-1").use_lane(1)
    try:
        await latin.execute_command("HSET", "lane:test:enc", "é", "1")  # not a lane command: the pool
        assert await latin.hget("lane:test:enc", "é") == b"1"  # the lane, encoded the same way
        assert await latin.hgetall("lane:test:enc") == {"é".encode("latin-1"): b"1"}
    finally:
        await latin.delete("lane:test:enc")
        await latin.aclose()
