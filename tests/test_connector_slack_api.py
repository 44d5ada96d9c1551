"""Slack's Web API mode (SLACK_BOT_TOKEN) through the real ActionRunner against the fake over loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from connectors.slack import EVENT_TYPE, Slack
from hub.rules.engine import configured_connectors
from tests.conftest import make_settings
from tests.connector_harness import FAST_RETRY, Harness, planned
from tests.fakes.base import Fault
from tests.fakes.slack import BOT_TOKEN, FakeSlack, FakeSlackApi

CHANNEL = "C0INCIDENT"
LIVING = {"key": "incidentio:01ABC", "episode": 1, "channel": CHANNEL, "title": "INC-7: Checkout down",
          "severity": "SEV2", "status": "Investigating", "summary": "Errors on checkout", "page": "",
          "links": [{"href": "https://app.incident.io/incidents/7", "text": "incident.io"}]}


@pytest.fixture
def fake(slack_api: FakeSlackApi) -> FakeSlackApi:
    """Slack's Web API, faked over loopback (the root conftest's `slack_api`)."""
    return slack_api


@pytest.fixture
async def hub(redis: Any, redis_url: str, fake: FakeSlackApi, monkeypatch: pytest.MonkeyPatch
              ) -> AsyncIterator[Harness]:
    monkeypatch.setattr(Slack, "retry_policy", FAST_RETRY)
    settings = make_settings(redis_url, slack_bot_token=BOT_TOKEN, slack_api_url=fake.api_url)
    async with Harness(redis, settings, Slack) as h:
        yield h


def living(action_id: str, **changes: Any) -> Any:
    return planned("slack", "incident", {**LIVING, **changes}, key=f"idem-{action_id}", action_id=action_id)


def reply(action_id: str, text: str, **extra: Any) -> Any:
    params = {"text": text, "thread": LIVING["key"], "episode": 1, "channel": CHANNEL, **extra}
    return planned("slack", "notify", params, key=f"idem-{action_id}", action_id=action_id)


def calls(fake: FakeSlackApi, method: str) -> list[Any]:
    return fake.calls(f"/api/{method}")


async def test_living_message_is_posted_once_with_metadata_and_the_bot_token(hub: Harness,
                                                                             fake: FakeSlackApi) -> None:
    rec = await hub.run(living("wf.living"))
    assert rec["state"] == "succeeded"
    (req,) = calls(fake, "chat.postMessage")
    assert req.headers["Authorization"] == f"Bearer {BOT_TOKEN}"
    body = req.json()
    assert body["channel"] == CHANNEL
    assert body["metadata"] == {"event_type": EVENT_TYPE, "event_payload": {
        "incident": "incidentio:01ABC", "episode": "1", "action": "idem-wf.living", "message": "living"}}
    (msg,) = fake.posted(CHANNEL)
    assert "INC-7: Checkout down" in msg.text and "SEV2" in msg.text
    assert rec["result"] == {"slack_channel": CHANNEL, "slack_ts": msg.ts}


async def test_declared_raised_resolved_is_one_message_updated_in_place_with_thread_replies(
        hub: Harness, fake: FakeSlackApi) -> None:
    await hub.run(living("wf.declared"))
    raised = await hub.run(living("wf.raised", severity="SEV1", page="PagerDuty", acknowledged_by="pagerduty"))
    note = await hub.run(reply("wf.changed", ":arrows_counterclockwise: now SEV1"))
    resolved = await hub.run(living("wf.resolved", severity="SEV1", page="PagerDuty", status="Resolved",
                                    resolved=True, acknowledged_by="pagerduty"))
    done = await hub.run(reply("wf.resolved-note", ":white_check_mark: Resolved after 12m"))
    assert [r["state"] for r in (raised, note, resolved, done)] == ["succeeded"] * 4
    (top,) = fake.posted(CHANNEL, top_level=True)
    assert top.edits == 2 and len(calls(fake, "chat.update")) == 2
    assert ":white_check_mark:" in top.text and "(resolved)" in top.text
    fields = " ".join(f["text"] for f in top.blocks[1]["fields"])
    assert "*Acknowledged:* by pagerduty" in fields and "*Paged:* PagerDuty" in fields
    replies = fake.posted(CHANNEL, top_level=False)
    assert [m.thread_ts for m in replies] == [top.ts, top.ts]
    assert [m.text for m in replies] == [":arrows_counterclockwise: now SEV1", ":white_check_mark: Resolved after 12m"]


async def test_an_unchanged_living_message_is_not_edited(hub: Harness, fake: FakeSlackApi) -> None:
    await hub.run(living("wf.one"))
    again = await hub.run(living("wf.two"))
    assert again["state"] == "skipped" and calls(fake, "chat.update") == []


async def test_an_unchanged_living_message_waits_for_no_rate_limit_token(redis: Any, redis_url: str,
                                                                         fake: FakeSlackApi) -> None:
    """In a storm every joining alert re-renders the living message; one that shows nothing new
    is skipped at once, not after waiting a second for the channel's token (nor spending it)."""
    settings = make_settings(redis_url, slack_bot_token=BOT_TOKEN, slack_api_url=fake.api_url)
    async with Harness(redis, settings, Slack, env={"SLACK_RATE_LIMIT": "1/hour"}) as h:
        assert (await h.run(living("wf.first")))["state"] == "succeeded"  # spends the hour's token
        same = await h.run(living("wf.same"))
        assert same["state"] == "skipped" and "already shows this" in same["error"]
        changed = await h.run(living("wf.changed", status="Fixing"))  # the limit is in force for a real edit
        assert changed["state"] == "retrying" and "rate limit" in changed["waiting"]
    assert calls(fake, "chat.update") == [] and len(calls(fake, "chat.postMessage")) == 1


