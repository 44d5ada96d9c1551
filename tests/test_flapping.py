"""Flapping (issue 12, item 4): an alert that keeps firing and resolving keeps one page open.

Real worker and Redis, signed Alertmanager webhooks, fake upstreams over loopback. The
window is long (30m) so the worker's own sweep never releases during a test; the release is
driven by calling the sweep's `FlapReleases.release_due` with a time past the window, which is
what the sweeper does once the window has passed.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from hub.core import metrics
from hub.core.events import Kind, NormalisedEvent, Severity
from hub.operators.replay import replay_event
from hub.rules.flapping import Flapping
from hub.storage import keys
from hub.storage.event_store import now_ms
from hub.storage.flapping import FlapContext, FlapPolicy
from hub.storage.flapping import changes as flap_changes
from hub.storage.incidents import advance
from hub.worker.flapping import RELEASE_FIELD, FlapReleases, releasable
from tests.grouping_rules import DEFAULTS
from tests.test_alert_groups import TOKEN, notification, resolves, triggers
from tests.test_workflows_e2e import ROUTING_KEY, Hub, Upstreams

WINDOW_S = 1800


def rules(tmp_path: Path, threshold: int, window: str = "30m") -> Path:
    path = tmp_path / "hub.yaml"
    path.write_text(DEFAULTS.read_text() + f"\nflapping:\n  window: {window}\n  threshold: {threshold}\n")
    return path


class Alert:
    """One alert of one Alertmanager group, firing and resolving: each notification a new delivery."""

    def __init__(self, hub: Hub, summary: str | None = None) -> None:
        self.hub = hub
        self.n = 0
        self.summary = summary

    async def send(self, status: str) -> dict[str, Any]:
        self.n += 1
        body = notification(aaaa=status)
        if self.summary is not None:
            body["commonAnnotations"]["summary"] = body["alerts"][0]["annotations"]["summary"] = self.summary
        stamp = f"2024-06-17T08:{self.n // 60:02d}:{self.n % 60:02d}Z"  # a new delivery each time
        body["alerts"][0]["endsAt" if status == "resolved" else "startsAt"] = stamp
        done = await self.hub.send("alertmanager", body)
        assert done["state"] == "done", done
        return done

    async def fire(self) -> dict[str, Any]:
        return await self.send("firing")

    async def resolve(self) -> dict[str, Any]:
        return await self.send("resolved")


def flapping_notes(ups: Upstreams) -> list[str]:
    return [c.json()["text"] for c in ups.slack.calls() if "flapping" in c.json().get("text", "")]


async def wait_until(check: Any, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def release(hub: Hub, at_ms: int | None = None) -> int:
    """The sweeper's release, as if the window had passed."""
    async def again(event_id: str) -> None:
        await replay_event(hub.store, event_id, by="flapping", record_audit=False)
    return await FlapReleases(hub.redis, hub.incidents).release_due(
        again, at_ms if at_ms is not None else now_ms() + (WINDOW_S + 1) * 1000)


