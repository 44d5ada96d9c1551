"""Admin API: auth on every endpoint, listings and filters, one event in full, dead letters, purge, audit.

Also holds `seed_event` / `seed_many`, which write events straight into the store's data
model (the other operator tests import them to stay fast).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from hub.ingress.app import create_app
from hub.storage.event_store import (
    DEAD,
    FINAL_STATES,
    IDX_ALL,
    KINDS,
    PENDING,
    actions_key,
    dumps,
    ev_key,
    kind_idx,
    new_event_id,
    now_ms,
    source_idx,
    state_idx,
    timeline_key,
)
from tests.conftest import make_settings

TOKEN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def action(aid: str = "deploy-failed.notify:fp", state: str = "dead", attempts: int = 1, status: int | None = 404,
           error: str | None = "HTTP 404: channel_not_found", connector: str = "slack", at: int | None = None
           ) -> dict[str, Any]:
    t = at or now_ms()
    return {"id": aid, "name": f"{connector}.notify", "connector": connector, "action": "notify",
            "workflow": "deploy-failed", "state": state, "idempotency_key": f"{aid}:key", "params": {"text": "hi"},
            "attempts": [{"at": t + i, "status": status, "outcome": "permanent" if state == "dead" else state,
                          "error": error, "duration_ms": 3.2, "response": "channel_not_found", "ambiguous": False}
                         for i in range(attempts)],
            "result": {}, "next_at": None, "error": error if state == "dead" else None, "created_at": t}


def _write(p: Any, event_id: str, ms: int, source: str, state: str, kinds: tuple[str, ...],
           actions: list[dict[str, Any]], body: bytes) -> None:
    events = [{"kind": k, "source": source, "fingerprint": f"{source}:fp:{event_id}", "severity": "SEV2",
               "services": ["checkout"], "title": f"{k} on checkout"} for k in kinds]
    p.hset(ev_key(event_id), mapping={
        "source": source, "state": state, "received_at": ms, "updated_at": ms, "delivery_id": f"d-{event_id}",
        "content_type": "application/json", "headers": "{}", "verified": "test", "size": len(body), "body": body,
        "kinds": ",".join(kinds), "events": json.dumps(events)})
    for key in (IDX_ALL, source_idx(source), state_idx(state), *(kind_idx(k) for k in kinds)):
        p.zadd(key, {event_id: ms})
    for k in kinds:
        p.sadd(KINDS, k)
    if state not in FINAL_STATES:
        p.zadd(PENDING, {event_id: ms})
    for a in actions:
        p.hset(actions_key(event_id), a["id"], dumps(a))
        if a["state"] == "dead":
            p.zadd(DEAD, {f"{event_id}/{a['id']}": ms})
    p.rpush(timeline_key(event_id), dumps({"at": ms, "type": "received", "source": source,
                                           "delivery_id": f"d-{event_id}", "size": len(body), "verified": "test"}))


async def seed_event(redis: Any, *, source: str = "github", state: str = "dead",
                     kinds: tuple[str, ...] = ("deploy.failed",), received_ms: int | None = None,
                     actions: list[dict[str, Any]] | None = None, event_id: str | None = None,
                     body: bytes = b'{"hello": "world"}') -> str:
    ms = received_ms or now_ms()
    eid = event_id or new_event_id(ms)
    if actions is None:
        actions = [action(state="dead")] if state in ("dead", "partially_failed") else []
    async with redis.pipeline(transaction=False) as p:
        _write(p, eid, ms, source, state, kinds, actions, body)
        await p.execute()
    return eid


async def seed_many(redis: Any, n: int, *, start_ms: int | None = None, step_ms: int = 1, **kw: Any) -> list[str]:
    """n events, one per `step_ms` going back in time from `start_ms` (step 0 = all the same ms)."""
    start = start_ms or now_ms() - 10_000
    ids = []
    async with redis.pipeline(transaction=False) as p:
        for i in range(n):
            ms = start - i * step_ms
            eid = new_event_id(ms)
            state = kw.get("state", "dead")
            acts = kw.get("actions")
            if acts is None:
                acts = [action(state="dead", at=ms)] if state in ("dead", "partially_failed") else []
            _write(p, eid, ms, kw.get("source", "github"), state, kw.get("kinds", ("deploy.failed",)), acts,
                   b"{}")
            ids.append(eid)
        await p.execute()
    return ids


# -- auth ---------------------------------------------------------------------------------------

ENDPOINTS = [
    ("GET", "/admin/events"), ("GET", "/admin/events/ev_0000000000001234abcd"),
    ("POST", "/admin/events/ev_0000000000001234abcd/replay"), ("POST", "/admin/replay"),
    ("GET", "/admin/replays"), ("GET", "/admin/replays/rp_0000000000001234abcd"), ("GET", "/admin/dead-letters"),
    ("DELETE", "/admin/dead-letters/ev_0000000000001234abcd/slack.notify"), ("GET", "/admin/summary"),
    ("GET", "/admin/audit"), ("GET", "/admin/incidents"), ("GET", "/admin/incidents/alertmanager%3Ag%2F1"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
async def test_every_endpoint_needs_the_token(client: TestClient, method: str, path: str) -> None:
    none = await client.request(method, path)
    assert none.status == 401
    assert (await none.json())["error"] == "missing_token"
    assert none.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = await client.request(method, path, headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status == 403
    assert (await wrong.json())["error"] == "bad_token"
    basic = await client.request(method, path, headers={"Authorization": "Basic dGVzdDp0ZXN0"})
    assert basic.status == 401
    right = await client.request(method, path, headers=AUTH)
    assert right.status not in (401, 403, 503) and right.status < 500
    assert right.content_type == "application/json"


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
async def test_unset_token_disables_the_admin_api(redis_url: str, method: str, path: str) -> None:
    settings = make_settings(redis_url, hub_admin_token="")
    async with TestClient(TestServer(create_app(settings))) as c:
        resp = await c.request(method, path, headers=AUTH)
        assert resp.status == 503
        assert (await resp.json())["error"] == "admin_disabled"
        page = await c.get("/admin")
        assert page.status == 200 and "HUB_ADMIN_TOKEN" in await page.text()


async def test_rotated_named_tokens_are_both_accepted_and_audited_by_name(redis_url: str, redis: Any) -> None:
    settings = make_settings(redis_url, hub_admin_token="alice:old-secret-1, bob:new-secret-2")
    eid = await seed_event(redis)
    async with TestClient(TestServer(create_app(settings))) as c:
        for token, name in (("old-secret-1", "alice"), ("new-secret-2", "bob")):
            resp = await c.get("/admin/summary", headers={"Authorization": f"Bearer {token}"})
            assert resp.status == 200 and (await resp.json())["you"] == name
        assert (await c.get("/admin/summary", headers={"Authorization": "Bearer alice:old-secret-1"})).status == 403
        resp = await c.delete(f"/admin/dead-letters/{eid}/deploy-failed.notify:fp",
                              headers={"Authorization": "Bearer new-secret-2"})
        assert resp.status == 200
        audit = await (await c.get("/admin/audit", headers={"Authorization": "Bearer old-secret-1"})).json()
    (entry,) = audit["audit"]
    assert entry["who"] == "bob" and entry["action"] == "purge"
    assert entry["target"] == f"{eid}/deploy-failed.notify:fp"
    raw = [v for _, fields in await redis.xrange("hub:audit") for v in fields.values()]
    assert not any(b"secret" in v for v in raw)  # token values never reach Redis


async def test_page_and_openapi_are_public_and_describe_every_route(client: TestClient) -> None:
    page = await client.get("/admin")
    assert page.status == 200 and page.content_type == "text/html"
    html = await page.text()
    assert "sessionStorage" in html and 'data-testid="events"' in html
    nonce = page.headers["Content-Security-Policy"].split("'nonce-")[1].split("'")[0]
    assert f'<script nonce="{nonce}">' in html
    doc = await (await client.get("/admin/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    routes = {(r.method, r.resource.canonical) for r in client.app.router.routes()
              if r.resource and r.resource.canonical.startswith("/admin/") and r.method != "HEAD"}
    for method, path in routes:
        if path in ("/admin/", "/admin/openapi.json"):
            continue
        documented = path.replace("{id:.+}", "{id}")
        assert method.lower() in doc["paths"][documented], (method, path)


# -- listing ------------------------------------------------------------------------------------

async def test_list_newest_first_with_filters(client: TestClient, redis: Any) -> None:
    base = now_ms() - 60_000
    a = await seed_event(redis, source="github", state="done", received_ms=base, actions=[])
    b = await seed_event(redis, source="grafana", state="dead", kinds=("alert.firing",), received_ms=base + 1000)
    c = await seed_event(redis, source="github", state="partially_failed", received_ms=base + 2000)
    d = await seed_event(redis, source="github", state="dead", received_ms=base + 3000)

    async def ids(query: str) -> list[str]:
        resp = await client.get(f"/admin/events?{query}", headers=AUTH)
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        assert body["next_cursor"] is None
        return [e["id"] for e in body["events"]]

    assert await ids("") == [d, c, b, a]
    assert await ids("status=dead") == [d, b]
    assert await ids("status=failed") == [d, c, b]
    assert await ids("source=github&status=dead") == [d]
    assert await ids("kind=alert.firing") == [b]
    assert await ids("source=github&kind=deploy.failed&status=done") == [a]
    assert await ids(f"since={base + 1500}") == [d, c]
    assert await ids(f"until={(base + 1500) / 1000}") == [b, a]
    row = (await (await client.get("/admin/events?limit=1", headers=AUTH)).json())["events"][0]
    assert {row["id"], row["source"], row["state"], row["received_at"]} == {d, "github", "dead", base + 3000}
    assert row["kinds"] == ["deploy.failed"]


@pytest.mark.parametrize("query", ["status=nope", "since=yesterday-ish", "limit=0", "limit=abc", "limit=501",
                                   "cursor=%%%", "cursor=bm90LWpzb24"])
async def test_bad_listing_input_is_a_400_with_a_sentence(client: TestClient, query: str) -> None:
    resp = await client.get(f"/admin/events?{query}", headers=AUTH)
    assert resp.status == 400
    body = await resp.json()
    assert body["error"] == "bad_request" and len(body["detail"]) > 10


async def test_rare_match_comes_back_in_short_pages_never_a_full_scan(client: TestClient, redis: Any) -> None:
    """Both filters are large but rarely together: each request examines a bounded number of entries."""
    start = now_ms() - 100_000
    await seed_many(redis, 1200, start_ms=start, source="github", state="dead")
    await seed_many(redis, 1200, start_ms=start - 5000, step_ms=1, source="grafana", state="done",
                    kinds=("alert.firing",), actions=[])
    wanted = [await seed_event(redis, source="grafana", state="dead", kinds=("alert.firing",),
                               received_ms=start - 20_000 - i) for i in range(3)]
    found: list[str] = []
    cursor = None
    requests = 0
    while True:
        q = "source=grafana&status=dead&limit=10" + (f"&cursor={cursor}" if cursor else "")
        body = await (await client.get(f"/admin/events?{q}", headers=AUTH)).json()
        requests += 1
        assert body["scanned"] <= 200
        found += [e["id"] for e in body["events"]]
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert found == wanted
    assert requests > 1


# -- one event ------------------------------------------------------------------------------------

async def test_event_detail_has_record_events_actions_timeline_payload(client: TestClient, redis: Any) -> None:
    eid = await seed_event(redis, actions=[action(attempts=2)], body=b'{"deployment": {"id": 7}}')
    resp = await client.get(f"/admin/events/{eid}", headers=AUTH)
    assert resp.status == 200
    d = await resp.json()
    assert d["id"] == eid and d["state"] == "dead" and d["source"] == "github" and d["delivery_id"] == f"d-{eid}"
    assert d["events"][0]["kind"] == "deploy.failed" and d["events"][0]["severity"] == "SEV2"
    (a,) = d["actions"]
    assert a["name"] == "slack.notify" and a["state"] == "dead" and a["dead_letter"] is True
    assert [x["status"] for x in a["attempts"]] == [404, 404]
    assert d["timeline"][0]["type"] == "received"
    assert d["payload"] == {"deployment": {"id": 7}}
    assert "body" not in d


async def test_event_detail_is_strict_json_when_the_payload_held_nan(client: TestClient, redis: Any) -> None:
    """JSON has no NaN; a sender that writes it must not make the event unreadable on the admin page."""
    eid = await seed_event(redis, body=b'{"deployment": {"id": 7, "ratio": NaN, "limit": -Infinity}}')
    resp = await client.get(f"/admin/events/{eid}", headers=AUTH)
    assert resp.status == 200
    d = json.loads(await resp.text(), parse_constant=_refuse)
    assert d["payload"] == {"deployment": {"id": 7, "ratio": None, "limit": None}}


def _refuse(name: str) -> Any:
    raise ValueError(f"not JSON: {name}")


async def test_unknown_event_is_404_and_bad_id_is_400(client: TestClient) -> None:
    resp = await client.get("/admin/events/ev_000000000000deadbeef", headers=AUTH)
    assert resp.status == 404 and (await resp.json())["error"] == "not_found"
    resp = await client.get("/admin/events/" + "x" * 300, headers=AUTH)
    assert resp.status == 400


# -- dead letters and purge ---------------------------------------------------------------------

async def test_dead_letters_list_and_purge_is_recorded(client: TestClient, redis: Any) -> None:
    old = await seed_event(redis, source="grafana", received_ms=now_ms() - 5000)
    new = await seed_event(redis, source="github")
    body = await (await client.get("/admin/dead-letters", headers=AUTH)).json()
    assert body["total"] == 2
    assert [d["event_id"] for d in body["dead_letters"]] == [new, old]
    first = body["dead_letters"][0]
    assert first["id"] == f"{new}/deploy-failed.notify:fp" and first["connector"] == "slack"
    assert first["error"] == "HTTP 404: channel_not_found" and first["last_status"] == 404
    only = await (await client.get("/admin/dead-letters?source=grafana", headers=AUTH)).json()
    assert [d["event_id"] for d in only["dead_letters"]] == [old]

    resp = await client.delete(f"/admin/dead-letters/{old}/deploy-failed.notify:fp", headers=AUTH)
    assert resp.status == 200 and (await resp.json())["status"] == "purged"
    again = await client.delete(f"/admin/dead-letters/{old}/deploy-failed.notify:fp", headers=AUTH)
    assert again.status == 404
    assert await redis.zscore(DEAD, f"{old}/deploy-failed.notify:fp") is None
    detail = await (await client.get(f"/admin/events/{old}", headers=AUTH)).json()
    assert detail["timeline"][-1]["type"] == "purged" and detail["timeline"][-1]["by"] == "admin"
    assert detail["actions"][0]["dead_letter"] is False
    bad = await client.delete("/admin/dead-letters/no-slash-here", headers=AUTH)
    assert bad.status == 400


async def test_action_ids_with_slashes_purge_by_full_id(client: TestClient, redis: Any) -> None:
    aid = "deploy-failed.notify:github:deploy:octocat/Hello-World:145988746"
    eid = await seed_event(redis, actions=[action(aid=aid)])
    resp = await client.delete(f"/admin/dead-letters/{eid}/{aid}", headers=AUTH)
    assert resp.status == 200 and (await resp.json())["action_id"] == aid


async def test_summary_counts(client: TestClient, redis: Any) -> None:
    await seed_event(redis, state="done", actions=[])
    await seed_event(redis, state="dead")
    body = await (await client.get("/admin/summary", headers=AUTH)).json()
    assert body["states"]["done"] == 1 and body["states"]["dead"] == 1 and body["dead_letters"] == 1


async def test_redis_down_is_a_503_not_a_crash(redis_url: str) -> None:
    settings = make_settings("redis://127.0.0.1:1/0")  # nothing listens on port 1
    async with TestClient(TestServer(create_app(settings))) as c:
        for method, path in (("GET", "/admin/events"), ("POST", "/admin/events/ev_000000000000deadbeef/replay")):
            resp = await c.request(method, path, headers=AUTH)
            assert resp.status == 503 and resp.headers["Retry-After"] == "5"
            assert (await resp.json())["error"] == "unavailable"
        assert (await c.get("/admin")).status == 200  # the page itself needs no Redis
