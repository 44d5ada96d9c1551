"""End to end in one process: signed fixture → ingress → Redis → worker → fake Slack."""

from __future__ import annotations

from aiohttp.test_utils import TestClient, TestServer

from hub.ingress.app import create_app
from hub.storage.event_store import Store
from tests.conftest import fixture_request, make_settings, wait_for
from tests.fakes.base import Fault


async def _final(store: Store, event_id: str) -> dict:
    async def check():
        rec = await store.get(event_id)
        return rec if rec and rec["state"] in ("done", "partially_failed", "dead") else None
    return await wait_for(check, timeout=15)


async def _deliver(settings, redis, running_worker, fixture: str) -> tuple[Store, str, dict]:
    """Post a signed fixture through the real app with a worker running; wait for its final state."""
    store = Store(redis, settings)
    body, headers = fixture_request(fixture)
    async with TestClient(TestServer(create_app(settings))) as c, running_worker(settings):
        event_id = (await (await c.post("/webhooks/github", data=body, headers=headers)).json())["event_id"]
        rec = await _final(store, event_id)
    return store, event_id, rec


async def test_failed_production_deploy_posts_to_slack(redis_url, redis, fake_slack, running_worker) -> None:
    settings = make_settings(redis_url, slack_webhook_url=fake_slack.webhook_url)
    store, event_id, rec = await _deliver(settings, redis, running_worker, "github_deployment_status_failure.json")
    assert rec["state"] == "done"
    assert len(fake_slack.requests) == 1
    msg = fake_slack.requests[0].json()
    assert "production failed" in msg["text"] and "Hello-World" in msg["text"]
    actions = await store.actions(event_id)
    (action,) = actions.values()
    assert action["state"] == "succeeded" and action["attempts"][0]["status"] == 200
    assert action["params"].get("webhook_url") is None or action["params"]["webhook_url"] == "***"
    kinds = [e["type"] for e in await store.timeline(event_id)]
    assert kinds[0] == "received" and "parsed" in kinds and kinds[-1] == "state"


async def test_success_deploy_is_done_with_no_action(redis_url, redis, fake_slack, running_worker) -> None:
    settings = make_settings(redis_url, slack_webhook_url=fake_slack.webhook_url)
    store, event_id, rec = await _deliver(settings, redis, running_worker, "github_deployment_status_success.json")
    assert rec["state"] == "done"
    assert rec["events"][0]["kind"] == "deploy.succeeded"
    assert fake_slack.requests == [] and await store.actions(event_id) == {}


async def test_no_slack_url_records_skipped(redis_url, redis, running_worker) -> None:
    settings = make_settings(redis_url)
    store, event_id, rec = await _deliver(settings, redis, running_worker, "github_deployment_status_failure.json")
    assert rec["state"] == "done"
    (action,) = (await store.actions(event_id)).values()
    assert action["state"] == "skipped"
    assert action["error"] == "skipped: slack not configured (SLACK_WEBHOOK_URL)"


async def test_slack_500_then_429_is_retried_then_delivered_once(redis_url, redis, fake_slack, running_worker,
                                                                  monkeypatch) -> None:
    from connectors.base import RetryPolicy
    from connectors.slack import Slack

    monkeypatch.setattr(Slack, "retry_policy", RetryPolicy(max_attempts=5, base_delay=0.05, max_delay=0.2))
    fake_slack.faults.extend([Fault(status=500), Fault(status=429, retry_after="1")])
    settings = make_settings(redis_url, slack_webhook_url=fake_slack.webhook_url)
    store, event_id, rec = await _deliver(settings, redis, running_worker, "github_deployment_status_failure.json")
    assert rec["state"] == "done"
    (action,) = (await store.actions(event_id)).values()
    assert [a["status"] for a in action["attempts"]] == [500, 429, 200]
    assert len(fake_slack.requests) == 3  # two refused, one delivered


async def test_slack_permanent_error_dead_letters_with_body(redis_url, redis, fake_slack, running_worker) -> None:
    fake_slack.faults.append(Fault(status=404, body="channel_not_found"))
    settings = make_settings(redis_url, slack_webhook_url=fake_slack.webhook_url)
    store, event_id, rec = await _deliver(settings, redis, running_worker, "github_deployment_status_failure.json")
    assert rec["state"] == "dead"
    (action,) = (await store.actions(event_id)).values()
    assert action["state"] == "dead" and "channel_not_found" in action["last_response"]
    assert len(fake_slack.requests) == 1
    assert await redis.zscore("hub:dead", f"{event_id}/{action['id']}") is not None


async def test_job_run_twice_sends_once(redis_url, redis, fake_slack) -> None:
    """arq is at-least-once: a second run of the same event job must not post again."""
    from hub.worker.app import process_event, shutdown, startup

    settings = make_settings(redis_url, slack_webhook_url=fake_slack.webhook_url)
    store = Store(redis, settings)
    body, headers = fixture_request("github_deployment_status_failure.json")
    async with TestClient(TestServer(create_app(settings))) as c:
        event_id = (await (await c.post("/webhooks/github", data=body, headers=headers)).json())["event_id"]
    ctx = {"settings": settings, "redis": redis}
    await startup(ctx)
    try:
        await process_event(ctx, event_id)
        await process_event(ctx, event_id)
    finally:
        await shutdown(ctx)
    assert len(fake_slack.requests) == 1
    assert (await store.get(event_id))["state"] == "done"


async def test_a_stopped_worker_is_not_counted_by_readyz(redis_url, redis) -> None:
    """Right after a restart /readyz must not count the worker that just stopped (its heartbeat is fresh)."""
    from tests.conftest import RunningWorker

    settings = make_settings(redis_url)
    store = Store(redis, settings)
    async with TestClient(TestServer(create_app(settings))) as client:
        async with RunningWorker(settings):
            await wait_for(store.live_workers)
            assert (await (await client.get("/readyz")).json())["workers"] == 1
        ready = await client.get("/readyz")
        assert ready.status == 503 and (await ready.json())["workers"] == 0
