"""Redis connections kept for the hot path: the ingress's ingest script, the worker's exchanges.

redis-py's pool does, for every command it lends a connection to, work the ingest does not
need: it takes a pool-wide lock and, while holding it, probes the connection with a
zero-timeout read (a timer, a cancelled future and one whole event-loop turn), so only one
command per loop turn can leave; it packs arguments through a generic encoder and runs each
send under `wait_for` (a task per send). Under load that was 40 % of the ingress's CPU per request
and half its throughput (measured in `bench/README.md`).

A `CommandLane` owns its connections (made from the client's own connection class and
settings, so TCP, TLS, unix sockets and Sentinel alike) and lends each to one command at a
time. What the pool's probe guarded against cannot happen here: a connection goes back to
the lane only after its answer was read or after redis-py closed it (it does so on any error
or cancellation in a send or a read). A connection the server closed while it was idle
(a Redis restart) fails its next send or read. The caller says whether the command may then
be sent once more on a new connection (`resend`): only a command whose repeat is harmless,
such as the ingest script, which answers a repeat with the first event's id (dedup).
A connection whose end-of-stream has already arrived is reconnected before it is used, as
the pool's probe would, without the probe's loop turn: that command was never sent.

`LaneClient` is the worker's client (`hub.worker.app`): its hot commands (`LANE_COMMANDS`:
the scripts and reads each event makes) and its pipelines and MULTI/EXEC transactions
(arq's own among them) take its lane; a pipeline that WATCHes, and every other command,
take redis-py's pool as before. A transaction a script has already run for the task
(`answered_ahead`) is answered from that script's result instead of being sent.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from typing import Any, TypeVar

from arq.connections import ArqRedis
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from hub.core.deadlines import Deadlines

#: The commands a `LaneClient` sends through its lane: those every event's run makes (the
#: worker's scripts, its record and window reads). Each is answered by one reply.
LANE_COMMANDS = frozenset({"EVALSHA", "EVAL", "HGETALL", "HGET", "HMGET"})

T = TypeVar("T")

log = logging.getLogger("hub.storage.lane")


class Answered:
    """A transaction that a script already ran atomically for this task, with its answers
    (as the pipeline would give them: after the response callbacks)."""

    __slots__ = ("answers", "commands")

    def __init__(self, commands: list[tuple[Any, ...]], answers: list[Any]) -> None:
        self.commands = commands
        self.answers = answers


#: Set for one task: that task's next `LanePipeline` transaction is answered from it, without
#: a round trip, if it queues exactly `commands` (else it is sent, with a warning: the script
#: ran them already). Used once, either way.
answered_ahead: ContextVar[Answered | None] = ContextVar("answered_ahead", default=None)


def pack(args: Sequence[bytes | str]) -> bytes:
    """One command in the Redis protocol (RESP arrays of bulk strings). Text is UTF-8, strict,
    as redis-py's own encoder writes it."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        parts += (b"$%d\r\n" % len(data), data, b"\r\n")
    return b"".join(parts)


class CommandLane:
    """Up to `size` connections, each lent to one command at a time (see the module docstring).

    `timeout` bounds a command's wait for a connection, send and read together (one deadline,
    not one per step; `hub.core.deadlines`: one timer for all commands in flight); when it
    passes, a connection in use is closed and `TimeoutError` is raised.
    """

    def __init__(self, redis: Redis, *, size: int = 32, timeout: float = 5.0) -> None:
        pool = redis.connection_pool
        # No per-step socket timeout on these connections: `call` bounds the whole command.
        self._kwargs = {**pool.connection_kwargs, "socket_timeout": None}
        self._connection_class = pool.connection_class
        self._size = size
        self._timeout = timeout
        self._deadlines = Deadlines(timeout)  # one timer for every command in flight
        self._idle: list[AbstractConnection] = []
        self._all: list[AbstractConnection] = []
        self._waiting: deque[asyncio.Future[AbstractConnection]] = deque()

    async def call(self, packed: bytes, *, resend: bool = False) -> Any:
        """Send one packed command and return its parsed answer (a ResponseError is raised).

        `resend`: when a connection that sat idle turns out closed by the server, send the
        command once more on a new one (only for commands whose repeat is harmless). Without
        it, that ConnectionError is raised like any other.

        The timeout covers the wait for a free connection too: a Redis that has stopped
        answering costs a caller `timeout`, not `timeout` per caller ahead of it.
        """
        with self._deadlines.bound():
            conn = self._idle.pop() if self._idle else await self._take()
            try:
                if conn.is_connected and _closed_by_server(conn):
                    await conn.disconnect()  # the server hung up while it sat idle: nothing was sent
                was_connected = conn.is_connected
                try:
                    await conn.send_packed_command(packed)
                    return await conn.read_response()
                except RedisConnectionError:
                    if not (resend and was_connected):
                        raise  # not to be repeated, or a fresh connection failed: Redis is away
                    # closed while idle (redis-py has closed our side): once more, newly connected
                    await conn.send_packed_command(packed)
                    return await conn.read_response()
            finally:
                self._give_back(conn)

    async def run(self, use: Callable[[AbstractConnection], Awaitable[T]]) -> T:
        """`use(connection)` on a lent connection, under the same deadline as `call` (for a
        transaction: several commands written at once, every answer read). If `use` raises,
        the connection is closed: what it still owes cannot be read as a later answer."""
        with self._deadlines.bound():
            conn = self._idle.pop() if self._idle else await self._take()
            try:
                if conn.is_connected and _closed_by_server(conn):
                    await conn.disconnect()
                return await use(conn)
            except BaseException:
                await conn.disconnect(nowait=True)
                raise
            finally:
                self._give_back(conn)

    @property
    def timeout(self) -> float:
        return self._timeout

    async def _take(self) -> AbstractConnection:
        if len(self._all) < self._size:
            conn = self._connection_class(**self._kwargs)
            self._all.append(conn)
            return conn
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._give_back(waiter.result())  # handed over just as we were cancelled
            raise

    def _give_back(self, conn: AbstractConnection) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._idle.append(conn)

    async def aclose(self) -> None:
        """Close every connection (idle or not; a command still running fails)."""
        conns, self._all, self._idle = self._all, [], []
        for conn in conns:
            await conn.disconnect(nowait=True)


