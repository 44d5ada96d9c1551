"""GitHub: receives `deployment`, `deployment_status`, `workflow_run` and `ping` webhooks.

Auth: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, raw body)>`; no timestamp, so
redelivery is recognised by `X-GitHub-Delivery` (GitHub keeps it on manual redelivery).

Content type: `application/json`, or `application/x-www-form-urlencoded` (a webhook's
default in GitHub's settings page), where the JSON is the `payload` form field and the
signature covers the form body as sent.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel, ValidationError

from connectors._lenient import Lenient, LooseInt, Opt, Text
from connectors.base import BadPayload, InboundSource, Setting, is_json_content_type, summarise_validation
from hub.core.events import Kind, Link, NormalisedEvent
from hub.ingress.verify import AuthError, check_hex_hmac, first_credential, sign_hex_hmac

if TYPE_CHECKING:
    from hub.core.settings import Settings


class Repo(Lenient):
    full_name: Text = None
    name: Text = None
    html_url: Text = None


class User(Lenient):
    login: Text = None


class Deployment(Lenient):
    id: int | str
    sha: Text = None
    ref: Text = None
    environment: Text = None
    description: Text = None
    creator: Opt[User] = None
    created_at: Opt[datetime] = None
    url: Text = None


class DeploymentStatus(Lenient):
    id: Opt[int | str] = None
    state: str
    environment: Text = None
    description: Text = None
    target_url: Text = None
    log_url: Text = None
    environment_url: Text = None
    created_at: Opt[datetime] = None


class WorkflowRun(Lenient):
    id: int | str
    name: Text = None
    status: Text = None
    conclusion: Text = None
    head_sha: Text = None
    head_branch: Text = None
    html_url: Text = None
    path: Text = None
    updated_at: Opt[datetime] = None
    actor: Opt[User] = None


class GitHubPayload(Lenient):
    """What the worker reads. Cosmetic fields degrade to None rather than refuse the event."""

    action: Text = None
    repository: Opt[Repo] = None
    sender: Opt[User] = None
    deployment: Deployment | None = None
    deployment_status: DeploymentStatus | None = None
    workflow_run: WorkflowRun | None = None
    zen: Text = None
    hook_id: LooseInt = None


class _Id(Lenient):
    id: int | str


class _State(Lenient):
    state: str


class GitHubIngress(Lenient):
    """The essential fields only, validated straight from the bytes at the ingress (hot path)."""

    deployment: _Id | None = None
    deployment_status: _State | None = None
    workflow_run: _Id | None = None


#: What each GitHub event must carry for the hub to use it.
_REQUIRED = {"deployment": ("deployment",), "deployment_status": ("deployment", "deployment_status"),
             "workflow_run": ("workflow_run",)}

FORM = "application/x-www-form-urlencoded"


def form_payload(body: bytes) -> bytes:
    """The JSON of a form-encoded delivery (`payload=<url-encoded JSON>`)."""
    try:
        fields = parse_qs(body.decode("utf-8"), max_num_fields=20, strict_parsing=False)
    except (UnicodeDecodeError, ValueError) as e:
        raise BadPayload("malformed_form", f"body is not valid form data: {e}") from None
    values = fields.get("payload")
    if not values:
        raise BadPayload("malformed_form", "form body has no payload field")
    return values[0].encode("utf-8", "surrogatepass")


def _page_links(*candidates: tuple[str | None, str]) -> list[Link]:
    """Links a person can open, best first: the deployment's log or page, else the repository.

    GitHub's `url` fields (api.github.com, or /api/v3 on Enterprise) are JSON API URLs, never
    shown; a deployment without a `log_url`/`target_url` gets its repository's page.
    """
    out: list[Link] = []
    for href, text in candidates:
        if not href or not href.startswith(("https://", "http://")) or _is_api_url(href):
            continue
        if href not in (link.href for link in out) and not (text == "repository" and out):
            out.append(Link(href=href, text=text))
    return out


def _is_api_url(href: str) -> bool:
    host = urlsplit(href).hostname or ""
    return host == "api.github.com" or "/api/v3/" in href


#: Workflows whose completed runs count as deploys when the catalog does not say.
DEFAULT_DEPLOY_WORKFLOWS = ("deploy", "release", "cd")


class GitHubSource(InboundSource):
    name = "github"
    recorded_headers = ("X-GitHub-Event", "X-GitHub-Delivery", "X-GitHub-Hook-ID", "User-Agent",
                        "X-GitHub-Enterprise-Host")
    credential_settings = ("github_webhook_secret",)
    variables = (Setting("GITHUB_WEBHOOK_SECRET", secret=True, rotating=True),)
    model = GitHubPayload
    accepted_content_types = "application/json or application/x-www-form-urlencoded"

    def accepts_content_type(self, content_type: str) -> bool:
        return content_type == FORM or is_json_content_type(content_type)

    def decode(self, body: bytes, content_type: str) -> Any:
        return super().decode(form_payload(body) if content_type == FORM else body, content_type)

    def verify(self, body: bytes, headers: Mapping[str, str], settings: Settings) -> str:
        sig = headers.get("X-Hub-Signature-256")
        if not sig:
            raise AuthError("missing_signature", "X-Hub-Signature-256 header missing (set the webhook secret "
                                                 "in GitHub to GITHUB_WEBHOOK_SECRET)")
        scheme, _, digest = sig.strip().partition("=")
        if scheme != "sha256" or not check_hex_hmac(settings.github_webhook_secret, body, [digest]):
            raise AuthError("bad_signature", "X-Hub-Signature-256 does not match GITHUB_WEBHOOK_SECRET")
        return "hmac-sha256 (X-Hub-Signature-256)"

    def validate(self, data: Any, headers: Mapping[str, str]) -> BaseModel:
        return self._require(headers, super().validate(data, headers))

    sample_headers = {"X-GitHub-Event": "deployment_status", "User-Agent": "GitHub-Hookshot/incident-hub-send"}

    def guess_headers(self, body: bytes, *, sending: bool = False) -> dict[str, str]:
        """The event type is a header: guessed from the body's shape (sending: `ping` when nothing fits)."""
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        event = None
        if isinstance(data, dict):
            event = next((k for k in ("deployment_status", "workflow_run", "deployment") if data.get(k)), None)
            event = event or ("ping" if "zen" in data else None)
        event = event or ("ping" if sending else None)
        return {"X-GitHub-Event": event} if event else {}

    def sign_request(self, body: bytes, settings: Settings, now: float | None = None, *,
                     same_id: bool = False) -> dict[str, str]:
        secret = first_credential(settings.github_webhook_secret, "GITHUB_WEBHOOK_SECRET")
        delivery = str(uuid.UUID(hashlib.sha256(body).hexdigest()[:32])) if same_id else str(uuid.uuid4())
        return {"Content-Type": "application/json", "X-GitHub-Delivery": delivery,
                "X-Hub-Signature-256": "sha256=" + sign_hex_hmac(secret, body)}

    def parse_ingress(self, body: bytes, headers: Mapping[str, str], content_type: str) -> BaseModel:
        """Only what the hub needs, parsed in pydantic-core from the bytes: GitHub bodies are
        large (10-25 KB) and the worker parses the stored body in full anyway."""
        try:
            payload = GitHubIngress.model_validate_json(form_payload(body) if content_type == FORM else body)
        except ValidationError as e:
            if any(err["type"] == "json_invalid" for err in e.errors()):
                raise BadPayload("malformed_json", "body is not valid JSON") from None
            raise BadPayload("invalid_payload", f"not a github webhook: {summarise_validation(e)}") from None
        return self._require(headers, payload)

    @staticmethod
    def _require(headers: Mapping[str, str], payload: BaseModel) -> BaseModel:
        event = headers.get("X-GitHub-Event", "")
        if not event:
            raise BadPayload("missing_event", "X-GitHub-Event header missing")
        for attr in _REQUIRED.get(event, ()):
            if getattr(payload, attr) is None:
                raise BadPayload("invalid_payload", f"not a GitHub {event} webhook: {attr}: Field required")
        return payload

    def delivery_id(self, payload: BaseModel, headers: Mapping[str, str], body: bytes) -> str:
        delivery = headers.get("X-GitHub-Delivery", "").strip()
        if not delivery:
            raise BadPayload("missing_delivery", "X-GitHub-Delivery header missing")
        return delivery[:200]

    def normalise(self, payload: BaseModel, headers: Mapping[str, str],
                  options: Mapping[str, Any] | None = None) -> list[NormalisedEvent]:
        assert isinstance(payload, GitHubPayload)
        event = headers.get("X-GitHub-Event", "")
        repo = (payload.repository.full_name if payload.repository else None) or ""
        service = (payload.repository.name if payload.repository else None) or ""
        repo_url = (payload.repository.html_url if payload.repository else None) or ""
        if event == "ping":
            return [NormalisedEvent(kind=Kind.PING, source=self.name, fingerprint=f"github:ping:{payload.hook_id}",
                                    title=f"GitHub ping: {payload.zen or ''}".strip())]
        if event == "deployment" and payload.deployment:
            d = payload.deployment
            return [self._deploy(Kind.DEPLOY_STARTED, d, repo, service, d.environment or "", d.description or "",
                                 _page_links((repo_url, "repository")), d.created_at, "created")]
        if event == "deployment_status" and payload.deployment and payload.deployment_status:
            d, s = payload.deployment, payload.deployment_status
            kind = {"success": Kind.DEPLOY_SUCCEEDED, "failure": Kind.DEPLOY_FAILED,
                    "error": Kind.DEPLOY_FAILED}.get(s.state)
            if kind is None:
                return []
            links = _page_links((s.log_url, "deployment log"), (s.target_url, "deployment"),
                                (s.environment_url, "environment"), (repo_url, "repository"))
            return [self._deploy(kind, d, repo, service, s.environment or d.environment or "", s.description or "",
                                 links, s.created_at, s.state)]
        if event == "workflow_run" and payload.workflow_run:
            return self._workflow_run(payload.workflow_run, payload.action, repo, service, options or {})
        return []

    def no_events_reason(self, payload: BaseModel, headers: Mapping[str, str],
                         options: Mapping[str, Any] | None = None) -> str:
        assert isinstance(payload, GitHubPayload)
        event = headers.get("X-GitHub-Event", "")
        if event == "deployment_status" and payload.deployment_status:
            return (f"deployment_status {payload.deployment_status.state!r}: only success, failure and error "
                    "are deploy results")
        if event == "workflow_run" and payload.workflow_run:
            run = payload.workflow_run
            names = [str(n) for n in (options or {}).get("deploy_workflows", DEFAULT_DEPLOY_WORKFLOWS)]
            if payload.action != "completed":
                return f"workflow_run {payload.action!r}: only completed runs count"
            if not any(n.lower() in (run.name or "").lower() for n in names):
                return (f"workflow {run.name!r} is not a deploy workflow (names containing "
                        f"{', '.join(names)}; the catalog's github deploy_workflows option)")
            return f"workflow run conclusion {run.conclusion!r}: only success, failure and timed_out count"
        if event in _REQUIRED:
            return f"{event} without the objects the hub reads"
        return f"GitHub event {event!r} is not one the hub acts on (deployment, deployment_status, workflow_run)"

    def _deploy(self, kind: Kind, d: Deployment, repo: str, service: str, env: str, description: str,
                links: list[Link], at: datetime | None, state: str) -> NormalisedEvent:
        verb = {Kind.DEPLOY_STARTED: "started", Kind.DEPLOY_SUCCEEDED: "succeeded"}.get(kind, "failed")
        url = links[0].href if links else ""
        return NormalisedEvent(
            kind=kind, source=self.name, fingerprint=f"github:deploy:{repo}:{d.id}",
            services=[service] if service else [], environment=env or None, status=state,
            title=f"Deploy of {repo}@{d.ref or (d.sha or '')[:7]} to {env} {verb}",
            summary=description, links=links, occurred_at=at,
            attributes={"repository": repo, "sha": d.sha or "", "ref": d.ref or "", "deployment_id": d.id,
                        "author": (d.creator.login if d.creator else None) or "", "url": url},
        )

    def _workflow_run(self, run: WorkflowRun, action: str | None, repo: str, service: str,
                      options: Mapping[str, Any]) -> list[NormalisedEvent]:
        names = [n.lower() for n in options.get("deploy_workflows", DEFAULT_DEPLOY_WORKFLOWS)]
        name = (run.name or "").lower()
        if action != "completed" or not any(n in name for n in names):
            return []
        kind = {"success": Kind.DEPLOY_SUCCEEDED, "failure": Kind.DEPLOY_FAILED,
                "timed_out": Kind.DEPLOY_FAILED}.get(run.conclusion or "")
        if kind is None:
            return []
        env = str(options.get("workflow_environment", "production"))
        return [NormalisedEvent(
            kind=kind, source=self.name, fingerprint=f"github:workflow:{repo}:{run.id}",
            services=[service] if service else [], environment=env, status=run.conclusion,
            title=f"Workflow {run.name} on {repo}@{run.head_branch} {run.conclusion}",
            links=[Link(href=run.html_url, text="workflow run")] if run.html_url else [],
            occurred_at=run.updated_at,
            attributes={"repository": repo, "sha": run.head_sha or "", "ref": run.head_branch or "",
                        "author": (run.actor.login if run.actor else None) or "", "url": run.html_url or ""},
        )]


source = GitHubSource()
