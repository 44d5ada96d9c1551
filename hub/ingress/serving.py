"""The web process's HTTP server: aiohttp's, with a bound on how long a request head may take.

aiohttp bounds an idle keep-alive connection, and the ingress bounds the body
(`HUB_BODY_TIMEOUT`), but nothing bounds the request line and headers: a client sending one
header line every few seconds holds a connection (and a file descriptor) for as long as it
likes. Here each connection gets a timer (`HUB_HEADER_TIMEOUT`): armed when the connection
opens and whenever bytes arrive while no request is being handled (a new head has begun),
cancelled as soon as the head is complete. When it fires and the head is still incomplete,
the client gets `408 {"error": "header_timeout"}` and the connection is closed.

The hooks are aiohttp's own request handler (`RequestHandler.data_received`, the idle
waiter its `start()` loop awaits between requests, which its keep-alive check also reads)
and a Server/AppRunner pair that builds that handler for every connection.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from hub.core import heap


def _timeout_response(timeout: float) -> bytes:
    body = json.dumps({"error": "header_timeout",
                       "detail": f"request line and headers not received within {timeout:g}s"}).encode()
    return (b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\nConnection: close\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


class ListenError(Exception):
    """The listening socket could not be bound (port in use, address not local, no permission)."""


class HeaderTimeoutHandler(RequestHandler):
    """A RequestHandler that closes a connection whose request head takes over `header_timeout`."""

    __slots__ = ("_header_handle", "_header_timeout")

    def __init__(self, manager: Any, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._header_handle: asyncio.TimerHandle | None = None

    def _idle(self) -> bool:
        """No complete request yet: the handler loop is waiting for one."""
        return self._waiter is not None and not self._waiter.done()

    def _arm(self) -> None:
        if self._header_handle is None and self._header_timeout > 0:
            self._header_handle = self._loop.call_later(self._header_timeout, self._header_expired)

    def _disarm(self) -> None:
        if self._header_handle is not None:
            self._header_handle.cancel()
            self._header_handle = None

    def _header_expired(self) -> None:
        self._header_handle = None
        if self.transport is None or self._force_close:
            return
        if self._idle() or (self._waiter is None and not self._request_in_progress and not self._messages):
            self.transport.write(_timeout_response(self._header_timeout))
            self.force_close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()  # the first request's head, even if no byte ever comes

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._waiter is not None and self._waiter.done():
            self._disarm()  # a complete head was parsed: the handler takes it from here
        elif data and self._idle():
            self._arm()  # bytes of a new head while idle: it must complete in time
        elif self._request_in_progress:
            self._disarm()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)


class HubServer(web.Server):
    """aiohttp's Server, making a HeaderTimeoutHandler per connection."""

    def __init__(self, *args: Any, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout = header_timeout

    def __call__(self) -> RequestHandler:
        return HeaderTimeoutHandler(self, loop=self._loop, header_timeout=self._header_timeout, **self._kwargs)


class HubRunner(web.AppRunner):
    """An AppRunner whose server bounds request heads (see the module docstring)."""

    __slots__ = ("_header_timeout",)

    def __init__(self, app: web.Application, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._header_timeout = header_timeout

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()
        return HubServer(plain.request_handler, request_factory=plain.request_factory,
                         handler_cancellation=plain.handler_cancellation, loop=asyncio.get_running_loop(),
                         header_timeout=self._header_timeout, **self._kwargs)


def serve(app: web.Application, host: str, port: int, *, header_timeout: float, reuse_port: bool = False,
          on_ready: Callable[[], None] = lambda: None, shutdown_timeout: float = 60.0) -> None:
    """Serve `app` until SIGINT or SIGTERM (what `web.run_app` does, with HubRunner).

    `reuse_port`: SO_REUSEPORT, so that several processes (one core each) listen on one port
    and the kernel spreads new connections over them.
    """

    async def main() -> None:
        # aiohttp's run_app defaults: keep-alive 75 s, no access log (the hub logs what matters)
        runner = HubRunner(app, header_timeout=header_timeout, access_log=None, keepalive_timeout=75.0,
                           handle_signals=False, shutdown_timeout=shutdown_timeout)
        await runner.setup()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            try:
                await web.TCPSite(runner, host, port, reuse_port=reuse_port or None).start()
            except OSError as e:
                raise ListenError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
            heap.settle()  # after the app and its stores are built (hub.core.heap)
            on_ready()
            await stop.wait()
        finally:
            await runner.cleanup()

    asyncio.run(main())
