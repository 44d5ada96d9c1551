"""An alert that recovers while its page is still being retried must not stay paged.

PagerDuty answers the first trigger 500 (Retry-After: 3), so the page is retrying when the
recovery arrives a second later. Wanted end state: no open PagerDuty alert for the
fingerprint (either the resolve follows the late trigger, or the trigger is not sent).

The recovery's `pagerduty.resolve` is not planned (the incident has no `page_dedup_key`
until the trigger succeeds), so the trigger's retry must not go out either: the processor
drops a retry of an opening action once its incident has resolved since the event
(`Processor._superseded`), recording it as skipped with the reason.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.fakes.base import Fault
from tests.reliability import payloads as P
from tests.reliability.harness import Sender, wait_final

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


async def test_recovery_during_a_retrying_page_leaves_no_open_page(make_cluster, upstreams, figures) -> None:
    upstreams.pagerduty.faults.append(Fault(status=500, retry_after="3", body="try again"))
    cluster = await make_cluster({**upstreams.env(), "HUB_JOB_TIMEOUT": "10"}, workers=1).start()
    fire, recover = P.datadog_alert(1), P.datadog_alert(1, transition="Recovered")
    async with Sender(cluster.url) as sender:
        fired = await sender.post_all([fire])
        await asyncio.sleep(1)  # the trigger has failed once and is waiting for its retry
        recovered = await sender.post_all([recover])
    await wait_final(cluster.redis_client, [fired[0].event_id, recovered[0].event_id], timeout=60, cluster=cluster)
    await asyncio.sleep(1)
    sent = [(r.json()["event_action"], r.json().get("dedup_key")) for r in upstreams.pagerduty.requests]
    alert = upstreams.pagerduty.alerts.get((upstreams.env()["PAGERDUTY_ROUTING_KEY"], fire.keys[0]))
    figures.update(pagerduty_requests=sent, final_alert_status=alert.status if alert else None)
    assert alert is None or alert.status == "resolved", sent
    actions = await cluster.redis_client.hgetall(f"hub:ev:{fired[0].event_id}:actions")
    states = {json.loads(v)["name"]: (json.loads(v)["state"], json.loads(v)["error"]) for v in actions.values()}
    state, why = states["pagerduty.trigger"]
    assert state == "skipped" and "resolved before" in why
