"""Bad input against a real `incident-hub serve` subprocess: hypothesis-generated requests at
every endpoint, plus slow senders.

Properties: never a 5xx; every error the application answers is the contract's JSON; nothing
is written to Redis by a request that is not authentic (the key count is checked around each
one); the process is alive at the end and its resident memory grew by less than 50 MB.

`RELIABILITY_FUZZ_EXAMPLES` sets the number of requests (default 4000, about 40 s here;
10000 for the full run).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
import random
import time
import zlib
from collections import Counter
from collections.abc import AsyncIterator
from functools import cache
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.core.registry import sources
from hub.ingress.verify import sign_hex_hmac
from tests.conftest import FIXTURES
from tests.reliability.harness import ADMIN_TOKEN, Cluster, signing_settings
from tests.test_fuzz_ingress import AUTH_HEADERS, CONTENT_TYPES, SOURCES, header_text, json_values, mutate, sample

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

EXAMPLES = int(os.environ.get("RELIABILITY_FUZZ_EXAMPLES", "4000"))
BODY_LIMIT = 1024 * 1024
BODY_TIMEOUT_S = 1.0
RSS_BOUND_MB = 50
ADMIN_PATHS = ("/admin/events", "/admin/events/{id}", "/admin/events/{id}/replay", "/admin/replay",
               "/admin/dead-letters", "/admin/dead-letters/{id}/{id}", "/admin/replays/{id}", "/admin/summary",
               "/admin/audit", "/admin/incidents", "/admin/incidents/{id}", "/admin/openapi.json", "/admin")
OTHER_PATHS = ("/healthz", "/readyz", "/metrics", "/", "/webhooks", "/webhooks/", "/webhooks/github/extra",
               "/favicon.ico", "/admin/../webhooks/github", "/%00", "/webhooks/%2e%2e")
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS")
ENCODINGS = ("gzip", "deflate", "br", "identity", "gzip, deflate", "x-garbage")

SETTINGS = signing_settings()
TALLY: Counter[str] = Counter()
NON_JSON: Counter[str] = Counter()
PROTOCOL_LEVEL = (400, 417)


class Fuzzed:
    """What the test needs across examples: the hub, one HTTP client, a Redis client."""

    def __init__(self, cluster: Cluster, http: aiohttp.ClientSession) -> None:
        self.cluster = cluster
        self.http = http
        self.accepted: set[str] = set()


@pytest.fixture
async def fuzzed(make_cluster) -> AsyncIterator[Fuzzed]:
    cluster = await make_cluster({"HUB_BODY_TIMEOUT": str(BODY_TIMEOUT_S), "HUB_LOG_LEVEL": "ERROR"},
                                 workers=0).start()
    # A connection per request: one the hub closed after a malformed request is not reused
    # (that would fail the *next* request, a client-side artefact).
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20), auto_decompress=False,
                                     connector=aiohttp.TCPConnector(force_close=True)) as http:
        yield Fuzzed(cluster, http)


# -- request strategies ---------------------------------------------------------------------------

ids = st.one_of(st.just("ev_0123456789ab01234567"), st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E,
                                                                             exclude_characters="/?#%"), max_size=40))


@st.composite
def bodies(draw: Any, source: str) -> bytes:
    kind = draw(st.sampled_from(["binary", "json", "fixture", "large", "empty"]))
    if kind == "binary":
        return draw(st.binary(max_size=400))
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    if kind == "fixture":
        changed, _ = mutate(SimpleNamespace(draw=draw), sample(source if source in SOURCES else "github"))
        return json.dumps(changed).encode()
    if kind == "large":  # around the 1 MiB limit, either side
        return Big(draw(st.sampled_from([BODY_LIMIT - 1, BODY_LIMIT, BODY_LIMIT + 1, 3 * BODY_LIMIT])))
    return b""


class Big(bytes):
    """A large random body that shows as its size in hypothesis' reports."""

    def __new__(cls, size: int) -> Big:
        return super().__new__(cls, random.Random(size).randbytes(size))

    def __repr__(self) -> str:
        return f"Big({len(self)})"


