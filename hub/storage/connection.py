"""One place that turns REDIS_URL into a client, so web, worker and CLI connect alike.

Besides `redis://`, `rediss://` and `unix://`, a Sentinel URL is accepted:
`redis+sentinel://[:password@]host1:26379,host2:26379/<master-name>[/<db>]`.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from arq.connections import ArqRedis
from redis import exceptions as redis_errors
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.exceptions import WatchError

from hub.storage.lane import LaneClient

T = TypeVar("T", bound=ArqRedis)

#: Short timeouts: the ingress must answer 503 quickly when Redis is away, not hang.
SOCKET_TIMEOUT = 5.0
CONNECT_TIMEOUT = 2.0

#: Redis failures that mean "unavailable, try again shortly": the ingress answers 503 (nothing
#: recorded), the admin API 503, the worker supervisor restarts the worker. Never a 500.
REDIS_UNAVAILABLE: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError, redis_errors.TimeoutError, redis_errors.BusyLoadingError,
    redis_errors.ReadOnlyError, redis_errors.TryAgainError, ConnectionError, OSError, asyncio.TimeoutError)


def json_dumps(obj: Any) -> bytes:
    """arq job serializer: JSON, never pickle (a queue must not be a code-execution channel)."""
    return json.dumps(obj, default=str).encode()


def json_loads(data: bytes) -> Any:
    return json.loads(data)


def _json_jobs(client: T) -> T:
    client.job_serializer = json_dumps
    client.job_deserializer = json_loads
    return client


def connection_lost(e: WatchError) -> bool:
    """Whether a WatchError is an outage in disguise: redis-py raises it while handling the
    ConnectionError (or timeout) of a connection lost under WATCH, not for a watched key
    that changed. Decided by the exception it was raised from, never by its wording."""
    cause = e.__cause__ or e.__context__
    return isinstance(cause, RedisConnectionError | RedisTimeoutError | ConnectionError | TimeoutError | OSError)


def connect(url: str, *, socket_timeout: float = SOCKET_TIMEOUT, max_connections: int | None = None,
            lane: int = 0) -> ArqRedis:
    """An ArqRedis client (a redis.asyncio.Redis that can also enqueue arq jobs, as JSON).

    `lane`: that many connections of its own for the hot commands (`hub.storage.lane.LaneClient`).
    """
    if lane:
        return _json_jobs(_open(url, socket_timeout, max_connections, LaneClient)).use_lane(lane)
    return _json_jobs(_open(url, socket_timeout, max_connections, ArqRedis))


def _open(url: str, socket_timeout: float, max_connections: int | None, cls: type[T]) -> T:
    if url.startswith("redis+sentinel://"):
        return _sentinel(url, socket_timeout, cls)
    kwargs = {"socket_timeout": socket_timeout, "socket_connect_timeout": CONNECT_TIMEOUT,
              "health_check_interval": 15}
    if max_connections:
        kwargs["max_connections"] = max_connections
    return cls.from_url(url, **kwargs)


def _sentinel(url: str, socket_timeout: float, cls: type[T]) -> T:
    parts = urlsplit(url)
    password = unquote(parts.password) if parts.password else None
    hosts = []
    netloc = parts.netloc.rsplit("@", 1)[-1]
    for hp in netloc.split(","):
        host, _, port = hp.partition(":")
        hosts.append((host, int(port or 26379)))
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise ValueError("Sentinel URL needs the master name: redis+sentinel://host:26379/mymaster")
    master = path[0]
    db = int(path[1]) if len(path) > 1 else 0
    sentinel = Sentinel(hosts, socket_timeout=socket_timeout, socket_connect_timeout=CONNECT_TIMEOUT,
                        sentinel_kwargs={"password": password} if password else None)
    return sentinel.master_for(master, redis_class=cls, db=db, password=password,
                               socket_timeout=socket_timeout, socket_connect_timeout=CONNECT_TIMEOUT)
