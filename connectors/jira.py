"""Jira (Cloud or Server/DC) through the `jira` library: actions `create_issue`, `comment`.

Config: `JIRA_URL`, `JIRA_EMAIL`, `JIRA_API_TOKEN` (HTTP Basic), `JIRA_PROJECT` (default
project). The `JIRA` client is built once per worker, lazily, on first use (its
construction calls `GET /rest/api/2/serverInfo`); every library call runs off the event
loop (`asyncio.to_thread`). The library's own retries are off (`max_retries=0`) so the
hub's apply, and `JIRAError.status_code` is classified with the same rule as HTTP.
`project` and `issuetype` are passed as dicts, so creating an issue is one `POST
/rest/api/2/issue` (no project or issue-type lookups, no prefetch).

Escaping: `description` and a comment's `body` are wiki markup (`Jira.markup`): values
interpolated into them are escaped when rendered (`jira_wiki`, below: every character the wiki renderer gives a
meaning is backslash-escaped, a payload backslash becomes U+29F5, plain http(s) URLs are kept), so a payload
cannot mention anyone, link, embed an image or open a macro; the operator's literal markup
is kept. The summary is a plain-text field (Jira shows it as written), so it is sent as
text, control characters removed.

Idempotency: Jira has no idempotency key. Each created issue carries the label
`incident-hub-<hash of key>` and the ledger (`connectors._ledger`) maps key → issue key,
written before success is recorded. Before creating, an intent is marked; if an attempt may
have reached Jira (timeout, reset, 5xx, worker death), the next one JQL-searches the label
first. Jira's search index can lag a new issue by a few seconds, so after an unconfirmed
create an empty search is trusted only once the first attempt is `index_grace` seconds
old. Calls on one key or issue are serialised across workers. A `comment` whose previous
attempt was ambiguous first reads the issue's comments for an identical body.

Params:
- `create_issue`: key (the follow-up / incident the issue is for; default: the action's
  idempotency key), project (default JIRA_PROJECT), issuetype (default Task), summary
  (≤255, required), description, labels, priority (a name; `priority_map` renames a
  source's names, e.g. {Urgent: Highest}), assignee (a Cloud account id or a Server user
  name) or assignee_email (looked up with Jira's user search; nobody found: unassigned),
  duedate (YYYY-MM-DD or an ISO datetime) or due_in (a duration such as `48h`). A priority
  or assignee Jira refuses (400 naming that field) is left out and the issue created without
  it; the result says so (`jira_dropped_fields`).
- `comment`: issue (a Jira issue key) or key (of an issue this hub created), body.

Result keys: `create_issue` → `jira_issue_key`, `jira_issue_url`; `comment` →
`jira_issue_key`, `jira_comment_id`.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import requests
from jira import JIRA, JIRAError
from pydantic import Field
from urllib3.exceptions import NewConnectionError

from connectors._ledger import CreationLedger, settle_after_failed_create
from connectors.base import (
    ActionCall,
    CatalogField,
    CatalogView,
    Connector,
    Outcome,
    Record,
    RetryPolicy,
    Setting,
    classify_status,
    stable_ref,
)
from hub.core.escape import terminal
from hub.core.settings import parse_duration

SUMMARY_MAX = 255
LABEL_MAX = 255
LABEL_PREFIX = "incident-hub-"
T = TypeVar("T")


# -- wiki markup --------------------------------------------------------------------------------

#: The characters Jira's BackslashEscapeRendererComponent unescapes (all with a meaning).
JIRA_SPECIAL = "-#*_+?^~|%{}[]()!@"
BACKSLASH_STANDIN = "\u29f5"
_JIRA_URL = re.compile(r"https?://[A-Za-z0-9._~:/?#@$&'()*+,;=%-]+")
_JIRA_TOKEN = re.compile(_JIRA_URL.pattern + r"|[" + re.escape(JIRA_SPECIAL + "\\") + r"]")


def _jira_token(m: re.Match[str]) -> str:
    s = m.group(0)
    if len(s) > 1:
        return s  # a plain URL: Jira links it, and it holds none of [ ] { } ! | \ < >
    return BACKSLASH_STANDIN if s == "\\" else "\\" + s


def jira_wiki(text: str) -> str:
    """Text that Jira's wiki renderer shows as written (no mentions, links, images, macros)."""
    return _JIRA_TOKEN.sub(_jira_token, str(text))


