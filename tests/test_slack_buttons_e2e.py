"""The living message's buttons (Acknowledge, Resolve, Escalate now), end to end: a signed Slack
interaction → the real ingress (`POST /slack/interactions`) → Redis → the real worker → the fakes.
Signatures are checked against slack_sdk's own verifier on the same inputs."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlencode

import pytest
from slack_sdk.signature import SignatureVerifier

from connectors._slackinteractions import SlackInteractions, signature
from hub.operators import audit
from hub.storage.event_store import ARQ_QUEUE, source_idx
from tests.conftest import make_settings, wait_for
from tests.fakes.slack import BOT_TOKEN, FakeSlackApi
from tests.test_workflows_e2e import INCIDENT_KEY, Hub, Upstreams, incident_payload

CHANNEL = "C0INCIDENT"
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


def settings_for(redis_url: str, ups: Upstreams, fake: FakeSlackApi, **extra: Any) -> Any:
    return ups.settings(redis_url, slack_bot_token=BOT_TOKEN, slack_api_url=fake.api_url, slack_channel=CHANNEL,
                        **{"slack_signing_secret": SECRET, **extra})


def click(action: str, key: str = INCIDENT_KEY, *, user: str = "U0ALICE", action_ts: str = "1700000000.000100",
          message_ts: str = "1700000000.000001") -> bytes:
    payload = {"type": "block_actions", "user": {"id": user, "username": "alice"}, "trigger_id": "t.1",
               "container": {"type": "message", "message_ts": message_ts, "channel_id": CHANNEL},
               "channel": {"id": CHANNEL}, "actions": [{"type": "button", "action_id": f"incident_hub_{action}",
                                                        "value": key, "action_ts": action_ts,
                                                        "block_id": "incident_hub_actions"}]}
    return urlencode({"payload": json.dumps(payload)}).encode()


def signed(body: bytes, *, secret: str = SECRET, at: float | None = None) -> dict[str, str]:
    stamp = str(int(time.time() if at is None else at))
    return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": signature(secret, stamp, body),
            "Content-Type": "application/x-www-form-urlencoded"}


async def interact(hub: Hub, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    assert hub._client is not None
    resp = await hub._client.post("/slack/interactions", data=body, headers=signed(body) if headers is None
                                  else headers)
    return resp.status, await resp.json()


async def declared_sev1(hub: Hub) -> dict[str, Any]:
    created = await hub.send("incidentio", incident_payload("incident_created_v2", severity="Critical"))
    assert created["state"] == "done"
    state = await hub.incidents.get(INCIDENT_KEY)
    assert state["acknowledged_at"] is None and not state["resolved_at"]
    return created


async def audited(hub: Hub) -> list[dict[str, Any]]:
    entries, _ = await audit.recent(hub.redis)
    return entries


# -- signatures ----------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"payload=%7B%7D", click("acknowledge"), b"", "é=ü&x=\u2603".encode()])
def test_the_signature_agrees_with_slack_sdk(body: bytes) -> None:
    now = time.time()
    stamp = str(int(now))
    sdk = SignatureVerifier(SECRET, clock=type("C", (), {"now": staticmethod(lambda: now)})())
    ours = SlackInteractions()
    settings = make_settings("redis://127.0.0.1:1/0", slack_signing_secret=SECRET)
    good = signature(SECRET, stamp, body)
    assert good == sdk.generate_signature(timestamp=stamp, body=body)
    for sig, stamp_ in [(good, stamp), (good[:-1] + ("0" if good[-1] != "0" else "1"), stamp),
                        (good, str(int(now) - 301)), (signature("other", stamp, body), stamp), ("", stamp),
                        (good.replace("v0=", "v1="), stamp)]:
        headers = {"X-Slack-Request-Timestamp": stamp_, "X-Slack-Signature": sig}
        expected = sdk.is_valid_request(body, headers)
        try:
            ours.verify(body, headers, settings, now=now)
            mine = True
        except Exception:
            mine = False
        assert mine == expected, (sig, stamp_)


@pytest.mark.parametrize("case", ["bad", "stale", "missing", "other_secret", "future"])
async def test_an_unsigned_or_stale_click_is_401_and_nothing_runs(
        redis_url: str, redis: Any, upstreams: Upstreams, slack_api: FakeSlackApi, case: str) -> None:
    async with Hub(settings_for(redis_url, upstreams, slack_api), redis) as hub:
        await declared_sev1(hub)
        body = click("acknowledge")
        headers = {"bad": {**signed(body), "X-Slack-Signature": "v0=" + "0" * 64},
                   "stale": signed(body, at=time.time() - 400),
                   "future": signed(body, at=time.time() + 400),
                   "missing": {"Content-Type": "application/x-www-form-urlencoded"},
                   "other_secret": signed(body, secret="not-the-secret")}[case]
        status, answer = await interact(hub, body, headers)
        assert status == 401, answer
        queued = [j.decode() for j in await redis.zrange(ARQ_QUEUE, 0, -1)]
    assert (await hub.incidents.get(INCIDENT_KEY))["acknowledged_at"] is None
    assert await audited(hub) == []
    assert not [j for j in queued if j.startswith("escalate_now")]
    assert await redis.zcard(source_idx("interaction")) == 0  # no event recorded
    assert await redis.keys("hub:interaction:*") == []


@pytest.mark.parametrize("body", [
    b"payload=%7Bnot+json", b"nothing=here", b"payload=" + json.dumps({"type": "view_submission"}).encode(),
    urlencode({"payload": json.dumps({"type": "block_actions", "user": {"id": "U1"}, "actions": []})}).encode(),
    urlencode({"payload": json.dumps({"type": "block_actions", "user": {"id": "U1"},
                                      "actions": [{"action_id": "someone_elses", "value": "x"}]})}).encode(),
    urlencode({"payload": json.dumps({"type": "block_actions", "user": {"id": "U1"},
                                      "actions": [{"action_id": "incident_hub_resolve", "value": ""}]})}).encode(),
    b"\xff\xfe", b"payload=" + b"[" * 5000])
async def test_a_malformed_click_is_400(redis_url: str, redis: Any, upstreams: Upstreams, slack_api: FakeSlackApi,
                                        body: bytes) -> None:
    async with Hub(settings_for(redis_url, upstreams, slack_api), redis) as hub:
        status, answer = await interact(hub, body)
    assert status == 400 and answer["error"], answer


async def test_without_a_signing_secret_the_endpoint_is_401_and_the_message_has_no_buttons(
        redis_url: str, redis: Any, upstreams: Upstreams, slack_api: FakeSlackApi) -> None:
    async with Hub(settings_for(redis_url, upstreams, slack_api, slack_signing_secret=None), redis) as hub:
        await declared_sev1(hub)
        status, answer = await interact(hub, click("acknowledge"))
    assert status == 401 and "SLACK_SIGNING_SECRET" in answer["detail"]
    (top,) = slack_api.posted(CHANNEL, top_level=True)
    assert not [b for b in top.blocks if b["type"] == "actions"]


async def test_a_click_for_an_unknown_incident_is_ignored(redis_url: str, redis: Any, upstreams: Upstreams,
                                                           slack_api: FakeSlackApi) -> None:
    async with Hub(settings_for(redis_url, upstreams, slack_api), redis) as hub:
        status, answer = await interact(hub, click("resolve", "incidentio:nope"))
    assert status == 200 and answer["status"] == "ignored"
    assert await hub.incidents.get("incidentio:nope") is None and await audited(hub) == []


# -- the actions ---------------------------------------------------------------------------------


async def test_acknowledge_stops_escalation_is_audited_and_shown_on_the_message(
        redis_url: str, redis: Any, upstreams: Upstreams, slack_api: FakeSlackApi) -> None:
    async with Hub(settings_for(redis_url, upstreams, slack_api), redis) as hub:
        await declared_sev1(hub)
        (top,) = slack_api.posted(CHANNEL, top_level=True)
        (actions,) = [b for b in top.blocks if b["type"] == "actions"]
        assert [e["action_id"] for e in actions["elements"]] == [
            "incident_hub_acknowledge", "incident_hub_resolve", "incident_hub_escalate"]
        assert {e["value"] for e in actions["elements"]} == {INCIDENT_KEY}
        status, answer = await interact(hub, click("acknowledge", message_ts=top.ts))
        assert status == 200 and answer["status"] == "accepted"
        acked = await hub.final(answer["event_id"])
        assert acked["state"] == "done"
        status, late = await interact(hub, click("acknowledge", user="U0BOB", message_ts="1700000000.000777"))
        assert status == 200 and late["status"] == "ignored"  # another message's button, after the ack
        state = await hub.incidents.get(INCIDENT_KEY)
        assert state["acknowledged_by"] == "slack:U0ALICE" and state["acknowledged_at"]
        # the escalation timer, due now, finds the incident acknowledged and does nothing
        status, answer = await interact(hub, click("escalate", message_ts=top.ts, action_ts="1700000000.000200"))
        assert status == 200

        async def escalation_checked() -> bool:
            return any(e["action"] == "escalate" for e in await audited(hub)) or None  # type: ignore[return-value]
        await wait_for(escalation_checked, timeout=10)
    assert "*Acknowledged:* by <@U0ALICE> at " in json.dumps(top.blocks)
    (actions,) = [b for b in top.blocks if b["type"] == "actions"]
    assert [e["action_id"] for e in actions["elements"]] == ["incident_hub_resolve"]
    entries = await audited(hub)
    ack = next(e for e in entries if e["action"] == "acknowledge")
    assert ack["who"] == "slack:U0ALICE" and ack["target"] == INCIDENT_KEY
    esc = next(e for e in entries if e["action"] == "escalate")
    assert esc["detail"]["changed"] is False and esc["detail"]["reason"] == "the incident is acknowledged"
    assert [m for m in slack_api.posted(CHANNEL, top_level=False) if "not been acknowledged" in m.text] == []


async def test_resolve_resolves_the_page_once_through_the_workflows(
        redis_url: str, redis: Any, upstreams: Upstreams, slack_api: FakeSlackApi) -> None:
    async with Hub(settings_for(redis_url, upstreams, slack_api), redis) as hub:
        await declared_sev1(hub)
        (top,) = slack_api.posted(CHANNEL, top_level=True)
        status, first = await interact(hub, click("resolve", message_ts=top.ts, user="U0BOB"))
        again_status, again = await interact(hub, click("resolve", message_ts=top.ts, user="U0BOB",
                                                        action_ts="1700000000.000900"))  # a double click
        retry = click("resolve", message_ts=top.ts, user="U0BOB")
        retry_status, retried = await interact(hub, retry, {**signed(retry), "X-Slack-Retry-Num": "1"})
        assert (status, again_status, retry_status) == (200, 200, 200)
        assert first["status"] == "accepted" and again["status"] == retried["status"] == "duplicate"
        done = await hub.final(first["event_id"])
        assert done["state"] == "done"
        status, late = await interact(hub, click("resolve", message_ts="1700000000.000777"))  # another message
        assert status == 200 and late == {"status": "ignored", "detail": "the incident is resolved"}
    state = await hub.incidents.get(INCIDENT_KEY)
    assert state["resolved_at"] and state["resolution"] == "resolved by slack:U0BOB"
    resolves = [c.json() for c in upstreams.pagerduty.calls("/v2/enqueue") if c.json()["event_action"] == "resolve"]
    assert resolves == [{"routing_key": resolves[0]["routing_key"], "dedup_key": INCIDENT_KEY,
                         "event_action": "resolve"}]
    assert await hub.incidents.timers(INCIDENT_KEY) == {}
    assert "(resolved)" in top.text and "*Resolved:* by <@U0BOB>" in json.dumps(top.blocks)
    assert not [b for b in top.blocks if b["type"] == "actions"]
    assert [e["who"] for e in await audited(hub) if e["action"] == "resolve"] == ["slack:U0BOB"]


async def test_escalate_now_fires_the_next_escalation_once(
        redis_url: str, redis: Any, upstreams: Upstreams, slack_api: FakeSlackApi) -> None:
    async with Hub(settings_for(redis_url, upstreams, slack_api), redis) as hub:
        created = await declared_sev1(hub)
        (top,) = slack_api.posted(CHANNEL, top_level=True)
        status, answer = await interact(hub, click("escalate", message_ts=top.ts))
        second, again = await interact(hub, click("escalate", message_ts=top.ts, action_ts="1700000000.000500"))
        assert status == second == 200 and answer["status"] == "accepted" and again["status"] == "duplicate"

        async def escalated() -> list[Any] | None:
            replies = [m for m in slack_api.posted(CHANNEL, top_level=False) if "not been acknowledged" in m.text]
            return replies or None
        (reply,) = await wait_for(escalated, timeout=15)
        assert reply.thread_ts == top.ts

        async def fired() -> bool | None:
            timers = await hub.incidents.timers(INCIDENT_KEY)
            return True if sorted(t["group"] for t in timers.values()) == ["escalate-again", "reminder"] else None
        await wait_for(fired, timeout=10)
        actions = await hub.actions(created["id"])
    assert [a["state"] for a in actions.values() if a.get("timer", "").endswith(":escalate")
            and a["name"] == "slack.notify"] == ["succeeded"]
    (entry,) = [e for e in await audited(hub) if e["action"] == "escalate"]
    assert entry["who"] == "slack:U0ALICE" and entry["detail"]["timer"].endswith(":escalate")
    assert not [m for m in slack_api.posted(CHANNEL, top_level=False) if "still not acknowledged" in m.text]