@cache
def gzip_bomb() -> bytes:
    """64 MiB of zeros in about 64 KB."""
    return gzip.compress(b"\0" * (64 * BODY_LIMIT), compresslevel=9)


def encode(body: bytes, encoding: str) -> bytes:
    """A body compressed as the header claims (a large one is swapped for a gzip bomb)."""
    if encoding == "gzip":
        return gzip.compress(body) if len(body) < 1000 else gzip_bomb()
    if encoding == "deflate":
        return zlib.compress(body)
    return body


@st.composite
def webhook_requests(draw: Any) -> dict[str, Any]:
    source = draw(st.sampled_from((*SOURCES, "nagios", "GITHUB", "datadog%00")))
    body = draw(bodies(source))
    auth = draw(st.sampled_from(["none", "garbage", "garbage", "authentic"]))
    headers: dict[str, str] = {"Content-Type": draw(st.one_of(st.sampled_from(CONTENT_TYPES), header_text))}
    if auth == "garbage":
        for name in draw(st.lists(st.sampled_from(AUTH_HEADERS), min_size=1, max_size=4, unique=True)):
            headers[name] = draw(header_text)
    if draw(st.integers(0, 5)) == 0:
        encoding = draw(st.sampled_from(ENCODINGS))
        headers["Content-Encoding"] = encoding
        body = encode(body, encoding) if draw(st.booleans()) else body
    if auth == "authentic" and source in SOURCES:
        github_event = draw(st.sampled_from(["deployment", "deployment_status", "workflow_run", "ping"]))
        signed = (sources()[source].sign_request(body, SETTINGS) if source != "github" else {
            "X-Hub-Signature-256": "sha256=" + sign_hex_hmac(SETTINGS.github_webhook_secret[0], body),
            "X-GitHub-Event": github_event, "X-GitHub-Delivery": f"fuzz-{draw(st.uuids())}"})
        headers = {**signed, **{k: v for k, v in headers.items() if k != "Content-Type"},
                   "Content-Type": headers["Content-Type"] if draw(st.booleans()) else "application/json"}
    else:
        auth = "unauthenticated"
    method = "POST" if draw(st.integers(0, 9)) else draw(st.sampled_from(METHODS))
    return {"kind": "webhook", "auth": auth, "method": method, "path": f"/webhooks/{source}", "headers": headers,
            "body": body, "chunked": draw(st.integers(0, 7)) == 0}


@st.composite
def admin_requests(draw: Any) -> dict[str, Any]:
    path = draw(st.sampled_from(ADMIN_PATHS)).replace("{id}", draw(ids))
    token = draw(st.sampled_from(["none", "wrong", "basic", "right"]))
    method = draw(st.sampled_from(METHODS))
    if token == "right" and method not in ("GET", "HEAD"):
        token = "wrong"  # an authorised write (replay, purge) is meant to write: not this test's business
    query = draw(st.dictionaries(st.sampled_from(["limit", "cursor", "status", "state", "source", "kind", "since",
                                                  "until", "dry_run", "force", "q"]), header_text, max_size=4))
    headers = {"none": {}, "wrong": {"Authorization": f"Bearer {draw(header_text)}"},
               "basic": {"Authorization": "Basic " + draw(header_text)},
               "right": {"Authorization": f"Bearer {ADMIN_TOKEN}"}}[token]
    body = draw(st.one_of(st.just(b""), st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode())))
    return {"kind": "admin", "auth": "admin" if token == "right" else "unauthenticated", "method": method,
            "path": path, "query": query, "headers": {**headers, "Content-Type": "application/json"}, "body": body,
            "chunked": False}


@st.composite
def other_requests(draw: Any) -> dict[str, Any]:
    path = draw(st.one_of(st.sampled_from(OTHER_PATHS),
                          st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="#?"),
                                  max_size=60).map(lambda p: "/" + p)))
    method = draw(st.one_of(st.sampled_from(METHODS), st.from_regex(r"\A[A-Z]{1,12}\Z")))
    headers = {n: draw(header_text) for n in draw(st.lists(st.sampled_from(
        ["Accept", "Accept-Encoding", "X-Forwarded-For", "Cookie", "Range", "If-None-Match", "Expect"]),
        max_size=3, unique=True))}
    return {"kind": "other", "auth": "unauthenticated", "method": method, "path": path, "headers": headers,
            "body": draw(st.binary(max_size=100)), "chunked": False}


