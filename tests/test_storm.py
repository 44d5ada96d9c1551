"""Storm summaries (issue 12, item 5): `grouping: {storm_threshold, summary_interval}`. When more
alerts than the threshold join one incident within a minute, nothing is said per alert and
Slack and incident.io hear one summary per interval. Real Redis, the real worker, fake
upstreams over loopback; the sweep's `StormSummaries.send_due` is called with a time past the
interval, which is what the sweeper does once it has passed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from bench.storm import dd_alert
from hub.storage import keys
from hub.storage.event_store import now_ms
from hub.worker.storm import StormSummaries
from tests.fakes.slack import BOT_TOKEN, FakeSlackApi
from tests.grouping_rules import DEFAULTS
from tests.test_alert_groups import TOKEN, notification, triggers
from tests.test_correlation import AUTH
from tests.test_workflows_e2e import Hub, Upstreams

THRESHOLD = 3
INTERVAL_S = 300
NOTE_PATH = "/v2/incident_timeline_items"


def rules(tmp_path: Path, threshold: int = THRESHOLD) -> Path:
    path = tmp_path / "hub.yaml"
    path.write_text(DEFAULTS.read_text() + "\ngrouping:\n  by: [service]\n  window: 5m\n"
                    f"  storm_threshold: {threshold}\n  summary_interval: {INTERVAL_S}s\n")
    return path


def group(n: int, alertname: str = "KubePodCrashLooping") -> dict[str, Any]:
    """One Alertmanager group of `n` firing alerts on service checkout."""
    data = notification(**{f"{i:04x}": "firing" for i in range(n)})
    for alert in data["alerts"]:
        alert["labels"].update(service="checkout", alertname=alertname)
    return data


def summaries(ups: Upstreams) -> list[str]:
    return [c.json()["text"] for c in ups.slack.requests if "more alerts joined" in c.json().get("text", "")]


def notes(ups: Upstreams) -> list[dict[str, Any]]:
    return [c.json() for c in ups.incidentio.calls(NOTE_PATH, "POST")]


async def sweep(hub: Hub, at_ms: int | None = None) -> int:
    at = at_ms if at_ms is not None else now_ms() + (INTERVAL_S + 1) * 1000
    return await StormSummaries(hub.store, hub.incidents, lambda: hub_rules(hub)).send_due(at)


def hub_rules(hub: Hub) -> Any:
    from hub.rules import load_file
    from hub.rules.engine import Rules

    return Rules(load_file(hub.settings.hub_config))


async def wait_until(check: Any, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_a_storm_gets_one_summary_per_interval_and_nothing_per_alert(
        redis_url: str, redis: Any, upstreams: Upstreams, tmp_path: Path) -> None:
    settings = upstreams.settings(redis_url, alertmanager_webhook_token=TOKEN, hub_config=rules(tmp_path))
    async with Hub(settings, redis) as hub:
        first = await hub.send("alertmanager", group(8))  # 1 opens, 7 join within a minute: > 3
        (key,) = triggers(upstreams)
        state = await hub.incidents.get(key)
        assert state["storm"]["since"] and len(state["join_times"]) == THRESHOLD + 1
        stormed = await redis.zcard(keys.incident_storm_alerts(key))
        assert stormed == 8  # every alert with when it first came
        assert await redis.zscore(keys.STORM_DUE, key) == state["storm"]["since"] + INTERVAL_S * 1000
        assert summaries(upstreams) == [] and notes(upstreams) == []  # nothing per alert
        await hub.send("alertmanager", group(12))  # 4 more join (the 8 resent are not new)
        assert await redis.zcard(keys.incident_storm_alerts(key)) == 12
        assert summaries(upstreams) == [] and notes(upstreams) == []
        assert await sweep(hub, now_ms()) == 0  # not due yet
        assert await sweep(hub) == 1
        await wait_until(lambda: len(summaries(upstreams)) == 1 and len(notes(upstreams)) == 1)
        (text,) = summaries(upstreams)
        # the alerts that came since the storm began: all 8 of the delivery that began it, then 4
        assert "12 more alerts joined: top labels" in text and "service=checkout (12)" in text
        assert "alertname=KubePodCrashLooping (12)" in text
        (note,) = notes(upstreams)
        assert note["description"].startswith("12 more alerts joined: top labels")
        assert await sweep(hub) == 0  # the next one is due an interval later
        assert await sweep(hub, now_ms() + (2 * INTERVAL_S + 2) * 1000) == 0  # nothing joined since: over
        assert await redis.zscore(keys.STORM_DUE, key) is None
        assert first["state"] == "done" and triggers(upstreams) == [key]  # one page throughout


async def test_below_the_threshold_nothing_changes(redis_url: str, redis: Any, upstreams: Upstreams,
                                                   tmp_path: Path) -> None:
    settings = upstreams.settings(redis_url, alertmanager_webhook_token=TOKEN, hub_config=rules(tmp_path))
    async with Hub(settings, redis) as hub:
        await hub.send("alertmanager", group(THRESHOLD + 1))  # 3 join: not more than 3
        (key,) = triggers(upstreams)
        state = await hub.incidents.get(key)
        assert not state.get("storm") and len(state["join_times"]) == THRESHOLD
        assert await redis.zscore(keys.STORM_DUE, key) is None
        assert await sweep(hub) == 0
    assert summaries(upstreams) == [] and len(upstreams.incidentio.created) == 1


async def test_a_restart_mid_storm_still_summarises_once(redis_url: str, redis: Any, upstreams: Upstreams,
                                                        tmp_path: Path) -> None:
    settings = upstreams.settings(redis_url, alertmanager_webhook_token=TOKEN, hub_config=rules(tmp_path))
    async with Hub(settings, redis) as hub:
        await hub.send("alertmanager", group(8))
    async with Hub(settings, redis) as hub:  # a new worker: the storm is in Redis
        await hub.send("alertmanager", group(10))
        at = now_ms() + (INTERVAL_S + 1) * 1000
        assert await sweep(hub, at) == 1
        assert await sweep(hub, at) == 0  # a second sweep (another worker) at the same time: not again
        await wait_until(lambda: len(summaries(upstreams)) == 1)
        await asyncio.sleep(0.3)
    (text,) = summaries(upstreams)
    assert "10 more alerts joined" in text
    assert len(notes(upstreams)) == 1


async def test_a_summary_recorded_twice_is_sent_once(redis_url: str, redis: Any, upstreams: Upstreams,
                                                     tmp_path: Path) -> None:
    """A sweep that died after recording the summary and before moving its mark records it again:
    the same delivery id, deduplicated."""
    settings = upstreams.settings(redis_url, alertmanager_webhook_token=TOKEN, hub_config=rules(tmp_path))
    async with Hub(settings, redis) as hub:
        await hub.send("alertmanager", group(8))
        (key,) = triggers(upstreams)
        at = now_ms() + (INTERVAL_S + 1) * 1000
        assert await sweep(hub, at) == 1
        await redis.hdel(keys.STORM_SUMMARISED, key)  # as if the mark had never been written
        await redis.zadd(keys.STORM_DUE, {key: at})
        assert await sweep(hub, at) == 1
        await wait_until(lambda: len(summaries(upstreams)) >= 1)
        await asyncio.sleep(0.5)
    assert len(summaries(upstreams)) == 1 and len(notes(upstreams)) == 1


async def test_label_values_are_escaped_for_slack_and_plain_for_incidentio(
        redis_url: str, redis: Any, upstreams: Upstreams, tmp_path: Path) -> None:
    settings = upstreams.settings(redis_url, alertmanager_webhook_token=TOKEN, hub_config=rules(tmp_path))
    async with Hub(settings, redis) as hub:
        await hub.send("alertmanager", group(8, alertname="<!channel> & <@U1>"))
        assert await sweep(hub) == 1
        await wait_until(lambda: len(summaries(upstreams)) == 1 and len(notes(upstreams)) == 1)
    (text,) = summaries(upstreams)
    assert "alertname=&lt;!channel&gt; &amp; &lt;@U1&gt; (8)" in text and "<!channel>" not in text
    (note,) = notes(upstreams)
    assert "alertname=<!channel> & <@U1> (8)" in note["description"]  # incident.io: plain text, no markup


async def test_with_a_bot_token_the_living_message_is_not_edited_per_alert(
        redis_url: str, redis: Any, upstreams: Upstreams, tmp_path: Path) -> None:
    slack = await FakeSlackApi().start()
    try:
        settings = upstreams.settings(redis_url, alertmanager_webhook_token=TOKEN, hub_config=rules(tmp_path),
                                      slack_bot_token=BOT_TOKEN, slack_api_url=slack.api_url,
                                      slack_channel="C0INCIDENT")
        async with Hub(settings, redis) as hub:
            await hub.send("alertmanager", group(1))
            for i in range(8):  # 8 Datadog monitors on checkout join one by one (alert count 2, 3, …)
                stormed = await hub.send("datadog", dd_alert(i, "Triggered"), headers=AUTH)
            updates_before = len(slack.calls("/api/chat.update"))
            assert await sweep(hub) == 1
            await wait_until(lambda: len(slack.posted("C0INCIDENT", top_level=False)) == 1)
            await asyncio.sleep(0.3)
        assert stormed["state"] == "done"
        (top,) = slack.posted("C0INCIDENT", top_level=True)
        assert updates_before <= THRESHOLD  # the joins before the storm; not one edit per alert of the 8
        (reply,) = slack.posted("C0INCIDENT", top_level=False)
        assert "more alerts joined" in reply.text and reply.thread_ts == top.ts
    finally:
        await slack.close()