def hub_label(key: str) -> str:
    return LABEL_PREFIX + stable_ref(key)


def _label(text: Any) -> str:
    """Jira labels cannot contain spaces."""
    return re.sub(r"\s+", "-", str(text).strip())[:LABEL_MAX]


def due_date(params: Mapping[str, Any], now: datetime | None = None) -> str | None:
    """YYYY-MM-DD from `duedate` (a date or ISO datetime) or `due_in` (a duration from now)."""
    if params.get("duedate"):
        text = str(params["duedate"]).strip()
        try:
            return datetime.fromisoformat(text.replace("Z", "+00:00")).date().isoformat()
        except ValueError:
            raise ValueError(f"duedate {text!r} is not a date (YYYY-MM-DD)") from None
    if params.get("due_in"):
        start = now or datetime.now(UTC)
        return (start + timedelta(seconds=parse_duration(str(params["due_in"])))).date().isoformat()
    return None


def jira_priority(params: Mapping[str, Any]) -> str | None:
    """The priority name, renamed through `priority_map` (case-insensitive) when it has it."""
    name = str(params.get("priority") or "").strip()
    if not name:
        return None
    renames = {str(k).casefold(): str(v) for k, v in dict(params.get("priority_map") or {}).items()}
    return renames.get(name.casefold(), name)


def refused_fields(outcome: Outcome) -> list[str]:
    """The fields a 400 from Jira names in its `errors` object (nothing was created)."""
    if outcome.status != 400 or not outcome.response:
        return []
    try:
        data = json.loads(outcome.response)
    except ValueError:
        return []
    errors = data.get("errors") if isinstance(data, dict) else None
    return [str(k) for k in errors] if isinstance(errors, dict) else []


def _find_user(client: JIRA, email: str) -> dict[str, str] | None:
    """The user with this email: `{"accountId"}` on Cloud, `{"name"}` on Server/DC."""
    cloud = client._is_cloud
    users = client.search_users(query=email, maxResults=10) if cloud else client.search_users(user=email,
                                                                                               maxResults=10)
    for user in users:
        if str(getattr(user, "emailAddress", "") or "").casefold() == email.casefold() or len(users) == 1:
            ref = getattr(user, "accountId" if cloud else "name", None)
            if ref:
                return {"accountId": ref} if cloud else {"name": ref}
    return None


def classify_jira_error(e: JIRAError) -> Outcome:
    """The shared HTTP rule; an error without a usable status (or a 2xx without an issue) may
    have reached Jira, so it is retried as ambiguous."""
    resp = e.response
    text = (resp.text if resp is not None else e.text) or ""
    status = e.status_code
    if status is None or 200 <= status < 300:
        return Outcome("retryable", status, detail=f"unexpected answer from Jira: {(e.text or '')[:200]}",
                       response=text[:2000], ambiguous=True)
    return classify_status(status, text, resp.headers if resp is not None else {})


def classify_transport_error(e: requests.exceptions.RequestException) -> Outcome:
    """Nothing sent (refused, connect timeout) is unambiguous; anything later may have landed."""
    reason = getattr(e.args[0], "reason", None) if e.args else None
    if isinstance(e, requests.exceptions.ConnectTimeout) or isinstance(reason, NewConnectionError):
        return Outcome("retryable", None, detail=f"connection failed: {type(e).__name__}")
    if isinstance(e, requests.exceptions.Timeout):
        return Outcome("retryable", None, detail=f"timed out: {type(e).__name__}", ambiguous=True)
    return Outcome("retryable", None, detail=f"{type(e).__name__}: {str(e)[:200]}", ambiguous=True)


