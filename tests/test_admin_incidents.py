"""Incidents for operators (issue 12, item 6): GET /admin/incidents[/{key}], `incidents list|show`, and an
event's detail naming the incident it opened or joined. Real Redis, the real web app over loopback; the
end-to-end case runs the real worker against fake upstreams.

`seed_incident` writes incidents the way the worker does (`advance` then `IncidentStore.save`, whose
timeline lines for a group's alerts also keep the alert records), so the other cases stay fast.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from hub.cli.main import main
from hub.core.events import NormalisedEvent
from hub.ingress.app import create_app
from hub.operators.incidents import incident_detail, list_incidents
from hub.operators.queries import Cursor
from hub.storage import alert_groups
from hub.storage.connection import connect
from hub.storage.event_store import now_ms
from hub.storage.incidents import INDEX, IncidentStore, advance
from tests.conftest import make_settings
from tests.test_admin import AUTH
from tests.test_admin import TOKEN as TOKEN_ADMIN
from tests.test_alert_groups import TOKEN, triggers
from tests.test_browser_admin import browser  # noqa: F401
from tests.test_cli_ops import cli_env, cli_json  # noqa: F401
from tests.test_correlation import AUTH as DATADOG_AUTH
from tests.test_correlation import checkout_group, monitor, rules
from tests.test_workflows_e2e import Hub, Upstreams

RETENTION = 3600


def alert(fp: str, kind: str = "alert.firing", source: str = "datadog", group: str | None = None,
          title: str = "", services: tuple[str, ...] = ("checkout",)) -> NormalisedEvent:
    attributes = {alert_groups.GROUP_ATTR: group, "group_key": f"{{}}:{group}", "group_status": "firing"} \
        if group else {}
    return NormalisedEvent(kind=kind, source=source, fingerprint=fp, severity="SEV2", services=list(services),
                           title=title or f"{fp} is down", attributes=attributes)


async def seed_incident(redis: Any, key: str, at_ms: int, *, resolved: bool = False, alerts: int = 0,
                        title: str = "") -> None:
    """An incident declared at `at_ms`: one alert of its own, or a sender group of `alerts` alerts."""
    store = IncidentStore(redis, RETENTION)
    state = None
    events = [alert(key, title=title)] if not alerts else [
        alert(f"{key}/a{i}", source="alertmanager", group=key, title=title or f"{key} alert {i}")
        for i in range(alerts)]
    changes: list[dict[str, Any]] = [{"type": "opened"}]
    for i, ev in enumerate(events):
        state = advance(state, ev, key, at_ms + i)
        if alerts:
            changes.append(alert_groups.member_entry(ev, f"ev_{i:020x}", at_ms + i))
    assert state is not None
    if resolved:
        state["resolved_at"] = at_ms + 1000
    state["page_dedup_key"] = key
    await store.save(key, state, changes)


async def all_pages(client: TestClient, query: str, limit: int) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor = None
    while True:
        url = f"/admin/incidents?limit={limit}&{query}" + (f"&cursor={cursor}" if cursor else "")
        resp = await client.get(url, headers=AUTH)
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        pages.append([i["key"] for i in body["incidents"]])
        cursor = body["next_cursor"]
        if not cursor:
            return pages


async def test_listing_pages_newest_first_without_gaps_or_repeats_and_filters(client: TestClient,
                                                                              redis: Any) -> None:
    base = now_ms() - 600_000
    for i in range(45):  # three incidents per declaration time: the cursor must order ties too
        await seed_incident(redis, f"datadog:monitor/{i}", base + (i // 3) * 1000, resolved=i % 4 == 0)
    everything = [m.decode() for m in await redis.zrevrange(INDEX, 0, -1)]
    assert len(everything) == 45
    pages = await all_pages(client, "", 7)
    assert [len(p) for p in pages] == [7] * 6 + [3]
    assert [k for p in pages for k in p] == everything

    resolved = {f"datadog:monitor/{i}" for i in range(45) if i % 4 == 0}
    opened = await all_pages(client, "state=open", 5)
    assert [k for p in opened for k in p] == [k for k in everything if k not in resolved]
    closed = await all_pages(client, "state=resolved", 5)
    assert [k for p in closed for k in p] == [k for k in everything if k in resolved]

    since = (base + 10_000) // 1000  # epoch seconds: declared at base+10 s or later (incidents 30..44)
    recent = await all_pages(client, f"since={since}", 4)
    assert sorted(k for p in recent for k in p) == sorted(f"datadog:monitor/{i}" for i in range(30, 45))


async def test_a_new_incident_between_pages_is_neither_repeated_nor_shifts_the_next_page(
        client: TestClient, redis: Any) -> None:
    base = now_ms() - 60_000
    for i in range(6):
        await seed_incident(redis, f"k{i}", base + i)
    first = await (await client.get("/admin/incidents?limit=3", headers=AUTH)).json()
    assert [i["key"] for i in first["incidents"]] == ["k5", "k4", "k3"]
    await seed_incident(redis, "k-new", base + 100)
    rest = await (await client.get(f"/admin/incidents?limit=3&cursor={first['next_cursor']}",
                                   headers=AUTH)).json()
    assert [i["key"] for i in rest["incidents"]] == ["k2", "k1", "k0"]
    end = await (await client.get(f"/admin/incidents?limit=3&cursor={rest['next_cursor']}", headers=AUTH)).json()
    assert end == {"incidents": [], "next_cursor": None, "scanned": 0}  # a full page may end the list


async def test_rows_say_state_alerts_sources_and_page(client: TestClient, redis: Any) -> None:
    at = now_ms() - 5000
    await seed_incident(redis, "am:group/checkout", at, alerts=3, title="Checkout down")
    await seed_incident(redis, "datadog:m1", at + 10, resolved=True)
    body = await (await client.get("/admin/incidents", headers=AUTH)).json()
    resolved, group = body["incidents"]
    assert group["key"] == "am:group/checkout" and group["state"] == "open" and group["alert_count"] == 3
    assert group["group"] == "{}:am:group/checkout" and group["sources"] == ["alertmanager"]
    assert group["page_dedup_key"] == "am:group/checkout" and group["declared_at"] == at
    assert group["services"] == ["checkout"] and group["severity"] == "SEV2" and group["episode"] == 1
    assert resolved["key"] == "datadog:m1" and resolved["state"] == "resolved" and resolved["alert_count"] == 1
    assert resolved["resolved_at"] == at + 1010 and resolved["acknowledged_at"] is None
    assert resolved["kind"] == "alert" and resolved["linked"] == {}


async def test_detail_has_record_alerts_timers_and_timeline_and_keys_with_colons_and_slashes(
        client: TestClient, redis: Any) -> None:
    key = "alertmanager:{}:{alertname=\"Down\"}/x"
    await seed_incident(redis, key, now_ms() - 5000, alerts=2)
    await IncidentStore(redis, RETENTION).add_timer(key, "timer:x:page:escalate", {"workflow": "page",
                                                                                    "step": "escalate",
                                                                                    "due_ms": now_ms() + 60_000})
    resp = await client.get(URL(f"/admin/incidents/{quote(key, safe='')}", encoded=True), headers=AUTH)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["key"] == key and body["incident"]["alert_count"] == 2 and body["incident"]["record"]["key"] == key
    assert [a["fingerprint"] for a in body["alerts"]] == [f"{key}/a0", f"{key}/a1"]
    first = body["alerts"][0]
    assert first["status"] == "firing" and first["source"] == "alertmanager" and first["first_seen"] > 0
    assert first["last_seen"] >= first["first_seen"] and first["title"] == f"{key} alert 0"
    assert body["alerts_total"] == 2 and body["alerts_truncated"] is False
    assert [t["type"] for t in body["timeline"]] == ["opened", "alert", "alert"]
    assert body["timers"] == [{"id": "timer:x:page:escalate", "workflow": "page", "step": "escalate",
                               "due_ms": body["timers"][0]["due_ms"]}]
    acked = await client.post(URL(f"/admin/incidents/{quote(key, safe='')}/ack", encoded=True), headers=AUTH)
    assert acked.status == 200 and (await acked.json())["incident"] == key  # braces and all
    await redis.set("hub:incident-alias:pd-dedup-1", key)  # an alias (a page's key) finds it too
    alias = await (await client.get("/admin/incidents/pd-dedup-1", headers=AUTH)).json()
    assert alias["key"] == key and alias["alias_of"] == key

    missing = await client.get("/admin/incidents/no%2Fsuch%3Aincident", headers=AUTH)
    assert missing.status == 404 and (await missing.json())["error"] == "not_found"


async def test_a_large_group_lists_a_bounded_number_of_alerts_and_says_so(redis: Any) -> None:
    await seed_incident(redis, "am:big", now_ms() - 5000, alerts=12)
    detail = await incident_detail(redis, "am:big", retention_s=RETENTION, alerts_limit=5)
    assert detail is not None
    assert len(detail["alerts"]) == 5 and detail["alerts_total"] == 12 and detail["alerts_truncated"] is True
    assert len({a["fingerprint"] for a in detail["alerts"]}) == 5
    assert detail["incident"]["alert_count"] == 12


@pytest.mark.parametrize("query", ["limit=0", "limit=abc", "limit=100000", "cursor=not-a-cursor",
                                   "cursor=WzFlNDAwLCJ4Il0", "state=flapping", "since=last%20tuesday"])
async def test_bad_input_is_a_400_naming_the_problem(client: TestClient, query: str) -> None:
    resp = await client.get(f"/admin/incidents?{query}", headers=AUTH)
    assert resp.status == 400, await resp.text()
    body = await resp.json()
    assert body["error"] == "bad_request" and body["detail"]


async def test_no_token_is_a_401_and_redis_down_a_503() -> None:
    settings = make_settings("redis://127.0.0.1:1/0")  # nothing listens on port 1
    async with TestClient(TestServer(create_app(settings))) as c:
        for path in ("/admin/incidents", "/admin/incidents/k"):
            assert (await c.get(path)).status == 401
            resp = await c.get(path, headers=AUTH)
            assert resp.status == 503 and (await resp.json())["error"] == "unavailable"


async def test_a_cursor_whose_incident_left_the_index_still_continues_below_it(redis: Any) -> None:
    base = now_ms() - 60_000
    for i in range(5):
        await seed_incident(redis, f"k{i}", base + i)
    first = await list_incidents(redis, 2)
    assert [i["key"] for i in first.items] == ["k4", "k3"]
    await redis.zrem(INDEX, "k3")  # trimmed between two pages
    rest = await list_incidents(redis, 10, first.next_cursor)
    assert [i["key"] for i in rest.items] == ["k2", "k1", "k0"]
    assert Cursor.decode(first.next_cursor or "").member == "k3"


# -- end to end: the worker's incidents as the API and an event's detail show them --------------

async def test_a_correlated_incident_end_to_end(redis_url: str, redis: Any, upstreams: Upstreams,
                                                tmp_path: Path) -> None:
    settings = upstreams.settings(redis_url, alertmanager_webhook_token=TOKEN, hub_config=rules(tmp_path))
    async with Hub(settings, redis) as hub:
        group = await hub.send("alertmanager", checkout_group(aaaa="firing", bbbb="firing"))
        (key,) = triggers(upstreams)
        joined = await hub.send("datadog", monitor(), headers=DATADOG_AUTH)
        fp = joined["events"][0]["fingerprint"]
        client = hub._client
        assert client is not None

        listing = await (await client.get("/admin/incidents", headers=AUTH)).json()
        (row,) = listing["incidents"]
        assert row["key"] == key and row["state"] == "open" and row["alert_count"] == 3
        assert row["sources"] == ["alertmanager", "datadog"] and row["page_dedup_key"] == key
        assert row["linked"].get("incidentio_id")  # the outside incident the alert opened

        detail = await (await client.get(f"/admin/incidents/{quote(key, safe='')}", headers=AUTH)).json()
        assert len(detail["alerts"]) == 2 and {a["status"] for a in detail["alerts"]} == {"firing"}
        assert detail["joined"] == [{"incident": fp, "status": "firing", "at": detail["joined"][0]["at"]}]
        types = [t["type"] for t in detail["timeline"]]
        assert types[0] == "opened" and types.count("alert") == 2 and "joined" in types

        shown = await (await client.get(f"/admin/events/{group['id']}", headers=AUTH)).json()
        assert [(i["key"], i["relation"], i["state"], i["alerts"]) for i in shown["incidents"]] == [
            (key, "opened", "open", 2)]
        shown = await (await client.get(f"/admin/events/{joined['id']}", headers=AUTH)).json()
        assert [(i["key"], i["relation"]) for i in shown["incidents"]] == [(key, "joined")]
        resolved = await hub.send("alertmanager", checkout_group(aaaa="resolved", bbbb="resolved"))
        shown = await (await client.get(f"/admin/events/{resolved['id']}", headers=AUTH)).json()
        assert [(i["key"], i["relation"]) for i in shown["incidents"]] == [(key, "updated")]


async def test_a_delivery_worked_in_chunks_names_its_incident_from_the_chunks_pins(
        redis_url: str, redis: Any, upstreams: Upstreams) -> None:
    settings = upstreams.settings(redis_url, alertmanager_webhook_token=TOKEN, hub_max_alerts_per_job=1)
    async with Hub(settings, redis) as hub:
        group = await hub.send("alertmanager", checkout_group(aaaa="firing", bbbb="firing", cccc="firing"))
        assert int((await hub.store.get(group["id"]))["chunks"]) == 3
        (key,) = triggers(upstreams)
        assert hub._client is not None
        shown = await (await hub._client.get(f"/admin/events/{group['id']}", headers=AUTH)).json()
    (incident,) = shown["incidents"]
    assert incident["key"] == key and incident["alerts"] == 3 and incident["state"] == "open"
    assert incident["relation"] == "opened"  # one chunk opened it (whichever ran first)


# -- CLI ----------------------------------------------------------------------------------------

def _seed(redis_url: str, *calls: tuple[str, int, dict[str, Any]]) -> None:
    async def go() -> None:
        redis = connect(redis_url)
        try:
            for key, at, kw in calls:
                await seed_incident(redis, key, at, **kw)
        finally:
            await redis.aclose()
    asyncio.run(go())


def test_cli_incidents_list_and_show(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    at = now_ms() - 60_000
    _seed(cli_env, ("am:group/[bold]x", at, {"alerts": 2, "title": "[red]Checkout[/red] down"}),
          ("datadog:m1", at + 10, {"resolved": True}))
    out = cli_json(capsys, "incidents", "list", "--json")
    assert [(i["key"], i["state"], i["alert_count"]) for i in out["incidents"]] == [
        ("datadog:m1", "resolved", 1), ("am:group/[bold]x", "open", 2)] and out["next_cursor"] is None
    out = cli_json(capsys, "incidents", "list", "--state", "open", "--limit", "1", "--json")
    assert [i["key"] for i in out["incidents"]] == ["am:group/[bold]x"]
    page = cli_json(capsys, "incidents", "list", "--limit", "1", "--json")
    assert [i["key"] for i in page["incidents"]] == ["datadog:m1"] and page["next_cursor"]
    page = cli_json(capsys, "incidents", "list", "--limit", "1", "--cursor", page["next_cursor"], "--json")
    assert [i["key"] for i in page["incidents"]] == ["am:group/[bold]x"]

    shown = cli_json(capsys, "incidents", "show", "am:group/[bold]x", "--json")
    assert shown["key"] == "am:group/[bold]x" and len(shown["alerts"]) == 2 and shown["timeline"]

    assert main(["incidents", "list"]) == 0
    text = capsys.readouterr().out
    assert "[red]Checkout[/red] down" in text and "am:group/[bold]x" in text  # markup in payload text stays text
    assert main(["incidents", "show", "am:group/[bold]x"]) == 0
    text = capsys.readouterr().out
    assert "am:group/[bold]x/a0" in text and "alerts" in text and "timeline" in text

    assert main(["incidents", "show", "no-such"]) == 1
    assert "no incident" in capsys.readouterr().err
    assert main(["incidents", "list", "--state", "flapping"]) == 2
    assert "open or resolved" in capsys.readouterr().err
    assert main(["incidents", "list", "--cursor", "garbage"]) == 2
    assert "cursor" in capsys.readouterr().err


# -- the admin page -------------------------------------------------------------------------------

async def test_admin_page_lists_incidents_with_alert_counts_and_opens_one(redis_url: str, redis: Any,
                                                                          browser: Any) -> None:  # noqa: F811
    from playwright.async_api import expect

    hostile = '<img src=x onerror="document.title=1">Checkout down'
    await seed_incident(redis, "am:{}:{alertname=\"Down\"}", now_ms() - 5000, alerts=3, title=hostile)
    await seed_incident(redis, "datadog:m1", now_ms() - 4000, resolved=True)
    settings = make_settings(redis_url)
    async with TestClient(TestServer(create_app(settings))) as c:
        page = await browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        await page.goto(str(c.make_url("/admin")))
        await page.get_by_test_id("token").fill(TOKEN_ADMIN)
        await page.get_by_test_id("save-token").click()
        rows = page.locator("[data-testid=incidents] tr.row")
        await expect(rows).to_have_count(2)
        group = rows.nth(1)
        await expect(group.get_by_test_id("incident-alert-count")).to_have_text("3")
        await expect(group.get_by_test_id("incident-title")).to_have_text(hostile)  # text, never markup
        await group.click()
        await expect(page.get_by_test_id("incident-key")).to_have_text("am:{}:{alertname=\"Down\"}")
        await expect(page.locator("[data-testid=incident-alerts] tr")).to_have_count(3)
        assert "alert" in await page.get_by_test_id("incident-timeline").inner_text()

        await page.get_by_test_id("incident-state").select_option("resolved")
        await page.locator("#i-filters button").click()
        await expect(rows).to_have_count(1)
        assert await rows.first.get_attribute("data-key") == "datadog:m1"
        assert await page.title() != "1" and errors == []