RAW_GARBAGE = (
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"POST /webhooks/github HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nContent-Length: 20\r\n\r\n0123456789",
    b"POST /webhooks/github HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    b"POST /webhooks/github HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0"
    b"\r\n\r\n",
    b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nX-Big: " + b"b" * 20000 + b"\r\n\r\n",
    b"GET / HTTP/9.9\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS hello on the plain port
    b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: \xff\xfe\r\n\r\n",
)


@st.composite
def raw_requests(draw: Any) -> dict[str, Any]:
    head = b"POST /webhooks/datadog HTTP/1.1\r\n"
    data = draw(st.one_of(st.sampled_from(RAW_GARBAGE), st.binary(min_size=1, max_size=300),
                          st.binary(max_size=200).map(lambda b: head + b + b"\r\n\r\n")))
    return {"kind": "raw", "auth": "unauthenticated", "data": data}


requests_ = st.one_of(webhook_requests(), webhook_requests(), admin_requests(), other_requests(), raw_requests())


# -- sending and checking ------------------------------------------------------------------------


async def send_raw(url: str, data: bytes) -> int | None:
    """Write raw bytes; the status of the answer, or None when the server just closed."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(data)
        await writer.drain()
        if not data.endswith(b"\r\n\r\n"):
            writer.write_eof()
        line = await asyncio.wait_for(reader.readline(), 10)
    except (ConnectionError, OSError):
        return None
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    if not line:
        return None
    return int(line.split()[1])


async def send(f: Fuzzed, req: dict[str, Any]) -> tuple[int | None, dict[str, str], bytes]:
    if req["kind"] == "raw":
        return await send_raw(f.cluster.url, req["data"]), {}, b""
    data: Any = req["body"]
    if req["chunked"]:
        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(req["body"]), 4096):
                yield req["body"][i:i + 4096]
        data = chunks()
    async with f.http.request(req["method"], f.cluster.url + req["path"], params=req.get("query"),
                              headers=req["headers"], data=data, skip_auto_headers=["Content-Type"]) as resp:
        return resp.status, dict(resp.headers), await resp.read()


async def attempt(f: Fuzzed, req: dict[str, Any]) -> tuple[int | None, dict[str, str], bytes] | None:
    """`send`, or None when the *client* library refuses to build the request (not the hub's doing)."""
    try:
        return await send(f, req)
    except (ValueError, aiohttp.InvalidURL) as e:
        TALLY[f"not sendable by the client: {type(e).__name__}"] += 1
        return None
    except aiohttp.ClientResponseError as e:
        # aiohttp's own protocol-level 400 (e.g. an unsupported Content-Encoding) carries a body
        # even when the request was HEAD, which the client then cannot parse.
        if req.get("method") != "HEAD" or e.status != 400:
            raise
        TALLY["HEAD refused by aiohttp's parser with a body"] += 1
        return None
    except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError):
        # The hub may answer before reading a body (413 from Content-Length, 404 for an unknown
        # source) and then drop the connection rather than drain a body it cannot use (one too
        # big, or not decodable as its Content-Encoding says); the client can then lose the
        # answer. For those the connection drop is the refusal; for anything else it is a failure.
        awkward = (len(req.get("body", b"")) > BODY_LIMIT or req.get("chunked")
                   or "Content-Encoding" in req.get("headers", {}))
        if not awkward:
            raise
        async with f.http.get(f.cluster.url + "/healthz") as resp:
            assert resp.status == 200
        TALLY["body not read: connection closed after an early answer"] += 1
        return None


