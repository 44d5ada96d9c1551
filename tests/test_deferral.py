"""Deferral (issue 12, item 3): `grouping: {defer: …}` makes an alert-born incident wait before
its alert workflows act. A group that resolves within the delay pages nobody, and the
skipped page is recorded; one still firing pages when the delay is over. Real worker and
Redis, fake upstreams; the delay is a durable timer like any `after:` step.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from hub.core import metrics
from hub.rules.engine import Rules
from hub.rules.grouping import Grouping, deferred
from hub.rules.loader import load_file
from tests.grouping_rules import DEFAULTS
from tests.test_alert_groups import TOKEN, notification, resolves, triggers
from tests.test_workflows_e2e import Hub, Upstreams


def rules(tmp_path: Path, defer: str) -> Path:
    path = tmp_path / "hub.yaml"
    path.write_text(DEFAULTS.read_text() + f"\ngrouping:\n  defer: {defer}\n")
    return path


async def wait_until(check: Any, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def test_a_group_resolved_within_the_delay_pages_nobody_and_says_so(
        redis_url: str, redis: Any, upstreams: Upstreams, tmp_path: Path) -> None:
    settings = upstreams.settings(redis_url, alertmanager_webhook_token=TOKEN, hub_config=rules(tmp_path, "2s"))
    suppressed = metrics.PAGES_SUPPRESSED.labels("deferral")._value.get()
    async with Hub(settings, redis) as hub:
        fired = await hub.send("alertmanager", notification(aaaa="firing", bbbb="firing"))
        await hub.send("alertmanager", notification(aaaa="resolved", bbbb="resolved"))

        async def page_closed() -> bool:
            actions = await hub.store.actions(fired["id"])
            page = [a for a in actions.values() if a["connector"] == "pagerduty"]
            return bool(page) and all(a["state"] == "skipped" for a in page)
        await wait_until(page_closed)
        actions = await hub.store.actions(fired["id"])
    assert triggers(upstreams) == [] and resolves(upstreams) == [] and upstreams.incidentio.created == []
    assert any("resolved" in (a.get("error") or "") for a in actions.values() if a["connector"] == "pagerduty")
    assert metrics.PAGES_SUPPRESSED.labels("deferral")._value.get() > suppressed


async def test_a_group_still_firing_pages_once_the_delay_is_over(
        redis_url: str, redis: Any, upstreams: Upstreams, tmp_path: Path) -> None:
    settings = upstreams.settings(redis_url, alertmanager_webhook_token=TOKEN, hub_config=rules(tmp_path, "1s"))
    async with Hub(settings, redis) as hub:
        await hub.send("alertmanager", notification(aaaa="firing"))
        assert triggers(upstreams) == []  # not yet

        async def paged() -> bool:
            return len(triggers(upstreams)) == 1
        await wait_until(paged)
    assert len(upstreams.incidentio.created) == 1


def test_defer_makes_the_alert_workflows_wait_and_leaves_the_others_alone() -> None:
    config = load_file(None).config
    waited = {wf.name: wf for wf in deferred(config.workflows, 120.0)}
    assert all(step.after == 120.0 for step in waited["alert-page"].do)
    assert waited["page-on-call"].do[0].after is None  # incidents from the incident tool: at once
    loaded = Rules(config.model_copy(update={"grouping": Grouping(defer="2m")}))
    (alert_page,) = [wf for wf in loaded.config.workflows if wf.name == "alert-page"]
    assert alert_page.do[0].after == 120
