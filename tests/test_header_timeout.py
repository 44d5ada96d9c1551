"""Slow request heads are bounded (HUB_HEADER_TIMEOUT, hub.serving), over a raw socket.

A client trickling one header line at a time (every 0.4 s here, against a 1 s bound) is
answered 408 and disconnected; a client that connects and sends nothing is closed too; a
normal request and a slow *body* (HUB_BODY_TIMEOUT's job) are unaffected; keep-alive
between requests still works.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import pytest

from hub.ingress.app import create_app
from hub.ingress.serving import HubRunner
from tests.conftest import make_settings

HEADER_TIMEOUT = 1.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def hub_port(redis_url: str) -> AsyncIterator[int]:
    from aiohttp import web

    settings = make_settings(redis_url, hub_header_timeout=HEADER_TIMEOUT)
    runner = HubRunner(create_app(settings), header_timeout=settings.hub_header_timeout, access_log=None)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield port
    await runner.cleanup()


async def _read_all(reader: asyncio.StreamReader, limit: float) -> bytes:
    """Everything the server sends until it closes (what arrived before a reset included)."""
    got = b""
    try:
        async with asyncio.timeout(limit):
            while chunk := await reader.read(4096):
                got += chunk
    except (ConnectionError, OSError):
        pass
    return got


async def test_trickled_headers_get_408_and_a_closed_connection(hub_port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", hub_port)
    started = time.monotonic()
    answer = asyncio.create_task(_read_all(reader, 20))
    writer.write(b"POST /webhooks/github HTTP/1.1\r\nHost: x\r\n")
    for i in range(40):  # unbounded, this would hold the connection for 16 s and more
        await asyncio.sleep(0.4)
        if answer.done():
            break
        try:
            writer.write(f"X-Trickle-{i}: {i}\r\n".encode())
            await writer.drain()
        except (ConnectionError, OSError):
            break
    got = await answer
    assert got.startswith(b"HTTP/1.1 408 ") and b"header_timeout" in got
    assert time.monotonic() - started < 10
    writer.close()


async def test_a_silent_connection_is_closed(hub_port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", hub_port)
    answer = await _read_all(reader, 10)
    assert answer.startswith(b"HTTP/1.1 408 ")
    writer.close()


async def test_normal_requests_and_keepalive_are_unaffected(hub_port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", hub_port)
    for _ in range(2):
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 ")
        length = int(next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")).split(b":")[1])
        await reader.readexactly(length)
        await asyncio.sleep(HEADER_TIMEOUT * 1.5)  # idle keep-alive longer than the head bound: still open
    writer.close()


async def test_a_slow_body_is_the_body_timeouts_business(hub_port: int) -> None:
    """Headers complete in time; the body then trickles past HEADER_TIMEOUT: no 408 from the head bound."""
    reader, writer = await asyncio.open_connection("127.0.0.1", hub_port)
    writer.write(b"POST /webhooks/unknown-source HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 4\r\n\r\n{}")
    await writer.drain()
    await asyncio.sleep(HEADER_TIMEOUT * 1.5)
    writer.write(b"  ")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert not head.startswith(b"HTTP/1.1 408 ")
    writer.close()
