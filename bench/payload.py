"""The request both servers are measured with: a real GitHub webhook, signed once.

`X-Hub-Signature-256` covers only the body, so one fixed body with one signature stays valid
while `X-GitHub-Delivery` changes on every request — each request is a new, unique delivery
that the hub must record, not a duplicate it could short-cut.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "inbound" / \
    "github_deployment_status_failure.json"
SECRET = "bench-github-secret"
EVENT = "deployment_status"
PATH = "/webhooks/github"


def body() -> bytes:
    return FIXTURE.read_bytes()


def signature(data: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()


def headers(data: bytes, delivery: str) -> dict[str, str]:
    return {"Content-Type": "application/json", "X-GitHub-Event": EVENT, "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": signature(data), "User-Agent": "GitHub-Hookshot/bench"}