async def test_a_flapping_alert_pages_threshold_minus_one_times_keeps_the_page_open_and_notes_it_once(
        redis_url: str, redis: Any, upstreams: Upstreams, tmp_path: Path) -> None:
    settings = upstreams.settings(redis_url, alertmanager_webhook_token=TOKEN, hub_config=rules(tmp_path, 4))
    suppressed = metrics.PAGES_SUPPRESSED.labels("flapping")._value.get()
    async with Hub(settings, redis) as hub:
        alert = Alert(hub)
        for _ in range(2):  # two episodes: paged and resolved like any alert
            await alert.fire()
            await alert.resolve()
        (key,) = set(triggers(upstreams))
        assert len(triggers(upstreams)) == 2 and resolves(upstreams) == [key, key]
        await alert.fire()  # the third episode: paged
        held = await alert.resolve()  # its resolve is held: the third episode within the window
        assert held["reason"].startswith(f"resolution held: {key} flapping")
        state = await hub.incidents.get(key)
        assert state["resolved_at"] is None and state["resolve_held_at"] and state["episode"] == 3
        assert state["resolve_held_until"] == state["resolve_held_at"] + WINDOW_S * 1000
        assert await redis.zscore(keys.FLAP_DUE, key) == state["resolve_held_until"]
        for _ in range(3):  # flapping from now on: no new page, no resolve
            await alert.fire()
            held = await alert.resolve()
        assert len(triggers(upstreams)) == 3 and len(resolves(upstreams)) == 2
        assert upstreams.pagerduty.alerts[(ROUTING_KEY, key)].status == "triggered"  # the page stays open
        assert len(upstreams.incidentio.created) == 3  # one per episode, none while flapping
        (note,) = flapping_notes(upstreams)  # one note to the channel
        state = await hub.incidents.get(key)
        assert state["episode"] == 3 and state["flapping"]["count"] == 6 and state["resolved_at"] is None
        assert metrics.PAGES_SUPPRESSED.labels("flapping")._value.get() == suppressed + 3

        assert await release(hub, now_ms()) == 0  # not due before the window has passed
        assert await release(hub) == 1

        async def resolved() -> bool:
            return len(resolves(upstreams)) == 3
        await wait_until(resolved)
        await hub.final(held["id"])
        state = await hub.incidents.get(key)
        timeline = [e["type"] for e in await hub.incidents.timeline(key)]
        assert await release(hub) == 0  # released once
        await asyncio.sleep(0.3)
        assert resolves(upstreams) == [key] * 3
    assert upstreams.pagerduty.alerts[(ROUTING_KEY, key)].status == "resolved"
    assert state["resolved_at"] == held["received_at"]  # when the alert resolved (and stayed so)
    assert state["flapping"] is None and state["resolve_held_at"] is None
    assert state["resolution_released_by"] == held["id"]
    assert timeline.count("resolution_held") == 4 and timeline.count("flapping") == 1
    assert timeline.count("resolution_released") == 1 and timeline.count("resolved") == 3
    assert await redis.zcard(keys.FLAP_DUE) == 0 and await redis.hlen(keys.FLAP_HELD) == 0
    closed = [i for i in upstreams.incidentio.incidents.values()
              if i["incident_status"]["category"] == "closed"]
    assert len(closed) == 3  # every episode's incident.io incident closed, the last one at the release
    assert ":repeat: KubePodCrashLooping: Pod is crash looping. is flapping (4 firings within" in note


async def test_a_firing_before_the_release_cancels_it_and_a_steady_firing_keeps_the_page(
        redis_url: str, redis: Any, upstreams: Upstreams, tmp_path: Path) -> None:
    settings = upstreams.settings(redis_url, alertmanager_webhook_token=TOKEN, hub_config=rules(tmp_path, 2))
    async with Hub(settings, redis) as hub:
        alert = Alert(hub, summary="Pod <!channel> & *crash* looping")
        await alert.fire()
        await alert.resolve()  # threshold 2: the first episode's resolve is already held
        (key,) = triggers(upstreams)
        assert resolves(upstreams) == []
        await alert.fire()  # back before the release: flapping, the hold is cleared
        state = await hub.incidents.get(key)
        assert state["flapping"] and state["resolve_held_at"] is None
        assert await redis.hlen(keys.FLAP_HELD) == 0
        assert await release(hub) == 0  # nothing due: the firing cancelled it
        for _ in range(3):  # it keeps firing
            await alert.fire()
        await asyncio.sleep(0.3)
        state = await hub.incidents.get(key)
    assert triggers(upstreams) == [key] and resolves(upstreams) == []
    assert upstreams.pagerduty.alerts[(ROUTING_KEY, key)].status == "triggered"
    assert state["resolved_at"] is None and state["episode"] == 1
    (note,) = flapping_notes(upstreams)
    assert "Pod &lt;!channel&gt; &amp; *crash* looping is flapping (2 firings" in note  # payload text escaped