async def test_a_new_episode_gets_its_own_living_message(hub: Harness, fake: FakeSlackApi) -> None:
    await hub.run(living("wf.first"))
    await hub.run(living("wf.second", episode=2))
    assert len(fake.posted(CHANNEL, top_level=True)) == 2


async def test_timeout_after_send_then_retry_is_one_message(hub: Harness, fake: FakeSlackApi,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Slack, "timeout", 0.2)
    monkeypatch.setattr(Slack, "in_flight_grace", 0.3)
    fake.stall_answer["chat.postMessage"] = 0.6  # Slack posted it; its answer comes after we gave up
    rec = await hub.run_to_final(living("wf.living"))
    assert rec["state"] == "succeeded"
    assert rec["attempts"][0]["error"].startswith("timed out")
    assert len(fake.posted(CHANNEL)) == 1 and len(calls(fake, "chat.postMessage")) == 1
    assert calls(fake, "conversations.history")[0].query["include_all_metadata"] in ("1", "true")
    assert rec["result"]["slack_ts"] == fake.posted(CHANNEL)[0].ts


async def test_a_worker_killed_after_the_post_adopts_it(hub: Harness, fake: FakeSlackApi) -> None:
    """The post landed and the ledger has the intent, but the worker died before it knew the ts:
    the next attempt (a fresh run, the runner's record lost) finds the message by its metadata."""
    slack = hub.connector("slack")
    ledger = slack._ledger(CHANNEL)
    await ledger.begin("living:incidentio:01ABC#1", 0)  # what the dead worker wrote before sending
    fake._chat_postMessage({"channel": CHANNEL, "text": "posted by the dead worker", "metadata": {
        "event_type": EVENT_TYPE, "event_payload": {"incident": "incidentio:01ABC", "episode": "1",
                                                    "action": "idem-wf.living", "message": "living"}}})
    rec = await hub.run(living("wf.living"), fresh=True)
    assert rec["state"] == "succeeded" and rec["attempts"][0]["error"] == "found after an unconfirmed post"
    assert calls(fake, "chat.postMessage") == [] and len(fake.posted(CHANNEL)) == 1


