"""Jira through the real ActionRunner and the real `jira` library against the fake over loopback."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from connectors.jira import Jira, due_date, hub_label
from hub.storage.embedded_redis import free_port
from tests.conftest import make_settings, wait_for
from tests.connector_harness import FAST_RETRY, Harness, planned
from tests.fakes.base import Fault
from tests.fakes.jira import EMAIL, TOKEN, FakeJira

ISSUE = {"key": "followup-01HX", "summary": "Post-mortem: checkout outage", "description": "Write it up.",
         "labels": ["post mortem", "sev1"], "issuetype": "Post-mortem", "duedate": "2030-01-31"}


def jira_settings(redis_url: str, url: str) -> Any:
    return make_settings(redis_url, jira_url=url, jira_email=EMAIL, jira_api_token=TOKEN, jira_project="OPS")


@pytest.fixture(params=["Server", "Cloud"])
async def fake(request: pytest.FixtureRequest) -> AsyncIterator[FakeJira]:
    async with FakeJira(deployment=request.param) as fake:
        yield fake


@pytest.fixture
async def hub(redis: Any, redis_url: str, fake: FakeJira, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Harness]:
    monkeypatch.setattr(Jira, "retry_policy", FAST_RETRY)
    monkeypatch.setattr(Jira, "index_grace", 0.0)
    async with Harness(redis, jira_settings(redis_url, fake.url), Jira) as h:
        yield h


def create(key: str = ISSUE["key"], **params: Any) -> Any:
    return planned("jira", "create_issue", {**ISSUE, "key": key, **params}, action_id=f"wf.issue.{key}")


async def test_create_issue_is_one_post_with_dict_fields(hub: Harness, fake: FakeJira) -> None:
    rec = await hub.run(create())
    assert rec["state"] == "succeeded"
    assert [(r.method, r.path) for r in fake.requests] == [("GET", "/rest/api/2/serverInfo"),
                                                           ("POST", "/rest/api/2/issue")]
    req = fake.requests[1]
    assert req.headers["Authorization"] == "Basic " + base64.b64encode(f"{EMAIL}:{TOKEN}".encode()).decode()
    fields = req.json()["fields"]
    assert fields["project"] == {"key": "OPS"} and fields["issuetype"] == {"name": "Post-mortem"}
    assert fields["summary"] == "Post-mortem: checkout outage" and fields["description"] == "Write it up."
    assert fields["labels"] == ["post-mortem", "sev1", hub_label("followup-01HX")]
    assert fields["duedate"] == "2030-01-31"
    assert rec["result"] == {"jira_issue_key": "OPS-1", "jira_issue_url": f"{fake.url}/browse/OPS-1"}


async def test_client_is_built_once_per_worker(hub: Harness, fake: FakeJira) -> None:
    await hub.run(create("a"), "ev_1")
    await hub.run(create("b"), "ev_2")
    assert len(fake.calls("/rest/api/2/serverInfo")) == 1 and fake.created == ["OPS-1", "OPS-2"]


def test_due_in_is_a_date_from_now() -> None:
    now = datetime(2030, 1, 30, 23, 0, tzinfo=UTC)
    assert due_date({"due_in": "48h"}, now) == "2030-02-01"
    assert due_date({"duedate": "2030-03-01T10:00:00Z"}) == "2030-03-01"
    assert due_date({}) is None
    with pytest.raises(ValueError, match="not a date"):
        due_date({"duedate": "next tuesday"})


async def test_due_in_reaches_jira(hub: Harness, fake: FakeJira) -> None:
    params = {k: v for k, v in ISSUE.items() if k != "duedate"}
    await hub.run(planned("jira", "create_issue", {**params, "due_in": "48h"}))
    expected = (datetime.now(UTC) + timedelta(hours=48)).date().isoformat()
    assert fake.calls("/rest/api/2/issue", "POST")[0].json()["fields"]["duedate"] == expected


async def test_comment_on_the_issue_created_for_a_key(hub: Harness, fake: FakeJira) -> None:
    await hub.run(create())
    rec = await hub.run(planned("jira", "comment", {"key": ISSUE["key"], "body": "Deploy abc123 rolled back."},
                                action_id="wf.comment"))
    assert rec["state"] == "succeeded"
    (req,) = fake.calls("/rest/api/2/issue/OPS-1/comment", "POST")
    assert req.json() == {"body": "Deploy abc123 rolled back."}
    assert rec["result"] == {"jira_issue_key": "OPS-1", "jira_comment_id": fake.comments["OPS-1"][0]["id"]}


async def test_comment_on_an_explicit_issue_and_on_an_unknown_key(hub: Harness, fake: FakeJira) -> None:
    await hub.run(create())
    explicit = await hub.run(planned("jira", "comment", {"issue": "OPS-1", "body": "hello"}, action_id="c1"))
    unknown = await hub.run(planned("jira", "comment", {"key": "never-created", "body": "hello"}, action_id="c2"))
    assert explicit["state"] == "succeeded" and len(fake.comments["OPS-1"]) == 1
    assert unknown["state"] == "skipped" and "no Jira issue recorded" in unknown["error"]


async def test_job_run_twice_creates_one_issue(hub: Harness, fake: FakeJira) -> None:
    first = await hub.run(create())
    await hub.run(create())
    again = await hub.run(create(), "ev_other", fresh=True)
    assert fake.created == ["OPS-1"] and again["result"] == first["result"]


async def test_timeout_after_send_is_found_by_label(hub: Harness, fake: FakeJira, monkeypatch: pytest.MonkeyPatch
                                                    ) -> None:
    await hub.run(create("warm-up"), "ev_warm")  # the client exists; the stall hits the create
    monkeypatch.setattr(Jira, "timeout", 0.3)
    hub.connector("jira")._client = None  # rebuilt with the short timeout
    fake.faults.extend([Fault(), Fault(stall=0.8)])  # serverInfo passes, the create is slow
    first = await hub.run(create())
    assert first["state"] == "retrying" and first["attempts"][0]["ambiguous"] is True
    await wait_for(lambda: asyncio.sleep(0, len(fake.created) == 2))
    rec = await hub.run_to_final(create())
    assert rec["state"] == "succeeded" and rec["result"]["jira_issue_key"] == "OPS-2"
    assert fake.created == ["OPS-1", "OPS-2"]
    search_path = "/rest/api/2/search/jql" if fake.deployment == "Cloud" else "/rest/api/2/search"
    (search,) = fake.calls(search_path)
    assert search.query["jql"] == f'labels = "{hub_label(ISSUE["key"])}" ORDER BY created ASC'


async def test_search_index_lag_is_waited_out(hub: Harness, fake: FakeJira, monkeypatch: pytest.MonkeyPatch) -> None:
    """After an unconfirmed create, an empty search is not trusted until the index had time."""
    await hub.run(create("warm-up"), "ev_warm")
    monkeypatch.setattr(Jira, "timeout", 0.3)
    monkeypatch.setattr(Jira, "index_grace", 2.0)
    monkeypatch.setattr(Jira, "in_flight_grace", 0.5)  # the create lands 0.3 s after we gave up
    hub.connector("jira")._client = None
    fake.index_lag = 1.0
    fake.faults.extend([Fault(), Fault(stall=0.6)])
    rec = await hub.run_to_final(create())
    assert rec["state"] == "succeeded" and fake.created == ["OPS-1", "OPS-2"]
    assert any("search index" in (a["error"] or "") for a in rec["attempts"])


async def test_429_and_500_are_retried_with_the_library_retries_off(hub: Harness, fake: FakeJira) -> None:
    await hub.run(create("warm-up"), "ev_warm")
    fake.faults.extend([Fault(status=429, retry_after="0", body='{"errorMessages":["Rate limit"]}'),
                        Fault(status=500, body='{"errorMessages":["Internal"]}')])
    rec = await hub.run_to_final(create())
    assert [a["status"] for a in rec["attempts"]] == [429, 500, None]  # None: the library gave no status
    assert rec["state"] == "succeeded" and len(fake.calls("/rest/api/2/issue", "POST")) == 1 + 3


async def test_400_is_dead_with_jiras_errors(hub: Harness, fake: FakeJira) -> None:
    rec = await hub.run(create(project="NOPE"))
    assert rec["state"] == "dead" and rec["attempts"][-1]["status"] == 400
    assert "valid project is required" in rec["last_response"]
    assert TOKEN not in str(rec)


async def test_unreachable_jira_is_retried_as_not_sent(redis: Any, redis_url: str, monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    monkeypatch.setattr(Jira, "retry_policy", FAST_RETRY)
    async with Harness(redis, jira_settings(redis_url, f"http://127.0.0.1:{free_port()}"), Jira) as h:
        rec = await h.run_to_final(create())
    assert rec["state"] == "dead" and len(rec["attempts"]) == FAST_RETRY.max_attempts
    assert all(a["ambiguous"] is False and a["error"].startswith("connection failed") for a in rec["attempts"])


async def test_not_configured_is_skipped(redis: Any, redis_url: str) -> None:
    settings = make_settings(redis_url, jira_url="https://jira.example", jira_project="OPS")
    async with Harness(redis, settings, Jira) as h:
        rec = await h.run(create())
    assert rec["state"] == "skipped" and rec["error"] == "skipped: jira not configured (JIRA_EMAIL, JIRA_API_TOKEN)"


async def test_priority_and_assignee_reach_jira(hub: Harness, fake: FakeJira) -> None:
    """The follow-up's priority (renamed through priority_map) and its assignee, found by email."""
    rec = await hub.run(create(priority="Urgent", priority_map={"urgent": "Highest"},
                               assignee_email="Maria.Lopez@acme.example"))
    assert rec["state"] == "succeeded" and "jira_dropped_fields" not in rec["result"]
    fields = fake.issues["OPS-1"]["fields"]
    assert fields["priority"] == {"name": "Highest"}
    expected = {"accountId": "5b10ac8d82e05b22cc7d4ef5"} if fake.deployment == "Cloud" else {"name": "mlopez"}
    assert fields["assignee"] == expected


async def test_an_unknown_priority_or_assignee_does_not_lose_the_issue(hub: Harness, fake: FakeJira) -> None:
    rec = await hub.run(create(priority="P0-ish", assignee_email="nobody@acme.example"))
    assert rec["state"] == "succeeded"
    assert "assignee" not in fake.issues["OPS-1"]["fields"]  # nobody found: unassigned
    assert rec["result"]["jira_dropped_fields"] == ["priority"]  # refused by Jira: created without it
    assert "priority" not in fake.issues["OPS-1"]["fields"] and fake.created == ["OPS-1"]


async def test_an_explicit_assignee_is_an_account_id_on_cloud_and_a_name_on_server(hub: Harness,
                                                                                  fake: FakeJira) -> None:
    ref = "5b10ac8d82e05b22cc7d4ef5" if fake.deployment == "Cloud" else "mlopez"
    rec = await hub.run(create(assignee=ref))
    assert rec["state"] == "succeeded"
    key = "accountId" if fake.deployment == "Cloud" else "name"
    assert fake.issues["OPS-1"]["fields"]["assignee"] == {key: ref}
