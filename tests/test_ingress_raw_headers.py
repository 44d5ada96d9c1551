"""Header bytes that are not UTF-8, sent over a raw socket (an HTTP client would not send them).

aiohttp keeps such bytes as surrogate escapes in `str`; they reached the dedup key and the
token comparison and answered 500. They must give a clear 4xx, or be recorded like any other
delivery, the same way on every retry.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from hub.ingress.app import create_app
from tests.conftest import fixture_request, make_settings


async def raw_post(port: int, path: bytes, headers: bytes, body: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST " + path + b" HTTP/1.1\r\nHost: hub\r\nConnection: close\r\nContent-Length: "
                 + str(len(body)).encode() + b"\r\n" + headers + b"\r\n" + body)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


async def test_a_delivery_id_that_is_not_utf8_is_recorded_and_its_retry_is_a_duplicate(redis_url: str,
                                                                                      redis: Any) -> None:
    body, headers = fixture_request("github_deployment_status_failure.json")
    raw = b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items() if k != "X-GitHub-Delivery")
    raw += b"X-GitHub-Delivery: 7b2e\xff\xfe-delivery\r\n"
    async with TestClient(TestServer(create_app(make_settings(redis_url)))) as client:
        port = client.server.port
        assert port is not None
        first = await raw_post(port, b"/webhooks/github", raw, body)
        again = await raw_post(port, b"/webhooks/github", raw, body)
    assert first[0] == 202 and again[0] == 202, (first, again)
    accepted, duplicate = json.loads(first[1]), json.loads(again[1])
    assert (accepted["status"], duplicate["status"]) == ("accepted", "duplicate")
    assert duplicate["event_id"] == accepted["event_id"]
    delivery = await redis.hget(f"hub:ev:{accepted['event_id']}", "delivery_id")
    assert delivery.decode() == "7b2e\ufffd\ufffd-delivery"


async def test_a_token_that_is_not_utf8_is_401(redis_url: str, redis: Any) -> None:
    body = b'{"id": "1", "title": "[Triggered] x", "alert_transition": "Triggered"}'
    settings = make_settings(redis_url, datadog_webhook_token="dd-token")
    async with TestClient(TestServer(create_app(settings))) as client:
        port = client.server.port
        assert port is not None
        status, answer = await raw_post(port, b"/webhooks/datadog", b"Content-Type: application/json\r\n"
                                                                    b"Authorization: Bearer dd-\xfftoken\r\n", body)
    assert status == 401, answer
    assert await redis.keys("hub:ev:*") == []