class Jira(Connector):
    name = "jira"
    #: Jira Cloud's limits are cost-based and per user; calls on one issue are serialised too.
    default_rate_limit = "5/s"
    variables = (Setting("JIRA_URL"), Setting("JIRA_EMAIL"), Setting("JIRA_API_TOKEN", secret=True),
                 Setting("JIRA_PROJECT"))
    action_names = frozenset({"create_issue", "comment"})
    #: A ticket's key is added to the incident's list of tickets (one incident, several follow-ups).
    recorded = {"jira_key": Record(append_to="jira_keys")}
    catalog_fields = (
        CatalogField("jira_project", str | None, on=("service",)),
        CatalogField("jira_project", str | None, Field(None, description="project for tickets when the service names "
                                                                         "none (else JIRA_PROJECT)"), on=("catalog",)),
    )
    retry_policy = RetryPolicy(max_attempts=8, base_delay=2.0, max_delay=300.0, deadline=24 * 3600)
    timeout = 15.0
    attempt_timeout = 60.0
    formats = {"jira_wiki": jira_wiki}
    markup = {"create_issue": {"description": "jira_wiki"}, "comment": {"body": "jira_wiki"}}
    #: Seconds Jira's search index may take to show a new issue.
    index_grace: float = 15.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._client: JIRA | None = None
        self._client_lock = threading.Lock()

    def missing_config(self, params: Mapping[str, Any] | None = None) -> str | None:
        missing = [var for var, value in (("JIRA_URL", self.settings.jira_url),
                                          ("JIRA_EMAIL", self.settings.jira_email),
                                          ("JIRA_API_TOKEN", self.settings.jira_api_token)) if not value]
        return f"jira not configured ({', '.join(missing)})" if missing else None

    def secrets(self, params: Mapping[str, Any] | None = None) -> list[str]:
        """The token, and the Basic-auth pair it travels in (scrubbed in its base64 form too)."""
        token = self.settings.jira_api_token
        return [token, f"{self.settings.jira_email or ''}:{token}"] if token else []

    def rate_limit_key(self, call: ActionCall) -> str | None:
        return f"jira:{self.settings.jira_email}@{self.settings.jira_url}"

    def serial_key(self, call: ActionCall) -> str | None:
        if call.params.get("issue"):
            return f"issue:{call.params['issue']}"
        return f"key:{self._key(call)}"

    @classmethod
    def catalog_view(cls, place: str, entry: Any, view: CatalogView) -> dict[str, Any]:
        if place != "service":
            return {}
        return {"jira_project": entry.jira_project or getattr(view.catalog, "jira_project", None)}

    def describe_target(self, params: Mapping[str, Any], mask: Callable[[str], str]) -> str:
        return f"Jira project {params.get('project') or self.settings.jira_project or '(none: JIRA_PROJECT unset)'}"

    @property
    def ledger(self) -> CreationLedger:
        return CreationLedger(self.redis, self.name, self.settings.jira_url or "")

    @staticmethod
    def _key(call: ActionCall) -> str:
        return str(call.params.get("key") or call.idempotency_key)

    # -- the client, off the event loop -----------------------------------------------------------

    def client(self) -> JIRA:
        """The worker's one client; built on first use (in a worker thread)."""
        with self._client_lock:
            if self._client is None:
                self._client = JIRA(server=self.settings.jira_url,
                                    basic_auth=(self.settings.jira_email or "", self.settings.jira_api_token or ""),
                                    max_retries=0, timeout=self.timeout, get_server_info=True,
                                    options={"check_update": False}, logging=False)
            return self._client

    async def _call(self, fn: Callable[[JIRA], T]) -> tuple[Outcome, T | None]:
        def work() -> T:
            return fn(self.client())

        try:
            value = await asyncio.to_thread(work)
        except JIRAError as e:
            return classify_jira_error(e), None
        except requests.exceptions.RequestException as e:
            return classify_transport_error(e), None
        return Outcome("succeeded"), value

    # -- create_issue -------------------------------------------------------------------------------

    async def create_issue(self, call: ActionCall) -> Outcome:
        p = call.params
        key = self._key(call)
        project = p.get("project") or self.settings.jira_project
        summary = " ".join(terminal(str(p.get("summary") or p.get("title") or "")).split())[:SUMMARY_MAX]
        if not project or not summary:
            return Outcome("permanent", detail="jira create_issue needs a summary and a project (param or "
                                               "JIRA_PROJECT)")
        try:
            due = due_date(p)
        except ValueError as e:
            return Outcome("permanent", detail=str(e))
        ledger, label = self.ledger, hub_label(key)
        record = await ledger.get(key)
        if record:
            return Outcome("succeeded", detail="already created", result=self._result(record["issue"]))

        pending = await ledger.pending(key)
        if pending is not None or call.after_ambiguous:
            outcome, found = await self._call(lambda c: self._search_label(c, label))
            if not outcome.ok:
                return outcome
            if found:
                await ledger.put(key, {"issue": found})
                return Outcome("succeeded", detail="found after an unconfirmed create", result=self._result(found))
            wait = max(self.index_grace - (time.time() - pending.first_ms / 1000), pending.settles_in) \
                if pending is not None else 0.0
            if wait > 0:
                return Outcome("retryable", detail="an earlier create is unconfirmed; waiting for it to land "
                                                   "and for Jira's search index before creating again",
                               retry_after=wait)

        fields: dict[str, Any] = {
            "project": {"key": str(project)}, "issuetype": {"name": str(p.get("issuetype") or "Task")},
            "summary": summary, "labels": list(dict.fromkeys([*(_label(x) for x in p.get("labels") or []), label])),
        }
        if p.get("description"):
            fields["description"] = str(p["description"])
        if due:
            fields["duedate"] = due
        if priority := jira_priority(p):
            fields["priority"] = {"name": priority}
        outcome, assignee = await self._assignee(p)
        if not outcome.ok:
            return outcome
        if assignee:
            fields["assignee"] = assignee
        await ledger.begin(key, self.timeout + self.in_flight_grace)
        outcome, issue = await self._call(lambda c: c.create_issue(fields=fields, prefetch=False))
        dropped = sorted(set(refused_fields(outcome)) & {"priority", "assignee"} & set(fields))
        if dropped:  # refused, so nothing was created: again without what Jira does not know
            for name in dropped:
                fields.pop(name)
            outcome, issue = await self._call(lambda c: c.create_issue(fields=fields, prefetch=False))
        if outcome.ok and issue is not None:
            await ledger.put(key, {"issue": issue.key})
            outcome.result = self._result(issue.key)
            if dropped:
                outcome.result["jira_dropped_fields"] = dropped
        else:
            await settle_after_failed_create(ledger, key, outcome, self.in_flight_grace)
        return outcome

    async def _assignee(self, p: Mapping[str, Any]) -> tuple[Outcome, dict[str, str] | None]:
        """The `assignee` field: given outright, or found by email (not found: unassigned)."""
        if p.get("assignee"):
            ref = str(p["assignee"])
            outcome, cloud = await self._call(lambda c: c._is_cloud)  # builds the client: may fail like a call
            if not outcome.ok:
                return outcome, None
            return outcome, ({"accountId": ref} if cloud else {"name": ref})
        email = str(p.get("assignee_email") or "").strip()
        if not email:
            return Outcome("succeeded"), None
        outcome, found = await self._call(lambda c: _find_user(c, email))
        if outcome.state == "retryable":
            return outcome, None
        return Outcome("succeeded"), found if outcome.ok else None  # refused (no permission): unassigned

    @staticmethod
    def _search_label(client: JIRA, label: str) -> str | None:
        found = client.search_issues(f'labels = "{label}" ORDER BY created ASC', maxResults=1, fields=["key"],
                                     json_result=True)
        issues = (found.get("issues") or []) if isinstance(found, dict) else []
        return str(issues[0]["key"]) if issues else None

    def _result(self, issue_key: str) -> dict[str, Any]:
        return {"jira_issue_key": issue_key, "jira_issue_url": f"{(self.settings.jira_url or '').rstrip('/')}"
                                                               f"/browse/{issue_key}"}

    # -- comment ------------------------------------------------------------------------------------

    async def comment(self, call: ActionCall) -> Outcome:
        p = call.params
        body = str(p.get("body") or "").strip()
        if not body:
            return Outcome("permanent", detail="jira comment needs a body")
        issue = str(p["issue"]) if p.get("issue") else None
        if issue is None:
            record = await self.ledger.get(self._key(call))
            if record:
                issue = record["issue"]
            elif await self.ledger.intent(self._key(call)) is not None:
                return Outcome("retryable", detail="cannot comment yet: the issue's creation is unconfirmed",
                               retry_after=2.0)
            else:
                return Outcome("skipped", detail=f"no Jira issue recorded for key {self._key(call)!r}")
        target = issue
        if call.after_ambiguous:
            outcome, existing = await self._call(lambda c: [cm.id for cm in c.comments(target) if cm.body == body])
            if not outcome.ok:
                return outcome
            if existing:
                return Outcome("succeeded", detail="comment already there",
                               result={"jira_issue_key": target, "jira_comment_id": existing[0]})
        outcome, created = await self._call(lambda c: c.add_comment(target, body))
        if outcome.ok:
            outcome.result = {"jira_issue_key": target, "jira_comment_id": getattr(created, "id", None)}
        return outcome


connector = Jira
