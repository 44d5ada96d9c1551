"""The request both servers are measured with: a real GitHub webhook, signed once.

`X-Hub-Signature-256` covers only the body, so one fixed body with one signature stays valid
while `X-GitHub-Delivery` changes on every request — each request is a new, unique delivery
that the hub must record, not a duplicate it could short-cut.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "inbound" / \
    "github_deployment_status_failure.json"
#: The webhook secret of a run: drawn per run, not a secret-shaped literal. The processes of a
#: run (servers, the Python load generator) inherit it through the environment.
SECRET = os.environ.setdefault("BENCH_GITHUB_SECRET", secrets.token_urlsafe(24))
EVENT = "deployment_status"
PATH = "/webhooks/github"


#: `BENCH_BODY=2k`: the same delivery without the repository's and the users' long URL lists
#: (~2 KB, the size of a small real webhook); unset or `10k`: the fixture as GitHub sent it.
SIZES = ("10k", "2k")


def body(size: str | None = None) -> bytes:
    size = size or os.environ.get("BENCH_BODY") or "10k"
    if size not in SIZES:
        raise SystemExit(f"BENCH_BODY must be one of {', '.join(SIZES)}, not {size!r}")
    data = FIXTURE.read_bytes()
    if size == "10k":
        return data
    full = json.loads(data)
    repo, dep, status = full["repository"], full["deployment"], full["deployment_status"]
    small = {
        "action": full["action"],
        "deployment_status": {k: status[k] for k in ("id", "state", "description", "environment", "target_url",
                                                     "log_url", "created_at", "updated_at", "url")
                              if k in status},
        "deployment": {k: dep[k] for k in ("id", "node_id", "sha", "ref", "task", "environment", "description",
                                           "created_at", "updated_at", "url", "statuses_url", "repository_url")
                       if k in dep},
        "repository": {k: repo[k] for k in ("id", "node_id", "name", "full_name", "html_url", "private",
                                            "default_branch", "url", "deployments_url", "description")
                       if k in repo},
        "sender": {k: full["sender"][k] for k in ("login", "id", "type", "html_url") if k in full["sender"]},
    }
    small["deployment"]["creator"] = small["sender"]
    small["deployment_status"]["creator"] = small["sender"]
    return json.dumps(small, indent=2).encode()


def signature(data: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()


def headers(data: bytes, delivery: str) -> dict[str, str]:
    return {"Content-Type": "application/json", "X-GitHub-Event": EVENT, "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": signature(data), "User-Agent": "GitHub-Hookshot/bench"}
