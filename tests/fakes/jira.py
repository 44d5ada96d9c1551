"""Fake Jira REST API: what the `jira` library calls (CONTRACTS §2.4), Server or Cloud flavour.

HTTP Basic auth or 401. `GET /rest/api/2/serverInfo` (with `versionNumbers` and
`deploymentType`), `GET /rest/api/2/field`, `POST /rest/api/2/issue` (201 `{id, key,
self}`), `GET /rest/api/2/issue/{key}`, comments (list and add), and JQL search on
`labels = "…"`: the Server endpoint `GET /rest/api/2/search`, and the Cloud endpoint
`GET /rest/api/{2,3}/search/jql` that jira ≥3.10 calls when `deploymentType` is Cloud.
Priorities must be one of PRIORITIES by name and an assignee one of USERS (Cloud by
`accountId`, Server by `name`), else 400 with the field in `errors`; `GET
/rest/api/2/user/search` finds users by `query` (Cloud) or `username` (Server).
Issues are searchable `index_lag` seconds after creation, as Jira's index lags.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import time
from typing import Any

from aiohttp import web

from tests.fakes.shielded import ShieldedUpstream

EMAIL = "hub@example.com"
TOKEN = "jira-test-token-0123456789"
PROJECTS = {"OPS": "10001", "PM": "10002"}
ISSUE_TYPES = {"Task", "Bug", "Story", "Post-mortem"}
PRIORITIES = {"Highest", "High", "Medium", "Low", "Lowest"}
USERS = [{"name": "mlopez", "key": "JIRAUSER10100", "accountId": "5b10ac8d82e05b22cc7d4ef5",
          "emailAddress": "maria.lopez@acme.example", "displayName": "Maria Lopez", "active": True}]
FIELDS = [{"id": "summary", "name": "Summary", "clauseNames": ["summary"]},
          {"id": "labels", "name": "Labels", "clauseNames": ["labels"]},
          {"id": "duedate", "name": "Due date", "clauseNames": ["due", "duedate"]}]
_LABEL_JQL = re.compile(r'^\s*labels\s*=\s*"([^"]+)"\s*(ORDER BY created (ASC|DESC))?\s*$', re.I)


def _errors(status: int, messages: list[str], errors: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"errorMessages": messages, "errors": errors or {}}, status=status)


class FakeJira(ShieldedUpstream):
    def __init__(self, deployment: str = "Server", email: str = EMAIL, token: str = TOKEN) -> None:
        super().__init__()
        self.deployment = deployment
        self.auth = "Basic " + base64.b64encode(f"{email}:{token}".encode()).decode()
        self.issues: dict[str, dict[str, Any]] = {}
        self.created: list[str] = []
        self.comments: dict[str, list[dict[str, Any]]] = {}
        self.index_lag = 0.0
        #: When set, creating an issue answers this status echoing the request headers (as some
        #: proxies and misconfigured servers do), Authorization included.
        self.echo_headers_status: int | None = None
        self._ids = itertools.count(10000)
        self._numbers: dict[str, itertools.count[int]] = {}

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/rest/api/2/serverInfo", self.server_info)
        app.router.add_get("/rest/api/2/field", self.fields)
        app.router.add_post("/rest/api/2/issue", self.create_issue)
        app.router.add_get("/rest/api/2/issue/{key}", self.get_issue)
        app.router.add_get("/rest/api/2/issue/{key}/comment", self.list_comments)
        app.router.add_post("/rest/api/2/issue/{key}/comment", self.add_comment)
        app.router.add_get("/rest/api/2/search", self.search)
        app.router.add_get("/rest/api/2/user/search", self.user_search)
        app.router.add_post("/rest/api/2/search", self.search)
        for version in ("2", "3"):
            app.router.add_get(f"/rest/api/{version}/search/jql", self.search)
            app.router.add_post(f"/rest/api/{version}/search/jql", self.search)

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.headers.get("Authorization") != self.auth:
            return _errors(401, ["You are not authenticated. Authentication required to perform this operation."])
        return await handler(request)

    def middlewares(self) -> list[Any]:
        return [self._auth]

    def _self(self, request: web.Request, issue_id: str) -> str:
        return f"{request.scheme}://{request.host}/rest/api/2/issue/{issue_id}"

    async def server_info(self, request: web.Request) -> web.Response:
        return web.json_response({"baseUrl": f"{request.scheme}://{request.host}", "version": "9.12.0",
                                  "versionNumbers": [9, 12, 0], "deploymentType": self.deployment,
                                  "buildNumber": 9120000, "serverTitle": "Fake Jira"})

    async def fields(self, request: web.Request) -> web.Response:
        return web.json_response(FIELDS)

    async def create_issue(self, request: web.Request) -> web.Response:
        if self.echo_headers_status:
            return _errors(self.echo_headers_status, [f"bad request: {dict(request.headers)!r}"],
                           {"authorization": request.headers.get("Authorization", "")})
        try:
            fields = json.loads(await request.read())["fields"]
        except (ValueError, KeyError, TypeError):
            return _errors(400, ["Can not deserialize the request body"])
        project = (fields.get("project") or {}).get("key")
        problems = {}
        if project not in PROJECTS:
            problems["project"] = "valid project is required"
        if (fields.get("issuetype") or {}).get("name") not in ISSUE_TYPES:
            problems["issuetype"] = "valid issue type is required"
        if not fields.get("summary"):
            problems["summary"] = "You must specify a summary of the issue."
        if any(" " in label for label in fields.get("labels") or []):
            problems["labels"] = "The label can't contain spaces."
        if fields.get("duedate") and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(fields["duedate"])):
            problems["duedate"] = "Error parsing date string"
        if fields.get("priority") and (fields["priority"] or {}).get("name") not in PRIORITIES:
            problems["priority"] = "Specify the Priority (name) in the string format"
        if fields.get("assignee"):
            ref = "accountId" if self.deployment == "Cloud" else "name"
            if not any(u[ref] == (fields["assignee"] or {}).get(ref) for u in USERS):
                problems["assignee"] = "User does not exist or you do not have permission to see it."
        if problems:
            return _errors(400, [], problems)
        issue_id = str(next(self._ids))
        key = f"{project}-{next(self._numbers.setdefault(project, itertools.count(1)))}"
        self.issues[key] = {"id": issue_id, "key": key, "self": self._self(request, issue_id), "fields": fields,
                            "indexed_at": time.monotonic() + self.index_lag}
        self.created.append(key)
        return web.json_response({"id": issue_id, "key": key, "self": self._self(request, issue_id)}, status=201)

    def _public(self, issue: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in issue.items() if k != "indexed_at"}

    async def get_issue(self, request: web.Request) -> web.Response:
        issue = self.issues.get(request.match_info["key"])
        if issue is None:
            return _errors(404, ["Issue does not exist or you do not have permission to see it."])
        return web.json_response(self._public(issue))

    async def search(self, request: web.Request) -> web.Response:
        cloud_path = request.path.endswith("/search/jql")
        if cloud_path != (self.deployment == "Cloud"):
            return _errors(410 if not cloud_path else 404, ["This search endpoint is not available here."])
        params: dict[str, Any] = dict(request.query)
        if request.method == "POST":
            params.update(json.loads(await request.read() or b"{}"))
        m = _LABEL_JQL.match(str(params.get("jql", "")))
        if not m:
            return _errors(400, [f"This fake only understands labels = \"…\" (got {params.get('jql')!r})"])
        now = time.monotonic()
        found = [self._public(i) for i in self.issues.values()
                 if m.group(1) in (i["fields"].get("labels") or []) and i["indexed_at"] <= now]
        limit = int(params.get("maxResults") or 50)
        if cloud_path:
            return web.json_response({"issues": found[:limit], "isLast": True})
        return web.json_response({"startAt": 0, "maxResults": limit, "total": len(found), "issues": found[:limit]})

    async def user_search(self, request: web.Request) -> web.Response:
        term = request.query.get("query" if self.deployment == "Cloud" else "username", "").casefold()
        if not term:
            return _errors(400, ["The username query parameter was not provided"])
        cloud = ("accountId", "emailAddress", "displayName", "active")
        server = ("name", "key", "emailAddress", "displayName", "active")
        keep = cloud if self.deployment == "Cloud" else server
        base = f"{request.scheme}://{request.host}/rest/api/2/user"
        found = [{**{k: u[k] for k in keep}, "self": f"{base}?accountId={u['accountId']}" if self.deployment == "Cloud"
                  else f"{base}?username={u['name']}"} for u in USERS
                 if term in (u["emailAddress"].casefold(), u["name"].casefold(), u["displayName"].casefold())]
        return web.json_response(found)

    async def list_comments(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        if key not in self.issues:
            return _errors(404, ["Issue does not exist or you do not have permission to see it."])
        comments = self.comments.get(key, [])
        return web.json_response({"startAt": 0, "maxResults": 5000, "total": len(comments), "comments": comments})

    async def add_comment(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        if key not in self.issues:
            return _errors(404, ["Issue does not exist or you do not have permission to see it."])
        body = json.loads(await request.read()).get("body")
        if not body:
            return _errors(400, [], {"comment": "Comment body can not be empty!"})
        comment = {"id": str(next(self._ids)), "body": body, "created": "2024-01-01T00:00:00.000+0000",
                   "self": f"{self._self(request, self.issues[key]['id'])}/comment"}
        self.comments.setdefault(key, []).append(comment)
        return web.json_response(comment, status=201)