async def test_a_thread_reply_after_a_lost_answer_is_not_posted_twice(hub: Harness, fake: FakeSlackApi,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    await hub.run(living("wf.living"))
    monkeypatch.setattr(Slack, "timeout", 0.2)
    monkeypatch.setattr(Slack, "in_flight_grace", 0.3)
    fake.stall_answer["chat.postMessage"] = 0.6
    rec = await hub.run_to_final(reply("wf.reminder", ":hourglass: time for an update"))
    assert rec["state"] == "succeeded"
    assert len(fake.posted(CHANNEL, top_level=False)) == 1
    assert calls(fake, "conversations.replies")  # thread replies are not in the channel's history


async def test_empty_history_waits_for_a_lost_post_before_posting_again(hub: Harness, fake: FakeSlackApi,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A reset before Slack did anything: after the grace, the search is conclusive and it posts once."""
    monkeypatch.setattr(Slack, "in_flight_grace", 0.3)
    fake.faults.append(Fault(reset=True))
    rec = await hub.run_to_final(living("wf.living"))
    assert rec["state"] == "succeeded" and len(fake.posted(CHANNEL)) == 1
    assert len(calls(fake, "conversations.history")) >= 1


async def test_429_retry_after_is_honoured_through_the_runner(hub: Harness, fake: FakeSlackApi) -> None:
    fake.faults.append(Fault(status=429, retry_after="1", body='{"ok": false, "error": "ratelimited"}'))
    first = await hub.run(reply("wf.note", "hello"))
    assert first["state"] == "retrying" and first["attempts"][0]["status"] == 429
    assert first["next_at"] - first["attempts"][0]["at"] >= 1000
    rec = await hub.run_to_final(reply("wf.note", "hello"))
    assert rec["state"] == "succeeded" and len(fake.posted(CHANNEL)) == 1


async def test_slack_error_codes_are_permanent_or_retried_by_code(hub: Harness, fake: FakeSlackApi) -> None:
    rec = await hub.run(planned("slack", "notify", {"text": "x", "channel": "C0UNKNOWN"}))
    assert rec["state"] == "dead" and "channel_not_found" in rec["attempts"][0]["error"]


async def test_a_wrong_token_is_refused_and_never_recorded(redis: Any, redis_url: str, fake: FakeSlackApi) -> None:
    settings = make_settings(redis_url, slack_bot_token="xoxb-wrong-secret", slack_api_url=fake.api_url)
    async with Harness(redis, settings, Slack) as h:
        rec = await h.run(planned("slack", "notify", {"text": "x", "channel": CHANNEL}))
    assert rec["state"] == "dead" and "invalid_auth" in rec["attempts"][0]["error"]
    assert "xoxb-wrong-secret" not in str(rec)


async def test_mentions_in_payload_text_are_escaped(hub: Harness, fake: FakeSlackApi) -> None:
    from hub.rules.engine import markup_for
    from hub.rules.templating import render_params

    evil = "<!channel> <@U024BE7LH> <https://evil.example|click> & co"
    params = render_params({**LIVING, "title": "{{ t }}", "summary": "{{ t }}", "status": evil, "page": evil},
                           {"t": evil}, markup_for("slack", "incident"))
    await hub.run(planned("slack", "incident", params))
    (msg,) = fake.posted(CHANNEL)
    shown = msg.text + str(msg.blocks)
    assert "<!channel>" not in shown and "<@U024BE7LH>" not in shown and "<https://evil" not in shown
    assert "&lt;!channel&gt;" in msg.text and "&amp; co" in msg.text
    assert "<https://app.incident.io/incidents/7|incident.io>" in str(msg.blocks)  # the hub's own link stays


async def test_reply_waits_while_the_living_message_is_unconfirmed(hub: Harness, fake: FakeSlackApi) -> None:
    await hub.connector("slack")._ledger(CHANNEL).begin("living:incidentio:01ABC#1", 5)
    rec = await hub.run(reply("wf.note", "later"))
    assert rec["state"] == "retrying" and fake.messages == []


async def test_a_channel_name_is_resolved_for_the_history_lookup(hub: Harness, fake: FakeSlackApi,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Slack, "timeout", 0.2)
    monkeypatch.setattr(Slack, "in_flight_grace", 0.3)
    fake.stall_answer["chat.postMessage"] = 0.6
    rec = await hub.run_to_final(living("wf.living", channel="#incidents"))
    assert rec["state"] == "succeeded" and len(fake.posted(CHANNEL)) == 1
    assert calls(fake, "conversations.list") and calls(fake, "conversations.history")[0].query["channel"] == CHANNEL


async def test_rate_limit_key_is_the_channel(hub: Harness) -> None:
    slack = hub.connector("slack")
    a, b = reply("a", "x"), reply("b", "y", channel="C0PAYMENTS")
    key = slack.rate_limit_key
    from connectors.base import ActionCall
    assert key(ActionCall("e", "a", "a", a.params)) == "slack:channel:C0INCIDENT"
    assert key(ActionCall("e", "b", "b", b.params)) == "slack:channel:C0PAYMENTS"


async def test_the_api_mode_is_a_configured_name_only_with_a_bot_token(redis_url: str) -> None:
    assert "slack.api" in configured_connectors(make_settings(redis_url, slack_bot_token=BOT_TOKEN))
    hook_only = configured_connectors(make_settings(redis_url, slack_webhook_url="https://hooks.example/x"))
    assert "slack" in hook_only and "slack.api" not in hook_only


async def test_without_a_bot_token_notify_still_uses_the_webhook(redis: Any, redis_url: str,
                                                                 fake_slack: FakeSlack) -> None:
    settings = make_settings(redis_url, slack_webhook_url=fake_slack.webhook_url)
    async with Harness(redis, settings, Slack) as h:
        rec = await h.run(reply("wf.note", "hello"))
        living_rec = await h.run(living("wf.living"))
    assert rec["state"] == "succeeded" and len(fake_slack.requests) == 1
    assert fake_slack.requests[0].json()["text"] == "hello"
    assert living_rec["state"] == "skipped"


async def test_concurrent_replies_in_one_thread_do_not_overlap(hub: Harness, fake: FakeSlackApi) -> None:
    await hub.run(living("wf.living"))
    recs = await asyncio.gather(*(hub.run(reply(f"wf.n{i}", f"note {i}")) for i in range(3)),
                                return_exceptions=True)
    assert all(not isinstance(r, BaseException) for r in recs)
    done = [r for r in recs if isinstance(r, dict) and r["state"] == "succeeded"]
    assert len(fake.posted(CHANNEL, top_level=False)) == len(done)


def dm(action_id: str, users: list[str], **extra: Any) -> Any:
    params = {"users": users, "key": LIVING["key"], "episode": 1, "text": "SEV1: checkout down", **extra}
    return planned("slack", "dm", params, key=f"idem-{action_id}", action_id=action_id)


async def test_dms_open_a_conversation_and_post_once_per_person_and_incident(hub: Harness,
                                                                             fake: FakeSlackApi) -> None:
    rec = await hub.run(dm("wf.dm", ["U0VP", "U0CTO", "U0VP"]))
    assert rec["state"] == "succeeded"
    assert [r.query["users"] for r in calls(fake, "conversations.open")] == ["U0VP", "U0CTO"]
    assert sorted(m.channel for m in fake.messages) == ["D0CTO", "D0VP"]
    assert set(rec["result"]["slack_dms"]) == {"U0VP", "U0CTO"}
    # the same incident raised to SEV1 again (another step, another identity): nobody is told twice
    again = await hub.run(dm("wf.dm-again", ["U0VP", "U0CTO"]))
    assert again["state"] == "succeeded" and len(fake.messages) == 2


async def test_a_dm_whose_answer_was_lost_is_not_sent_twice(hub: Harness, fake: FakeSlackApi,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Slack, "timeout", 0.2)
    monkeypatch.setattr(Slack, "in_flight_grace", 0.3)
    fake.stall_answer["chat.postMessage"] = 0.6
    rec = await hub.run_to_final(dm("wf.dm", ["U0VP", "U0CTO"]))
    assert rec["state"] == "succeeded"
    assert sorted(m.channel for m in fake.messages) == ["D0CTO", "D0VP"]


async def test_a_bad_user_id_is_a_permanent_error(hub: Harness, fake: FakeSlackApi) -> None:
    rec = await hub.run(dm("wf.dm", ["nobody"]))
    assert rec["state"] == "dead" and "user_not_found" in rec["attempts"][0]["error"]


async def test_dms_without_a_bot_token_are_skipped_as_not_configured(redis: Any, redis_url: str,
                                                                     fake_slack: FakeSlack) -> None:
    settings = make_settings(redis_url, slack_webhook_url=fake_slack.webhook_url)
    async with Harness(redis, settings, Slack) as h:
        rec = await h.run(dm("wf.dm", ["U0VP"]))
    assert rec["state"] == "skipped" and "SLACK_BOT_TOKEN" in rec["error"] and fake_slack.requests == []


async def test_with_no_channel_the_living_message_goes_once_through_the_webhook(redis: Any, redis_url: str,
                                                                                fake_slack: FakeSlack) -> None:
    settings = make_settings(redis_url, slack_bot_token=BOT_TOKEN, slack_webhook_url=fake_slack.webhook_url)
    no_channel = {k: v for k, v in LIVING.items() if k != "channel"}
    async with Harness(redis, settings, Slack) as h:
        first = await h.run(planned("slack", "incident", no_channel, action_id="wf.a"))
        later = await h.run(planned("slack", "incident", {**no_channel, "severity": "SEV1"}, action_id="wf.b"))
    assert first["state"] == "succeeded" and later["state"] == "skipped"
    (req,) = fake_slack.requests
    assert "INC-7: Checkout down" in req.json()["text"]