def check(req: dict[str, Any], status: int | None, headers: dict[str, str], body: bytes, accepted: set[str]) -> None:
    label = f"{req['kind']}/{req['auth']} → {status}"
    TALLY[label] += 1
    if status is None:
        assert req["kind"] == "raw", "the server dropped a well-formed request"
        return
    readiness = req.get("path") == "/readyz" and status == 503  # no worker in this test: "not ready" is right
    assert status < 500 or readiness, (req.get("method"), req.get("path"), status, body[:300])
    if req["kind"] == "raw":
        return
    if status >= 400 and req["method"] != "HEAD" and not readiness:
        try:
            data = json.loads(body)
        except ValueError:
            # Only aiohttp's own protocol-level refusals, answered before the application runs
            # (an unknown `Expect`, a body its parser cannot decode), are plain text.
            assert status in PROTOCOL_LEVEL and headers.get("Content-Type", "").startswith("text/plain"), (
                f"not a JSON error: {req['method']} {req['path']} → {status} {body[:200]!r} {req['headers']}")
            NON_JSON[f"{status} {body[:60].decode(errors='replace')}"] += 1
            return
        assert set(data) == {"error", "detail"} and data["error"] and data["detail"], data
    if req["auth"] == "unauthenticated":
        assert status != 202, req
    if status == 202:
        data = json.loads(body)
        assert data["status"] in ("accepted", "duplicate")
        accepted.add(data["event_id"])


# -- the tests -------------------------------------------------------------------------------------


async def test_fuzzed_requests_never_5xx_store_nothing_unauthenticated_and_leak_no_memory(fuzzed, figures) -> None:
    f = fuzzed
    redis = f.cluster.redis_client
    web = f.cluster.web
    assert web is not None
    for _ in range(200):  # warm up (imports, caches, connection pools) before the first RSS sample
        async with f.http.get(f.cluster.url + "/healthz") as resp:
            assert resp.status == 200
    rss_before = web.rss_kb()
    started = time.monotonic()

    loop = asyncio.get_running_loop()

    async def example(req: dict[str, Any]) -> None:
        before = await redis.dbsize()
        answer = await attempt(f, req)
        if answer is None:
            return
        status, headers, body = answer
        check(req, status, headers, body, f.accepted)
        if req["auth"] != "authentic" or status != 202:
            assert await redis.dbsize() == before, ("keys written by a refused request", req.get("path"), status)

    # Hypothesis drives examples synchronously, so it runs in a thread and hands each request
    # to this loop (where the HTTP session and the Redis client live).
    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(req=requests_)
    def one(req: dict[str, Any]) -> None:
        asyncio.run_coroutine_threadsafe(example(req), loop).result(timeout=60)

    await asyncio.to_thread(one)
    took = time.monotonic() - started
    rss_after = web.rss_kb()
    alive = web.alive
    keys = [k.decode() async for k in redis.scan_iter(count=1000)]
    stray = [k for k in keys if not any(e in k for e in f.accepted)
             and not k.startswith(("hub:dedup:", "hub:idx:", "hub:pending", "arq:queue"))]
    figures.update(requests=EXAMPLES, seconds=round(took, 1), requests_per_s=round(EXAMPLES / took),
                   outcomes=dict(TALLY.most_common()), web_alive=alive, rss_before_mb=round(rss_before / 1024, 1),
                   rss_after_mb=round(rss_after / 1024, 1), rss_growth_mb=round((rss_after - rss_before) / 1024, 1),
                   accepted_events=len(f.accepted), stray_keys=stray[:10], plain_text_protocol_refusals=dict(NON_JSON))
    assert alive
    assert rss_after - rss_before < RSS_BOUND_MB * 1024
    assert stray == []
    assert await redis.zcard("hub:idx:all") == len(f.accepted)
    assert sum(1 for k in keys if k.startswith("hub:dedup:")) == len(f.accepted)


