"""Hostile input on the admin API gets a 4xx, never a 5xx: bodies, headers that are not
UTF-8, huge numbers, non-finite cursors, ids with sub-key suffixes."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.ingress.app import create_app
from hub.storage.incidents import IncidentStore
from tests.conftest import make_settings
from tests.test_admin import seed_event
from tests.test_ingress_raw_headers import raw_post

AUTH = {"Authorization": "Bearer test-admin-token"}


async def test_bulk_replay_with_an_undecodable_body_is_400(client: TestClient) -> None:
    resp = await client.post("/admin/replay", data=b"not gzip at all",
                             headers={**AUTH, "Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert resp.status == 400


# -- hostile headers, numbers, cursors and ids: never a 5xx ---------------------------------------



def cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


async def raw_get(port: int, path: bytes, headers: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET " + path + b" HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n" + headers + b"\r\n")
    await writer.drain()
    answer = await reader.read()
    writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


async def test_an_authorization_header_that_is_not_utf8_is_refused_not_a_500(redis_url: str) -> None:
    async with TestClient(TestServer(create_app(make_settings(redis_url)))) as c:
        port = c.server.port
        assert port is not None
        for header in (b"Authorization: Bearer \xff\r\n", b"Authorization: Bearer test-admin-token\xfe\r\n",
                       b"Authorization: \xff\xfe\r\n"):
            status, body = await raw_get(port, b"/admin/summary", header)
            assert status in (401, 403), (header, status, body)
        status, _ = await raw_post(port, b"/admin/replay", b"Authorization: Bearer \xff\r\n", b"{}")
        assert status in (401, 403)


NINES = "9" * 400


@pytest.mark.parametrize("path", [
    f"/admin/events?since={NINES}", f"/admin/events?until={NINES}", f"/admin/events?since={NINES}d",
    f"/admin/events?since={NINES}.5", f"/admin/dead-letters?since={NINES}", "/admin/events?since=1e400",
    f"/admin/events?limit={NINES}", f"/admin/events?cursor={cursor(['Infinity', 'x'])}",
    "/admin/events?cursor=" + base64.urlsafe_b64encode(b'[Infinity,"x"]').decode().rstrip("="),
    "/admin/events?cursor=" + base64.urlsafe_b64encode(b'[NaN,"x"]').decode().rstrip("="),
    "/admin/events?cursor=" + base64.urlsafe_b64encode(b'[-Infinity,"x"]').decode().rstrip("="),
    f"/admin/events?cursor={cursor([10 ** 400, 'x'])}", f"/admin/events?cursor={cursor([1e300, 'x'])}",
    f"/admin/dead-letters?cursor={cursor([10 ** 30, 'x'])}",
    f"/admin/audit?cursor={NINES[:20]}", "/admin/audit?cursor=0-0", "/admin/audit?cursor=0",
    f"/admin/audit?cursor=1-{NINES[:20]}",
])
async def test_huge_numbers_and_non_finite_cursors_are_400(client: TestClient, path: str) -> None:
    resp = await client.get(path, headers=AUTH)
    assert resp.status == 400, (path, resp.status, await resp.text())


async def test_ids_with_sub_key_suffixes_are_400_or_404(client: TestClient, redis: Any) -> None:
    eid = await seed_event(redis)
    for suffix in (":timeline", ":actions", ":actions/x", ":lock", "*", "{x}"):
        for method, path in (("GET", f"/admin/events/{eid}{suffix}"),
                             ("POST", f"/admin/events/{eid}{suffix}/replay"),
                             ("DELETE", f"/admin/dead-letters/{eid}{suffix}/deploy-failed.notify:fp"),
                             ("GET", f"/admin/replays/rp_0123456789ab01234567{suffix}")):
            resp = await client.request(method, path, headers=AUTH)
            assert resp.status in (400, 404, 405), (method, path, resp.status, await resp.text())
    incidents = IncidentStore(redis, 3600)
    await incidents.save("V", {"key": "V", "declared_at": 1, "title": "V"}, [{"type": "opened"}])
    await incidents.add_timer("V", "timer:x", {"timer": "timer:x"})
    for suffix in (":timeline", ":timers", ":lock", "%3Atimeline"):
        resp = await client.post(f"/admin/incidents/V{suffix}/ack", headers=AUTH)
        assert resp.status == 404, (suffix, resp.status, await resp.text())
    assert (await client.post("/admin/incidents/V/ack", headers=AUTH)).status == 200


ID_PIECES = st.sampled_from(["ev_0123456789ab01234567", "rp_0123456789ab01234567", ":timeline", ":actions",
                             ":timers", ":lock", ":items", ":results", "*", "{", "}", "%3A", "..", "%ff", "é"])
NUMBERS = st.sampled_from(["9" * 400, "1e400", "-1", "0", "1" * 25, "nan", "inf", "-inf", "1.5", "",
                           "9" * 20 + "d", "2024-13-45", "0x10"])


OPTIONAL = st.one_of(st.just(""), NUMBERS)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ident=st.lists(ID_PIECES, min_size=1, max_size=4).map("".join), since=OPTIONAL, until=OPTIONAL,
       limit=st.sampled_from(["", "10", "500", "0", "9" * 400]),
       raw_cursor=st.one_of(st.just(None), st.binary(max_size=30),
                            st.tuples(st.one_of(st.floats(), st.integers(), st.text(max_size=5)), st.text(max_size=10))
                            .map(lambda t: json.dumps(list(t)).encode())),
       filters=st.booleans(),
       route=st.sampled_from(["events", "event", "replay", "dead", "purge", "job", "ack", "audit"]))
async def test_admin_inputs_never_answer_5xx(client: TestClient, ident: str, since: str, until: str, limit: str,
                                             raw_cursor: bytes | None, filters: bool, route: str) -> None:
    from urllib.parse import quote

    cur = base64.urlsafe_b64encode(raw_cursor).decode() if raw_cursor is not None else ""
    times = f"since={quote(since)}&until={quote(until)}&limit={limit}&cursor={cur}"
    extra = f"&source={quote(ident)}&kind={quote(ident)}" if filters else ""
    method, path = {
        "events": ("GET", f"/admin/events?{times}{extra}"),
        "event": ("GET", f"/admin/events/{quote(ident)}"),
        "replay": ("POST", f"/admin/events/{quote(ident)}/replay?dry_run=1"),
        "dead": ("GET", f"/admin/dead-letters?since={quote(since)}&cursor={cur}&limit={limit}"),
        "purge": ("DELETE", f"/admin/dead-letters/{quote(ident)}/{quote(ident)}"),
        "job": ("GET", f"/admin/replays/{quote(ident)}"),
        "ack": ("POST", f"/admin/incidents/{quote(ident)}/ack"),
        "audit": ("GET", f"/admin/audit?cursor={quote(since)}&limit={limit}"),
    }[route]
    resp = await client.request(method, path, headers=AUTH)
    assert resp.status < 500, (method, path, resp.status, await resp.text())