async def test_a_stale_release_does_nothing(redis_url: str, redis: Any, upstreams: Upstreams,
                                            tmp_path: Path) -> None:
    """The sweeper read the hold, then a firing cleared it before the replay ran: nothing resolves."""
    settings = upstreams.settings(redis_url, alertmanager_webhook_token=TOKEN, hub_config=rules(tmp_path, 2))
    async with Hub(settings, redis) as hub:
        alert = Alert(hub)
        await alert.fire()
        held = await alert.resolve()
        (key,) = triggers(upstreams)
        seen: list[str] = []

        async def late(event_id: str) -> None:  # a firing lands between the check and the replay
            seen.append(event_id)
            await alert.fire()
            await replay_event(hub.store, event_id, by="flapping", record_audit=False)
        assert await FlapReleases(redis, hub.incidents).release_due(late, now_ms() + (WINDOW_S + 1) * 1000) == 1
        assert seen == [held["id"]]
        await hub.final(held["id"])
        await asyncio.sleep(0.3)
        state = await hub.incidents.get(key)
    assert resolves(upstreams) == [] and state["resolved_at"] is None and state["flapping"]


async def test_a_release_interrupted_by_a_restart_resolves_once_on_the_next_worker(
        redis_url: str, redis: Any, upstreams: Upstreams, tmp_path: Path) -> None:
    settings = upstreams.settings(redis_url, alertmanager_webhook_token=TOKEN, hub_config=rules(tmp_path, 2))
    async with Hub(settings, redis) as hub:
        alert = Alert(hub)
        await alert.fire()
        held = await alert.resolve()
        (key,) = triggers(upstreams)
    # no worker runs now: the sweep hands the held resolve back, and nobody works it yet
    assert await release(hub) == 1
    assert (await hub.store.get(held["id"]))["state"] == "accepted" and resolves(upstreams) == []
    async with Hub(settings, redis) as hub:  # the next worker does, once
        async def resolved() -> bool:
            return resolves(upstreams) == [key]
        await wait_until(resolved)
        await hub.final(held["id"])
        assert await release(hub) == 0
        state = await hub.incidents.get(key)
        await asyncio.sleep(0.3)
    assert resolves(upstreams) == [key]
    assert state["resolved_at"] == held["received_at"] and state["resolve_held_at"] is None


async def test_without_flapping_every_episode_pages_and_resolves(redis_url: str, redis: Any,
                                                                 upstreams: Upstreams) -> None:
    settings = upstreams.settings(redis_url, alertmanager_webhook_token=TOKEN)
    async with Hub(settings, redis) as hub:
        alert = Alert(hub)
        for _ in range(4):
            await alert.fire()
            await alert.resolve()
        (key,) = set(triggers(upstreams))
        state = await hub.incidents.get(key)
    assert triggers(upstreams) == [key] * 4 and resolves(upstreams) == [key] * 4
    assert state["episode"] == 4 and state["resolved_at"] is not None
    assert not {"flap_times", "flapping", "resolve_held_at"} & set(state)
    assert flapping_notes(upstreams) == [] and await redis.hlen(keys.FLAP_HELD) == 0


# -- the pure state ------------------------------------------------------------------------------

T0 = 1_700_000_000_000


def ev(kind: Kind) -> NormalisedEvent:
    return NormalisedEvent(source="datadog", kind=kind, fingerprint="datadog:1", title="CPU <high>",
                           severity=Severity.SEV2 if kind == Kind.ALERT_FIRING else None)