async def test_undecodable_content_encoding_is_a_json_400(fuzzed) -> None:
    """A body that is not what its Content-Encoding says is bad input (400), not a server error;
    a real gzip body is read as the bytes it decodes to, and a gzip bomb stops at the size limit."""
    f = fuzzed
    url = f.cluster.url + "/webhooks/datadog"
    auth = {"Authorization": f"Bearer {SETTINGS.datadog_webhook_token[0]}", "Content-Type": "application/json"}
    before = await f.cluster.redis_client.dbsize()
    answers = []
    for body in (b"\0\0", b"{}", b"not gzip at all"):
        async with f.http.post(url, data=body, headers={**auth, "Content-Encoding": "gzip"}) as resp:
            answers.append((resp.status, await resp.json()))
    assert [(s, a["error"]) for s, a in answers] == [(400, "undecodable_body")] * 3
    assert all("gzip" in a["detail"] for _, a in answers)
    async with f.http.post(url, data=gzip_bomb(), headers={**auth, "Content-Encoding": "gzip"}) as resp:
        assert (resp.status, (await resp.json())["error"]) == (413, "too_large")
    assert await f.cluster.redis_client.dbsize() == before
    fixture = (FIXTURES / "datadog_alert_triggered.json").read_bytes()
    async with f.http.post(url, data=gzip.compress(fixture), headers={**auth, "Content-Encoding": "gzip"}) as resp:
        accepted = await resp.json()
        assert resp.status == 202, accepted
    stored = await f.cluster.redis_client.hget(f"hub:ev:{accepted['event_id']}", "body")
    assert stored == fixture  # the decoded bytes, as the sender meant them
    assert f.cluster.web.alive


async def test_admin_audit_with_a_bad_cursor_is_a_json_400(fuzzed) -> None:
    """Found by the fuzz: a cursor that is not a stream id made Redis refuse XREVRANGE (a 500)."""
    f = fuzzed
    answers = {}
    for cursor in (":", "abc", "1-2-3", "1\n", "1700000000000-0"):
        async with f.http.get(f.cluster.url + "/admin/audit", params={"cursor": cursor},
                              headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as resp:
            answers[cursor] = (resp.status, await resp.json())
    for cursor in (":", "abc", "1-2-3", "1\n"):
        status, body = answers[cursor]
        assert (status, body["error"]) == (400, "bad_request") and "cursor" in body["detail"], (cursor, body)
    assert answers["1700000000000-0"] == (200, {"audit": [], "next_cursor": None})


async def test_slow_senders_get_408_and_do_not_starve_others(fuzzed, figures) -> None:
    """Slowloris: bodies trickled past HUB_BODY_TIMEOUT get a JSON 408; headers never finished
    hold a connection each but do not stop the hub answering everyone else."""
    f = fuzzed
    host, port = f.cluster.url.removeprefix("http://").split(":")
    before = await f.cluster.redis_client.dbsize()

    async def slow_body() -> tuple[int, dict[str, Any], float]:
        reader, writer = await asyncio.open_connection(host, int(port))
        started = time.monotonic()
        writer.write(b"POST /webhooks/github HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{")
        try:
            async def trickle() -> None:
                for _ in range(100):
                    await asyncio.sleep(0.3)
                    writer.write(b" ")
                    await writer.drain()
            dribbler = asyncio.create_task(trickle())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            payload = json.loads(await reader.readexactly(length))
            dribbler.cancel()
            return int(head.split()[1]), payload, time.monotonic() - started
        finally:
            writer.close()

    async def slow_headers() -> asyncio.StreamWriter:
        _, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /webhooks/github HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        await writer.drain()
        return writer

    holders = [await slow_headers() for _ in range(50)]
    try:
        results = await asyncio.gather(*(slow_body() for _ in range(20)))
        async with f.http.get(f.cluster.url + "/healthz") as resp:  # everyone else is still served
            healthy = resp.status
    finally:
        for w in holders:
            w.close()
    statuses = Counter(status for status, _, _ in results)
    figures.update(slow_bodies=len(results), slow_header_connections=len(holders), statuses=dict(statuses),
                   seconds_to_408=round(max(t for _, _, t in results), 2))
    assert statuses == {408: len(results)}
    assert all(body["error"] == "body_timeout" and body["detail"] for _, body, _ in results)
    assert all(BODY_TIMEOUT_S <= t < BODY_TIMEOUT_S + 5 for _, _, t in results)
    assert healthy == 200 and f.cluster.web.alive
    assert await f.cluster.redis_client.dbsize() == before