def _closed_by_server(conn: AbstractConnection) -> bool:
    """Whether the server's end-of-stream has arrived on an idle connection (a Redis restart).

    A cheap, synchronous form of the pool's probe: redis-py keeps an asyncio StreamReader,
    which marks the end as soon as the event loop sees it."""
    reader = getattr(conn, "_reader", None)
    return isinstance(reader, asyncio.StreamReader) and reader.at_eof()


class LaneClient(ArqRedis):
    """An ArqRedis whose `LANE_COMMANDS` and pipelines go through a `CommandLane` (`use_lane`).

    Answers are parsed by the same response callbacks as on the pool (HGETALL is a dict), a
    lane timeout is redis-py's `TimeoutError` as on the pool, and nothing is sent twice
    (`resend` is never used here: these commands include writes). Every other command, and
    a pipeline that WATCHes, use the pool, unchanged.
    """

    lane: CommandLane | None = None
    _text_as_is = False

    def use_lane(self, size: int) -> LaneClient:
        """Give this client a lane of `size` connections, with the pool's socket timeout as its deadline."""
        timeout = self.connection_pool.connection_kwargs.get("socket_timeout") or 30.0
        self.lane = CommandLane(self, size=size, timeout=timeout)
        encoder = self.connection_pool.get_encoder()
        # text as UTF-8, strict, directly when that is how the client encodes (the default)
        self._text_as_is = (encoder.encoding.lower().replace("-", "") == "utf8" and encoder.encoding_errors == "strict")
        self._encode = encoder.encode
        return self

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        lane = self.lane
        # `keys` is redis-py's note for its client-side cache (not used here); any other option
        # changes how the answer is parsed: the pool's path then
        if lane is None or args[0] not in LANE_COMMANDS or (options and options.keys() - {"keys"}):
            return await super().execute_command(*args, **options)
        command = args[0]
        try:
            response = await lane.call(pack([a if type(a) is bytes or (type(a) is str and self._text_as_is)
                                              else self._encode(a) for a in args]))
        except TimeoutError as e:
            raise RedisTimeoutError(f"Redis did not answer {command} within {lane.timeout:g}s") from e
        callback = self.response_callbacks.get(command)
        return callback(response) if callback is not None else response

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        pipe = LanePipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)
        pipe.lane = self.lane
        return pipe

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        lane, self.lane = self.lane, None
        if lane is not None:
            await lane.aclose()
        await super().aclose(close_connection_pool)


class LanePipeline(Pipeline):
    """A pipeline of a `LaneClient`: queued commands (MULTI/EXEC or not) sent over the lane.

    redis-py's own code writes the commands and reads every answer (so errors, EXECABORT
    and response callbacks are exactly the pool's); what the lane saves is the pool's probe
    and a timer per answer (one deadline for the whole exchange). A pipeline that WATCHes
    (its commands run at once on a pool connection), has scripts to load, or has no lane
    takes redis-py's path unchanged.
    """

    lane: CommandLane | None = None

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        lane, stack = self.lane, self.command_stack
        ahead = answered_ahead.get()
        if ahead is not None and self.is_transaction and stack:
            answered_ahead.set(None)
            if [args for args, _options in stack] == ahead.commands:
                await self.reset()
                return list(ahead.answers)
            log.warning("a transaction differs from the one run ahead for it; sending it: %r", stack[0][0])
        if lane is None or not stack or self.watching or self.connection is not None or self.scripts:
            return await super().execute(raise_on_error)
        send = (self._execute_transaction if self.is_transaction or self.explicit_transaction
                else self._execute_pipeline)
        try:
            return await lane.run(lambda conn: send(conn, stack, raise_on_error))  # type: ignore[arg-type]
        except TimeoutError as e:
            raise RedisTimeoutError(f"Redis did not answer a pipeline within {lane.timeout:g}s") from e
        finally:
            await self.reset()
