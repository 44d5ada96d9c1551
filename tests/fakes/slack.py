"""Fake Slack: the incoming webhook (200 `ok` as plain text, or Slack's plain-text error strings)
and the Web API (`FakeSlackApi`)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.base import FakeUpstream

HOOK_PATH = "/services/T000/B000/XXXX"


class FakeSlack(FakeUpstream):
    def routes(self, app: web.Application) -> None:
        app.router.add_post(HOOK_PATH, self.hook)

    async def hook(self, request: web.Request) -> web.Response:
        try:
            data = await request.json()
        except ValueError:
            return web.Response(status=400, text="invalid_payload")
        if not data.get("text") and not data.get("blocks"):
            return web.Response(status=400, text="no_text")
        return web.Response(text="ok")

    @property
    def webhook_url(self) -> str:
        return self.url + HOOK_PATH


BOT_TOKEN = "xoxb-test-0000-bot-token"


@dataclass
class Message:
    channel: str
    ts: str
    text: str
    blocks: list[Any]
    metadata: dict[str, Any] | None
    thread_ts: str | None = None
    edits: int = 0


@dataclass
class FakeSlackApi(FakeUpstream):
    """Fake Slack Web API: `chat.postMessage`, `chat.update`, `conversations.history`,
    `conversations.replies`, `conversations.open`, `conversations.list`, `conversations.create`
    (Slack's name rules, `name_taken` for a name in use), `conversations.invite`
    (`already_in_channel` when every user is already a member).

    Answers as Slack does: HTTP 200 with `{"ok": true, …}` or `{"ok": false, "error": code}`;
    a missing or wrong `Authorization: Bearer` token is `not_authed` / `invalid_auth`. History
    carries message metadata only when asked (`include_all_metadata`), thread replies only in
    `conversations.replies`, newest first, paginated by `limit` and `cursor`.
    """

    token: str = BOT_TOKEN
    channels: dict[str, str] = field(default_factory=lambda: {"C0INCIDENT": "incidents", "C0PAYMENTS": "payments"})
    messages: list[Message] = field(default_factory=list)
    #: Requests answered before this one is processed are counted (stall only the answer, like a lost reply).
    stall_answer: dict[str, float] = field(default_factory=dict)
    #: channel id → its members (`conversations.create` adds the bot's creator, `invite` the rest).
    members: dict[str, list[str]] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)
    _last_us: int = 0

    def routes(self, app: web.Application) -> None:
        for method in ("chat.postMessage", "chat.update", "conversations.history", "conversations.replies",
                       "conversations.open", "conversations.list", "conversations.create",
                       "conversations.invite"):
            app.router.add_route("*", f"/api/{method}", self.dispatch)

    @property
    def api_url(self) -> str:
        return self.url + "/api/"

    def _next_ts(self) -> str:
        """Slack's ts: seconds since the epoch with microseconds, unique in a channel."""
        self._last_us = max(self._last_us + 1, int(time.time() * 1_000_000))
        return f"{self._last_us // 1_000_000}.{self._last_us % 1_000_000:06d}"

    def _channel_id(self, value: str) -> str | None:
        if value.startswith("#"):
            return next((cid for cid, name in self.channels.items() if name == value[1:]), None)
        if value in self.channels or value.startswith("D"):
            return value
        return None

    async def dispatch(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return web.json_response({"ok": False, "error": "not_authed"})
        if auth[len("Bearer "):] != self.token:
            return web.json_response({"ok": False, "error": "invalid_auth"})
        args: dict[str, Any] = dict(request.query)
        if request.method == "POST" and request.body_exists:
            if request.content_type == "application/json":
                args.update(await request.json())
            else:
                args.update(dict(await request.post()))
        method = request.path.rsplit("/", 1)[-1]
        answer = getattr(self, "_" + method.replace(".", "_"))(args)
        stall = self.stall_answer.pop(method, 0.0)
        if stall:  # the work is done, the answer is late: the caller's timeout makes it ambiguous
            await asyncio.sleep(stall)
        return web.json_response(answer)

    def _chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel_id(str(args.get("channel") or ""))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        if not args.get("text") and not args.get("blocks"):
            return {"ok": False, "error": "no_text"}
        metadata = args.get("metadata")
        if isinstance(metadata, str):
            metadata = json.loads(metadata)
        thread = args.get("thread_ts") or None
        if thread and not any(m.ts == thread and m.channel == channel for m in self.messages):
            return {"ok": False, "error": "thread_not_found"}
        msg = Message(channel, self._next_ts(), str(args.get("text") or ""), list(args.get("blocks") or []),
                      metadata, thread)
        self.messages.append(msg)
        return {"ok": True, "channel": channel, "ts": msg.ts,
                "message": {"type": "message", "text": msg.text, "ts": msg.ts}}

    def _chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel_id(str(args.get("channel") or ""))
        found = next((m for m in self.messages if m.channel == channel and m.ts == args.get("ts")), None)
        if found is None:
            return {"ok": False, "error": "message_not_found"}
        found.text = str(args.get("text") or found.text)
        found.blocks = list(args.get("blocks") or found.blocks)
        found.edits += 1
        return {"ok": True, "channel": channel, "ts": found.ts, "text": found.text}

    def _listing(self, msgs: list[Message], args: dict[str, Any]) -> dict[str, Any]:
        oldest = float(args.get("oldest") or 0)
        msgs = sorted((m for m in msgs if float(m.ts) > oldest), key=lambda m: float(m.ts), reverse=True)
        start, limit = int(args.get("cursor") or 0), int(args.get("limit") or 100)
        page = msgs[start:start + limit]
        meta = args.get("include_all_metadata") in ("1", "true", True, 1)
        out = []
        for m in page:
            item: dict[str, Any] = {"type": "message", "ts": m.ts, "text": m.text}
            if m.thread_ts:
                item["thread_ts"] = m.thread_ts
            if meta and m.metadata:
                item["metadata"] = m.metadata
            out.append(item)
        more = start + limit < len(msgs)
        return {"ok": True, "messages": out, "has_more": more,
                "response_metadata": {"next_cursor": str(start + limit) if more else ""}}

    def _conversations_history(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = str(args.get("channel") or "")
        if channel not in self.channels and not channel.startswith("D"):  # history wants an id, never a #name
            return {"ok": False, "error": "channel_not_found"}
        return self._listing([m for m in self.messages if m.channel == channel and not m.thread_ts], args)

    def _conversations_replies(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, ts = str(args.get("channel") or ""), args.get("ts")
        if channel not in self.channels:
            return {"ok": False, "error": "channel_not_found"}
        if not any(m.channel == channel and m.ts == ts for m in self.messages):
            return {"ok": False, "error": "thread_not_found"}
        return self._listing([m for m in self.messages if m.channel == channel and (m.thread_ts == ts or m.ts == ts)],
                             args)

    def _conversations_open(self, args: dict[str, Any]) -> dict[str, Any]:
        users = str(args.get("users") or "")
        if not users.startswith("U"):
            return {"ok": False, "error": "user_not_found"}
        return {"ok": True, "channel": {"id": "D" + users.replace(",", "")[1:]}}

    def _conversations_create(self, args: dict[str, Any]) -> dict[str, Any]:
        name = str(args.get("name") or "")
        if not name:
            return {"ok": False, "error": "invalid_name_required"}
        if len(name) > 80:
            return {"ok": False, "error": "invalid_name_maxlength"}
        if not re.fullmatch(r"[a-z0-9_-]+", name):
            return {"ok": False, "error": "invalid_name_specials"}
        if name in self.channels.values():
            return {"ok": False, "error": "name_taken"}
        cid = f"C0NEW{len(self.created) + 1:04d}"
        self.channels[cid] = name
        self.created.append(cid)
        self.members[cid] = ["U0BOT"]
        return {"ok": True, "channel": {"id": cid, "name": name, "is_channel": True, "created": int(time.time())}}

    def _conversations_invite(self, args: dict[str, Any]) -> dict[str, Any]:
        cid = str(args.get("channel") or "")
        if cid not in self.channels:
            return {"ok": False, "error": "channel_not_found"}
        users = [u for u in str(args.get("users") or "").split(",") if u]
        if not users or any(not u.startswith(("U", "W")) for u in users):
            return {"ok": False, "error": "user_not_found"}
        have = self.members.setdefault(cid, [])
        new = [u for u in users if u not in have]
        if not new:
            return {"ok": False, "error": "already_in_channel"}
        have.extend(new)
        return {"ok": True, "channel": {"id": cid, "name": self.channels[cid]}}

    def _conversations_list(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "channels": [{"id": cid, "name": name} for cid, name in self.channels.items()],
                "response_metadata": {"next_cursor": ""}}

    def posted(self, channel: str | None = None, *, top_level: bool | None = None) -> list[Message]:
        return [m for m in self.messages if (channel is None or m.channel == channel)
                and (top_level is None or (m.thread_ts is None) == top_level)]