def test_the_hold_counts_episodes_within_the_window_and_a_release_resolves() -> None:
    policy = FlapPolicy(window_ms=60_000, threshold=3)
    ctx = FlapContext(policy, False, "ev1")
    s = advance(None, ev(Kind.ALERT_FIRING), "datadog:1", T0, flap=ctx)
    s = advance(s, ev(Kind.ALERT_RESOLVED), "datadog:1", T0 + 1, flap=ctx)
    assert s["resolved_at"] == T0 + 1  # one episode: resolves
    s = advance(s, ev(Kind.ALERT_FIRING), "datadog:1", T0 + 2, flap=ctx)
    before = advance(s, ev(Kind.ALERT_FIRING), "datadog:1", T0 + 3, flap=ctx)  # a repeat: same episode
    assert before["episode"] == 2 and before["flap_times"] == [T0, T0 + 2]
    held = advance(before, ev(Kind.ALERT_RESOLVED), "datadog:1", T0 + 4, flap=ctx)
    assert held["resolved_at"] is None and held["resolve_held_until"] == T0 + 4 + 60_000
    assert held["resolve_held_by"] == "ev1"
    stale = advance(held, ev(Kind.ALERT_FIRING), "datadog:1", T0 + 3, flap=ctx)  # received before the resolve
    assert stale["resolve_held_at"] == T0 + 4 and not stale.get("flapping")
    back = advance(held, ev(Kind.ALERT_FIRING), "datadog:1", T0 + 5, flap=ctx)
    assert back["episode"] == 2 and back["resolve_held_at"] is None
    assert back["flapping"] == {"since": T0 + 5, "count": 3}
    released = advance(before, ev(Kind.ALERT_RESOLVED), "datadog:1", T0 + 4, flap=FlapContext(policy, True, "ev1"))
    assert released["resolved_at"] == T0 + 4 and released["resolution_released_by"] == "ev1"
    later = advance(s, ev(Kind.ALERT_RESOLVED), "datadog:1", T0 + 2 + 120_000, flap=ctx)  # the old firings aged out
    assert later["resolved_at"] == T0 + 2 + 120_000


def test_another_alert_joining_ends_the_hold_without_marking_the_incident_flapping() -> None:
    ctx = FlapContext(FlapPolicy(window_ms=60_000, threshold=2), False, "ev1")
    s = advance(None, ev(Kind.ALERT_FIRING), "datadog:1", T0, flap=ctx)
    held = advance(s, ev(Kind.ALERT_RESOLVED), "datadog:1", T0 + 1, flap=ctx)
    assert held["resolve_held_at"] == T0 + 1
    other = ev(Kind.ALERT_FIRING).model_copy(update={"fingerprint": "datadog:2"})  # joined (`grouping:`)
    joined = advance(held, other, "datadog:1", T0 + 2, flap=ctx)
    assert joined["resolve_held_at"] is None and joined["resolved_at"] is None and not joined.get("flapping")
    assert joined["members"] == {"datadog:1": "resolved", "datadog:2": "firing"}
    assert [c["flap"] for c in flap_changes(held, joined, "ev2")] == [False]
    gone = ev(Kind.ALERT_RESOLVED).model_copy(update={"fingerprint": "datadog:2"})
    again = advance(joined, gone, "datadog:1", T0 + 3, flap=ctx)  # every alert resolved: held again, not stuck
    assert again["resolve_held_at"] == T0 + 3 and again["resolved_at"] is None


def test_a_rerun_of_a_release_still_releases_and_a_stale_one_does_not() -> None:
    rec = {"id": "ev1", RELEASE_FIELD: '["a", "b", "c"]'}
    incidents = {"a": {"resolve_held_at": T0, "resolve_held_by": "ev1"},  # still held by this event
                 "b": {"resolved_at": T0, "resolution_released_by": "ev1"},  # released by an earlier run
                 "c": {"resolve_held_at": None, "flapping": {"since": T0, "count": 3}}}  # a firing came since
    assert releasable(rec, incidents) == {"a", "b"}
    assert releasable({"id": "ev2", RELEASE_FIELD: '["a"]'}, incidents) == set()
    assert releasable({"id": "ev1"}, incidents) == set()


def test_the_flapping_settings_are_checked() -> None:
    assert Flapping(window="30m", threshold=4).policy() == FlapPolicy(1_800_000, 4)
    for bad in ({"threshold": 1}, {"window": "0s"}, {"window": "soon"}, {"treshold": 3}):
        with pytest.raises(ValidationError):
            Flapping(**bad)


def test_simulate_says_flapping_is_decided_on_history(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hub.cli.main import main
    from tests.conftest import FIXTURES

    path = rules(tmp_path, 4)
    body = FIXTURES / "alertmanager_firing.json"
    assert main(["simulate", "alertmanager", str(body), "--config", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["flapping"]["threshold"] == 4 and out["flapping"]["window_s"] == WINDOW_S
    assert "opened 3 episodes within 30m" in out["flapping"]["note"]
    assert main(["simulate", "alertmanager", str(body), "--config", str(path)]) == 0
    assert "flapping: a resolve is held once its alert opened 3 episodes within 30m" in capsys.readouterr().out
