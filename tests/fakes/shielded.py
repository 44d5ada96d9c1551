"""A fake upstream that, like a real API server, finishes a request even if the client hangs up.

aiohttp's test server cancels a handler when its client disconnects. A real Statuspage or
Jira does not: a create that was slow to answer still happens. That is exactly the
ambiguous failure the connectors must survive (timeout, then success on the server side),
so these fakes shield each request from the client's disconnect.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.fakes.base import FakeUpstream


class ShieldedUpstream(FakeUpstream):
    def middlewares(self) -> list[Any]:
        """Extra middlewares after recording and faults (e.g. authentication)."""
        return []

    @web.middleware
    async def _shield(self, request: web.Request, handler: Any) -> web.StreamResponse:
        return await asyncio.shield(handler(request))

    async def start(self) -> ShieldedUpstream:
        app = web.Application(middlewares=[self._shield, self._record, *self.middlewares()])
        self.routes(app)
        self.server = TestServer(app)
        await self.server.start_server()
        return self
