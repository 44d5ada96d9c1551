"""What every fake upstream shares: a real loopback server, a request log, and fault switches."""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web
from aiohttp.test_utils import TestServer


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    #: When it arrived (`time.monotonic()`): benches measure pacing from it.
    at: float = field(default_factory=time.monotonic)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Fault:
    """One scripted misbehaviour, used once: a status (with optional Retry-After), a stall or a reset."""

    status: int | None = None
    body: str = ""
    retry_after: str | None = None
    stall: float = 0.0
    reset: bool = False

    async def apply(self, request: web.Request) -> web.Response | None:
        """Misbehave on this request: stall, then reset the connection or answer the status."""
        if self.stall:
            await asyncio.sleep(self.stall)
        if self.reset:
            assert request.transport is not None
            request.transport.close()
            raise asyncio.CancelledError
        if self.status:
            headers = {"Retry-After": self.retry_after} if self.retry_after else None
            return web.Response(status=self.status, text=self.body, headers=headers)
        return None


@dataclass
class FakeUpstream:
    """Subclasses add routes in `routes()`; `faults` are consumed first-in first-out."""

    requests: list[Recorded] = field(default_factory=list)
    faults: deque[Fault] = field(default_factory=deque)
    server: TestServer | None = None
    #: Awaited as each request arrives, before it is answered (tests look at the hub's state then).
    on_request: Callable[[], Awaitable[None]] | None = None

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(Recorded(request.method, request.path, dict(request.query),
                                      dict(request.headers), body))
        if self.on_request is not None:
            await self.on_request()
        if self.faults:
            answer = await self.faults.popleft().apply(request)
            if answer is not None:
                return answer
        return await handler(request)

    async def start(self) -> FakeUpstream:
        app = web.Application(middlewares=[self._record])
        self.routes(app)
        self.server = TestServer(app)
        await self.server.start_server()
        return self

    async def close(self) -> None:
        if self.server:
            await self.server.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    def calls(self, path: str | None = None, method: str | None = None) -> list[Recorded]:
        return [r for r in self.requests if (path is None or r.path == path) and (method is None or r.method == method)]
