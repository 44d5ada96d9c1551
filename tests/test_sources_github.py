"""GitHub (the reference source): the CONTRACTS §1.1 vector and every fixture end to end at the ingress.

`test_ingress.py` covers the failure fixture in depth; this adds the vector, the other
fixtures with their recorded headers, and what each normalises to.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from connectors.github import source
from hub.events import Kind
from hub.verify import check_hex_hmac, sign_hex_hmac
from tests.conftest import fixture_request

FIXTURES = {
    "github_deployment.json": [(Kind.DEPLOY_STARTED, "github:deploy:Codertocat/Hello-World:145988746")],
    "github_deployment_status_success.json": [(Kind.DEPLOY_SUCCEEDED,
                                               "github:deploy:Codertocat/Hello-World:145988746")],
    "github_deployment_status_failure.json": [(Kind.DEPLOY_FAILED, "github:deploy:Codertocat/Hello-World:145988746")],
    "github_workflow_run_completed.json": [],  # an unnamed workflow is not a deploy by default
}


def test_contracts_vector() -> None:
    secret, body = "It's a Secret to Everybody", b"Hello, World!"
    expected = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert sign_hex_hmac(secret, body) == expected
    assert check_hex_hmac([secret], body, [expected])
    assert not check_hex_hmac([secret], body + b" ", [expected])
    assert not check_hex_hmac(["another"], body, [expected])


@pytest.mark.parametrize("name", sorted(FIXTURES))
async def test_fixture_is_accepted_then_a_duplicate(client: TestClient, redis: Any, name: str) -> None:
    body, headers = fixture_request(name)
    first = await client.post("/webhooks/github", data=body, headers=headers)
    assert first.status == 202, await first.text()
    event_id = (await first.json())["event_id"]
    rec = await redis.hgetall(f"hub:ev:{event_id}")
    assert rec[b"delivery_id"] == headers["X-GitHub-Delivery"].encode()
    again = await client.post("/webhooks/github", data=body, headers=headers)
    assert await again.json() == {"event_id": event_id, "status": "duplicate"}


@pytest.mark.parametrize(("name", "expected"), sorted(FIXTURES.items()))
def test_fixture_normalises(name: str, expected: list[tuple[Kind, str]]) -> None:
    body, headers = fixture_request(name)
    evs = source.normalise(source.parse(body, headers, "application/json"), headers, {})
    assert [(e.kind, e.fingerprint) for e in evs] == expected
    for ev in evs:
        assert ev.environment == "production" and ev.services == ["Hello-World"]
        assert ev.attributes["repository"] == "Codertocat/Hello-World"


def test_workflow_run_named_like_a_deploy_is_one() -> None:
    body, headers = fixture_request("github_workflow_run_completed.json")
    data = json.loads(body)
    data["workflow_run"]["name"] = "Deploy to production"
    p = source.parse(json.dumps(data).encode(), headers, "application/json")
    (ev,) = source.normalise(p, headers, {})
    assert ev.kind == Kind.DEPLOY_SUCCEEDED
    assert ev.fingerprint == f"github:workflow:octo-org/octo-repo:{data['workflow_run']['id']}"
    assert source.normalise(p, headers, {"deploy_workflows": ["release"]}) == []
