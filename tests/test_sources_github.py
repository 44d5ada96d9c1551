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
from hub.core.events import Kind
from hub.ingress.verify import check_hex_hmac, sign_hex_hmac
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


def form_encoded(name: str, delivery: str) -> tuple[bytes, dict[str, str]]:
    """A fixture as GitHub sends it with content type application/x-www-form-urlencoded."""
    from urllib.parse import urlencode

    from tests.conftest import GITHUB_SECRET

    json_body, headers = fixture_request(name)
    body = urlencode({"payload": json_body.decode()}).encode()
    return body, {**headers, "Content-Type": "application/x-www-form-urlencoded", "X-GitHub-Delivery": delivery,
                  "X-Hub-Signature-256": "sha256=" + sign_hex_hmac(GITHUB_SECRET, body)}


async def test_form_encoded_delivery_is_accepted_and_normalised_from_the_record(client: TestClient,
                                                                               redis: Any) -> None:
    body, headers = form_encoded("github_deployment_status_failure.json", "form-1")
    resp = await client.post("/webhooks/github", data=body, headers=headers)
    assert resp.status == 202, await resp.text()
    rec = await redis.hgetall(f"hub:ev:{(await resp.json())['event_id']}")
    assert rec[b"body"] == body and rec[b"content_type"] == b"application/x-www-form-urlencoded"
    (ev,) = source.normalise(source.parse(rec[b"body"], headers, rec[b"content_type"].decode()), headers, {})
    assert (ev.kind, ev.fingerprint) == (Kind.DEPLOY_FAILED, "github:deploy:Codertocat/Hello-World:145988746")


@pytest.mark.parametrize(("body", "code"), [
    (b"payload=%7Bnot-json", "malformed_json"),
    (b"other=1", "malformed_form"),
    (b"payload=\xff\xfe", "malformed_form"),
])
async def test_bad_form_bodies_are_400_and_not_stored(client: TestClient, redis: Any, body: bytes, code: str) -> None:
    from tests.conftest import GITHUB_SECRET

    resp = await client.post("/webhooks/github", data=body, headers={
        "Content-Type": "application/x-www-form-urlencoded", "X-GitHub-Event": "deployment_status",
        "X-GitHub-Delivery": "form-bad", "X-Hub-Signature-256": "sha256=" + sign_hex_hmac(GITHUB_SECRET, body)})
    assert resp.status == 400
    assert (await resp.json())["error"] == code
    assert await redis.keys("hub:ev:*") == []


def test_deploy_links_are_pages_a_person_can_open_never_the_api() -> None:
    """The deployment's log, else its target page, else the repository; api.github.com never."""
    body, headers = fixture_request("github_deployment_status_failure.json")
    data = json.loads(body)
    (ev,) = source.normalise(source.parse(body, headers, "application/json"), headers, {})
    assert [(link.href, link.text) for link in ev.links] == [("https://github.com/Codertocat/Hello-World",
                                                              "repository")]
    assert ev.attributes["url"] == "https://github.com/Codertocat/Hello-World"
    data["deployment_status"].update(log_url="https://github.com/Codertocat/Hello-World/actions/runs/1",
                                     target_url="https://api.github.com/repos/x/y/deployments/1",
                                     environment_url="https://checkout.example.com")
    raw = json.dumps(data).encode()
    (ev,) = source.normalise(source.parse(raw, headers, "application/json"), headers, {})
    assert [link.href for link in ev.links] == ["https://github.com/Codertocat/Hello-World/actions/runs/1",
                                                "https://checkout.example.com"]
    assert ev.attributes["url"] == "https://github.com/Codertocat/Hello-World/actions/runs/1"
