"""Slack: actions `notify` and `incident`, through incoming webhooks or the Web API.

Modes: without `SLACK_BOT_TOKEN`, `notify` posts to an incoming webhook (the step's
`webhook_url`, else `SLACK_WEBHOOK_URL`) exactly as it always has. With a bot token and a
channel (the step's `channel`: a service's or team's `slack_channel`, else `SLACK_CHANNEL`),
it posts through Slack's Web API (`slack_sdk`, base `SLACK_API_URL`) instead, and:

- `incident` keeps one *living message* per incident (and episode) per channel: posted once
  with `chat.postMessage`, carrying message metadata (`event_type: incident_hub_incident`,
  `event_payload`: the incident key, episode and the action's identity), then edited in place
  (`chat.update`) whenever what it shows (status, severity, acknowledgement, page, joined
  alerts, resolution) changes; an unchanged call is skipped.
- `notify` with `thread: <incident key>` replies in that message's thread (`thread_ts`) once it
  exists; `broadcast: true` also shows the reply in the channel.

Exactly once (Web API mode): each post is remembered in the creation ledger
(`connectors._ledger`, per channel) before the runner records success. An intent is marked
before sending; an attempt after an ambiguous one (timeout, reset, worker death: the intent is
still there) first reads the channel's history (`conversations.history`, or the thread's
`conversations.replies`) since the first attempt and adopts the message whose metadata carries
this action's identity (the incident's, for the living message); finding none, it posts again
only once a request that lost its answer can no longer land. Calls for one incident's
messages in one channel are serialised. What can still repeat: docs/connectors.md.

Escaping: `text`, `title` and `summary` are mrkdwn (`Slack.markup`): values interpolated
into them are escaped when rendered (`slack_mrkdwn`, below: `& < >` as entities, so no `<!channel>`, `<@U…>` or
`<url|label>` comes from a payload; `slack_link` is the only way a link is built), the operator's literal text
is kept. Everything else is data and escaped here: link texts and URLs (only http(s) URLs
become links), ids, severity.

Idempotency (webhook mode): Slack does not deduplicate messages. The runner records a success before the
job returns and never re-sends a recorded success on retry or replay (unless forced); the
remaining window (crash between Slack's 200 and the record) can at worst repeat one message.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote

from pydantic import Field, StringConstraints

from connectors._ledger import CreationLedger, Pending, settle_after_failed_create
from connectors._slackapi import SlackApi
from connectors._slackinteractions import ACTION_PREFIX, SlackInteractions
from connectors.base import (
    ActionCall,
    CatalogField,
    CatalogView,
    Connector,
    Outcome,
    Record,
    RetryPolicy,
    Setting,
)
from hub.core.escape import safe_http_url
from hub.core.ruletypes import SecretRef

# -- mrkdwn -------------------------------------------------------------------------------------

_SLACK = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})


def slack_mrkdwn(text: str) -> str:
    """Text that Slack shows as written: `&`, `<`, `>` as entities."""
    return str(text).translate(_SLACK)


def slack_link(href: str, text: str | None = None) -> str:
    """`<href|text>` for an http(s) URL; anything else (javascript:, data:, …) as plain text."""
    url = safe_http_url(href)
    label = slack_mrkdwn(str(text or href))
    if url is None:
        return label
    # `|` and `>` end the URL part of a Slack link; percent-encode them (and spaces), escape `&`.
    url = quote(url, safe="/:?#[]@!$&'()*+,;=%~-._")
    return f"<{slack_mrkdwn(url)}|{label}>"

SEVERITY_EMOJI = {"SEV1": ":red_circle:", "SEV2": ":large_orange_circle:", "SEV3": ":large_yellow_circle:",
                  "SEV4": ":white_circle:"}


def build_message(params: dict[str, Any]) -> dict[str, Any]:
    """Text plus blocks: a header line, the summary, then links and ids as context."""
    text = str(params.get("text") or params.get("title") or "incident-hub notification")
    severity = params.get("severity")
    head = (f"{SEVERITY_EMOJI.get(str(severity), '')} *{slack_mrkdwn(str(severity))}* {text}".strip()
            if severity else text)
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": head[:3000]}}]
    if params.get("summary"):
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": str(params["summary"])[:3000]}})
    context = [slack_link(str(link["href"]), str(link.get("text") or "") or None) for link in params.get("links") or []
               if isinstance(link, dict) and link.get("href")]
    context += [f"{slack_mrkdwn(str(k))}: `{slack_mrkdwn(str(v))}`" for k, v in (params.get("ids") or {}).items() if v]
    if context:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": c[:300]} for c in context[:10]]})
    return {"text": head[:3000], "blocks": blocks}


#: A Slack user id (`U…`, or `W…` on Enterprise Grid): what a DM is opened with.
SlackUser = Annotated[str, StringConstraints(pattern=r"^[UW][A-Z0-9]{2,}$")]

EVENT_TYPE = "incident_hub_incident"
#: A message posted this long before the first attempt is not looked at when adopting one.
HISTORY_SKEW_S = 60
#: Pages of history read when looking for a message a lost attempt may have posted.
HISTORY_PAGES = 5


def _flag(value: Any) -> bool:
    """A template-rendered truth value (`True`, "true", "1"); "False", "", None are false."""
    return str(value).strip().lower() in ("true", "1", "yes") if value is not None else False


def _person(who: Any) -> str:
    """Who acted: a Slack user (`slack:U…`, a button) as a mention Slack shows by name; else escaped text."""
    text = str(who)
    user = text.removeprefix("slack:")
    if user != text and re.fullmatch(r"[UW][A-Z0-9]{2,}", user):
        return f"<@{user}>"
    return slack_mrkdwn(text)


def _when(ms: Any) -> str:
    """` at HH:MM UTC` for epoch milliseconds, else nothing."""
    try:
        return " at " + datetime.fromtimestamp(int(ms) / 1000, UTC).strftime("%H:%M UTC")
    except (TypeError, ValueError, OverflowError, OSError):
        return ""


def buttons(key: str, acknowledged: bool) -> dict[str, Any]:
    """Acknowledge, Resolve, Escalate now (`connectors._slackinteractions`): the action in the
    `action_id`, the incident in the `value`."""
    def button(action: str, label: str, **extra: Any) -> dict[str, Any]:
        return {"type": "button", "action_id": ACTION_PREFIX + action, "value": key,
                "text": {"type": "plain_text", "text": label}, **extra}
    elements = [] if acknowledged else [button("acknowledge", "Acknowledge", style="primary")]
    elements.append(button("resolve", "Resolve", confirm={
        "title": {"type": "plain_text", "text": "Resolve the incident?"},
        "text": {"type": "plain_text", "text": "The page, the status page and the timers are resolved too."},
        "confirm": {"type": "plain_text", "text": "Resolve"}, "deny": {"type": "plain_text", "text": "Cancel"}}))
    if not acknowledged:
        elements.append(button("escalate", "Escalate now", style="danger"))
    return {"type": "actions", "block_id": "incident_hub_actions", "elements": elements}


def build_living(params: Mapping[str, Any], with_buttons: bool = False) -> dict[str, Any]:
    """The living message: what the incident is now. `title` and `summary` arrive escaped
    (`Slack.markup`); everything else is data and escaped here. `with_buttons` (a signing
    secret is set, so Slack's clicks can be verified): the actions block while it is open."""
    title = str(params.get("title") or params.get("key") or "incident")
    severity = params.get("severity")
    resolved = _flag(params.get("resolved"))
    mark = ":white_check_mark:" if resolved else SEVERITY_EMOJI.get(str(severity), ":rotating_light:")
    sev = f" *{slack_mrkdwn(str(severity))}*" if severity else ""
    head = f"{mark}{sev} {title}" + (" (resolved)" if resolved else "")
    facts = [f"*Status:* {slack_mrkdwn(str(params.get('status') or ('resolved' if resolved else 'open')))}"]
    ack = params.get("acknowledged_by")
    facts.append(f"*Acknowledged:* {'by ' + _person(ack) + _when(params.get('acknowledged_at')) if ack else 'no'}")
    resolution = str(params.get("resolution") or "")
    if resolved and resolution.startswith("resolved by "):  # who resolved it, when a person did
        facts.append(f"*Resolved:* by {_person(resolution.removeprefix('resolved by '))}"
                     f"{_when(params.get('resolved_at'))}")
    page = params.get("page")
    facts.append(f"*Paged:* {slack_mrkdwn(str(page)) if page else 'no'}")
    alerts = params.get("alerts")
    if alerts not in (None, "", 0, "0"):
        facts.append(f"*Alerts:* {slack_mrkdwn(str(alerts))}")
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": head[:3000]}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f[:2000]} for f in facts]},
    ]
    if params.get("summary"):
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": str(params["summary"])[:3000]}})
    context = [slack_link(str(link["href"]), str(link.get("text") or "") or None) for link in params.get("links") or []
               if isinstance(link, dict) and link.get("href")]
    context.append(f"incident: `{slack_mrkdwn(str(params.get('key') or ''))}`")
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": c[:300]} for c in context[:10]]})
    key = str(params.get("key") or "")
    if with_buttons and not resolved and key and len(key) <= 2000:  # a button's value holds 2000 characters
        blocks.append(buttons(key, bool(ack)))
    return {"text": head[:3000], "blocks": blocks}


#: Slack's channel names: lowercase letters, digits, `-` and `_`, at most 80 characters.
CHANNEL_NAME_MAX = 80
#: Invite answers that mean "already done".
INVITED_ALREADY = frozenset({"already_in_channel", "cant_invite_self"})


def channel_name(params: Mapping[str, Any]) -> str:
    """`inc-<yyyymmdd>-<slug of the title>` by Slack's rules (the date the incident was declared, UTC)."""
    try:
        day = datetime.fromtimestamp(int(str(params.get("declared_at"))) / 1000, UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        day = datetime.now(UTC)
    slug = re.sub(r"[^a-z0-9_]+", "-", str(params.get("title") or "").lower()).strip("-_")
    if not slug:
        slug = hashlib.sha256(str(params.get("key") or "").encode()).hexdigest()[:8]
    return f"inc-{day:%Y%m%d}-{slug}"[:CHANNEL_NAME_MAX].rstrip("-_")


def _digest(message: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(message, sort_keys=True).encode()).hexdigest()[:32]


class Slack(Connector):
    name = "slack"
    label = "Slack"
    notice_action = "notify"
    catalog_fields = (
        CatalogField("slack", str, Field("", description="how to mention them in Slack, e.g. <@U024BE7LH>"),
                     on=("contact",)),
        CatalogField("slack_webhook", SecretRef | None, on=("service", "team", "contact"), secret_ref=True),
        CatalogField("slack_channel", str | None,
                     Field(None, description="the Slack channel (an id like C024BE91L, or #name) for the Web API "
                                             "mode (SLACK_BOT_TOKEN); else SLACK_CHANNEL"),
                     on=("service", "team")),
        CatalogField("notify_dm", list[SlackUser],
                     Field(default_factory=list, description="Slack user ids (U…) told by DM of a SEV1 of the "
                                                             "team's (Web API mode, SLACK_BOT_TOKEN)"),
                     on=("team",)),
        CatalogField("leadership", list[SlackUser],
                     Field(default_factory=list, description="Slack user ids (U…) told by DM of every SEV1 "
                                                             "(Web API mode, SLACK_BOT_TOKEN)"),
                     on=("catalog",)),
    )
    default_rate_limit = "1/s"
    variables = (Setting("SLACK_WEBHOOK_URL", secret=True), Setting("SLACK_BOT_TOKEN", secret=True),
                 Setting("SLACK_API_URL", "https://slack.com/api/"), Setting("SLACK_SIGNING_SECRET", secret=True),
                 Setting("SLACK_CHANNEL"))
    action_names = frozenset({"notify", "incident", "dm", "create_channel"})
    recorded = {"slack_incident_channel": Record()}
    global_target = ("webhook_url", "SLACK_WEBHOOK_URL")
    retry_policy = RetryPolicy(max_attempts=6, base_delay=1.0, max_delay=120.0, deadline=6 * 3600)
    formats = {"slack_mrkdwn": slack_mrkdwn}
    markup = {"notify": {"text": "slack_mrkdwn", "title": "slack_mrkdwn", "summary": "slack_mrkdwn"},
              "incident": {"title": "slack_mrkdwn", "summary": "slack_mrkdwn"},
              "dm": {"text": "slack_mrkdwn", "title": "slack_mrkdwn", "summary": "slack_mrkdwn"}}

    @classmethod
    def catalog_view(cls, place: str, entry: Any, view: CatalogView) -> dict[str, Any]:
        """As written; a team also shows the catalog's `leadership` (templates see no catalog)."""
        out = super().catalog_view(place, entry, view)
        if place == "team":
            out["leadership"] = list(getattr(view.catalog, "leadership", None) or [])
        return out

    # -- mode and configuration -------------------------------------------------------------------

    @property
    def web_api(self) -> bool:
        """Web API mode: a bot token is set."""
        return bool(self.settings.slack_bot_token)

    def _channel(self, params: Mapping[str, Any] | None) -> str | None:
        return str((params or {}).get("channel") or self.settings.slack_channel or "") or None

    def _uses_api(self, params: Mapping[str, Any] | None) -> bool:
        """This call goes through the Web API: a bot token, and a channel (or no webhook to fall back on)."""
        if not self.web_api:
            return False
        if params is not None and ("users" in params or "members" in params):
            return True
        return bool(self._channel(params)) or not ((params or {}).get("webhook_url") or self.settings.slack_webhook_url)

    def modes(self) -> set[str]:
        return {"slack.api"} if self.web_api else set()

    def missing_config(self, params: Mapping[str, Any] | None = None) -> str | None:
        no_channel = "slack has no channel for this message (slack_channel in the catalog, or SLACK_CHANNEL)"
        if params is not None and "users" in params:  # `dm`
            return None if self.web_api else "direct messages need Slack's Web API (SLACK_BOT_TOKEN)"
        if params is not None and "members" in params:  # `create_channel`
            return None if self.web_api else "creating a channel needs Slack's Web API (SLACK_BOT_TOKEN)"
        if params is not None and "key" in params and "text" not in params:  # `incident`: the living message
            if not self.web_api:
                return "the living message needs Slack's Web API (SLACK_BOT_TOKEN)"
            ok = self._channel(params) or params.get("webhook_url") or self.settings.slack_webhook_url
            return None if ok else no_channel
        if self.web_api and (params is None or self._channel(params)):
            return None
        if self.settings.slack_webhook_url or (params or {}).get("webhook_url"):
            return None  # a webhook, as without a bot token
        return no_channel if self.web_api else "slack not configured (SLACK_WEBHOOK_URL)"

    def secrets(self, params: Mapping[str, Any] | None = None) -> list[str]:
        """The webhook URL and the bot token are credentials: never in a recorded error."""
        return [u for u in (self.settings.slack_webhook_url, (params or {}).get("webhook_url"),
                            self.settings.slack_bot_token) if u]

    @classmethod
    def notice(cls, text: str, severity: Any, ids: Mapping[str, str], view: Mapping[str, Any]) -> dict[str, Any]:
        service, team = view.get("service") or {}, view.get("team") or {}
        params = {"text": text, "severity": severity, "ids": dict(ids),
                  "webhook_url": service.get("slack_webhook") or team.get("slack_webhook")}
        channel = service.get("slack_channel") or team.get("slack_channel")
        if channel:  # Web API mode's target; without one the notice is as it always was
            params["channel"] = channel
        return params

    @classmethod
    def notice_escape(cls, text: str) -> str:
        return slack_mrkdwn(text)

    def describe_target(self, params: Mapping[str, Any], mask: Callable[[str], str]) -> str:
        if "members" in params:
            return f"a new Slack channel #{channel_name(params)}" if self.web_api else \
                "nowhere: creating a channel needs Slack's Web API (SLACK_BOT_TOKEN)"
        if "users" in params:
            return f"Slack direct messages to {params['users']}" if self.web_api else \
                "nowhere: direct messages need Slack's Web API (SLACK_BOT_TOKEN)"
        if self._uses_api(params):
            where = (f"{params['channel']} (the step's channel: service or team)" if params.get("channel")
                     else f"{self.settings.slack_channel} (SLACK_CHANNEL)" if self.settings.slack_channel
                     else "no channel (set slack_channel or SLACK_CHANNEL)")
            return f"Slack Web API, channel {where}"
        if params.get("webhook_url"):
            return f"Slack webhook {mask(str(params['webhook_url']))} (the step's webhook_url: service or team)"
        if self.settings.slack_webhook_url:
            return f"Slack webhook {mask(self.settings.slack_webhook_url)} (SLACK_WEBHOOK_URL)"
        return "nowhere: slack not configured (SLACK_WEBHOOK_URL)"

    def rate_limit_key(self, call: ActionCall) -> str | None:
        if self.web_api and "users" in call.params:
            return "slack:dm"
        if self.web_api and "members" in call.params:
            return "slack:create_channel"
        if self._uses_api(call.params):
            return "slack:channel:" + str(self._channel(call.params))  # Slack: about 1 message/s per channel
        return "slack:" + str(call.params.get("webhook_url") or "default")

    def serial_key(self, call: ActionCall) -> str | None:
        """One incident's messages in one channel: the living message and its thread replies."""
        key = call.params.get("key") or call.params.get("thread")
        if not self._uses_api(call.params) or not key or "users" in call.params or "members" in call.params:
            return None
        return f"{self._channel(call.params)}:{self._living_key(call.params, str(key))}"

    # -- plumbing -----------------------------------------------------------------------------------

    @property
    def api(self) -> SlackApi:
        return SlackApi(str(self.settings.slack_bot_token), self.settings.slack_api_url, self.http, self.timeout)

    def _ledger(self, channel: str) -> CreationLedger:
        return CreationLedger(self.redis, self.name, channel)

    @staticmethod
    def _living_key(params: Mapping[str, Any], key: str) -> str:
        episode = params.get("episode")
        return f"living:{key}#{episode}" if episode not in (None, "") else f"living:{key}"

    @staticmethod
    def _metadata(incident: str, episode: Any, action: str, kind: str) -> dict[str, Any]:
        return {"event_type": EVENT_TYPE,
                "event_payload": {"incident": incident, "episode": str(episode or ""), "action": action,
                                  "message": kind}}

    async def _channel_id(self, api: SlackApi, channel: str) -> tuple[Outcome | None, str | None]:
        """The id of a channel written as `#name` (history needs the id): remembered, else looked up."""
        if not channel.startswith("#"):
            return None, channel
        ledger = self._ledger("channels")
        known = await ledger.get(channel)
        if known:
            return None, str(known["id"])
        cursor = None
        for _ in range(HISTORY_PAGES * 4):
            outcome, data = await api.call("conversations_list", types="public_channel,private_channel",
                                           exclude_archived=True, limit=200, cursor=cursor)
            if not outcome.ok:
                return outcome, None
            for ch in data.get("channels") or []:
                if isinstance(ch, dict) and ch.get("name") == channel[1:] and ch.get("id"):
                    await ledger.put(channel, {"id": ch["id"]})
                    return None, str(ch["id"])
            cursor = (data.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                break
        return Outcome("permanent", detail=f"no Slack channel named {channel}"), None

    async def _find_posted(self, api: SlackApi, channel: str, pending: Pending | None, match: Callable[[dict], bool],
                           thread_ts: str | None) -> tuple[Outcome, dict[str, Any] | None]:
        """A message a lost attempt may have posted: the channel's history (or the thread's
        replies) since the first attempt, matched by its metadata."""
        problem, channel_id = await self._channel_id(api, channel)
        if problem is not None:
            return problem, None
        oldest = f"{(pending.first_ms / 1000 - HISTORY_SKEW_S):.6f}" if pending else None
        cursor = None
        outcome = Outcome("succeeded")
        for _ in range(HISTORY_PAGES):
            if thread_ts:
                outcome, data = await api.call("conversations_replies", channel=channel_id, ts=thread_ts,
                                               oldest=oldest, include_all_metadata=True, limit=200, cursor=cursor)
            else:
                outcome, data = await api.call("conversations_history", channel=channel_id, oldest=oldest,
                                               include_all_metadata=True, limit=200, cursor=cursor)
            if not outcome.ok:
                return outcome, None
            for msg in data.get("messages") or []:
                meta = msg.get("metadata") if isinstance(msg, dict) else None
                if isinstance(meta, dict) and meta.get("event_type") == EVENT_TYPE \
                        and isinstance(meta.get("event_payload"), dict) and match(meta["event_payload"]):
                    return outcome, {"channel": channel_id, "ts": msg.get("ts")}
            cursor = (data.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                break
        return outcome, None

    async def _post_once(self, call: ActionCall, channel: str, ledger_key: str, message: dict[str, Any],
                         metadata: dict[str, Any], match: Callable[[dict], bool],
                         thread_ts: str | None = None, broadcast: bool = False) -> Outcome:
        """chat.postMessage at most once for `ledger_key` (see the module's "Exactly once")."""
        api, ledger = self.api, self._ledger(channel)
        record = await ledger.get(ledger_key)
        if record:
            return Outcome("succeeded", detail="already posted", result=self._result(record))
        pending = await ledger.pending(ledger_key)
        if pending is not None or call.after_ambiguous:
            outcome, found = await self._find_posted(api, channel, pending, match, thread_ts)
            if not outcome.ok:
                return outcome
            if found is not None and found.get("ts"):
                record = {"channel": found["channel"], "ts": str(found["ts"]), "digest": _digest(message)}
                await ledger.put(ledger_key, record)
                return Outcome("succeeded", outcome.status, detail="found after an unconfirmed post",
                               result=self._result(record))
            if pending is not None and pending.settles_in > 0:
                return Outcome("retryable", outcome.status, retry_after=pending.settles_in,
                               detail="an earlier post lost its answer and may still land: looking again "
                                      "before posting")
        await ledger.begin(ledger_key, self.timeout + self.in_flight_grace)
        outcome, data = await api.call("chat_postMessage", channel=channel, metadata=metadata,
                                       thread_ts=thread_ts, reply_broadcast=True if broadcast and thread_ts else None,
                                       unfurl_links=False, **message)
        if not outcome.ok:
            await settle_after_failed_create(ledger, ledger_key, outcome, self.in_flight_grace)
            return outcome
        if not data.get("ts"):
            await ledger.answered(ledger_key)
            return Outcome("retryable", outcome.status, detail="Slack answered without a message ts",
                           response=outcome.response, ambiguous=True)
        record = {"channel": str(data.get("channel") or channel), "ts": str(data["ts"]), "digest": _digest(message)}
        await ledger.put(ledger_key, record)
        if channel.startswith("#") and data.get("channel"):
            await self._ledger("channels").put(channel, {"id": str(data["channel"])})
        outcome.result = self._result(record)
        return outcome

    @staticmethod
    def _result(record: Mapping[str, Any]) -> dict[str, Any]:
        return {"slack_channel": record.get("channel"), "slack_ts": record.get("ts")}

    # -- actions ------------------------------------------------------------------------------------

    async def notify(self, call: ActionCall) -> Outcome:
        if self._uses_api(call.params):
            return await self._notify_api(call)
        url = call.params.get("webhook_url") or self.settings.slack_webhook_url
        if not url:
            return Outcome("skipped", detail="slack not configured (SLACK_WEBHOOK_URL)")
        outcome, _ = await self.request("POST", url, json_body=build_message(call.params))
        if outcome.state == "succeeded" and outcome.response.strip() != "ok":
            # Slack answers 200 with the plain body `ok`; anything else is an error string.
            return Outcome("permanent", outcome.status, detail=f"Slack answered {outcome.response[:100]!r}",
                           response=outcome.response)
        return outcome

    async def _notify_api(self, call: ActionCall) -> Outcome:
        """A message in the channel, or a reply in its incident's living message's thread."""
        p = call.params
        channel = self._channel(p)
        if not channel:
            return Outcome("skipped", detail="slack has no channel (slack_channel in the catalog, or SLACK_CHANNEL)")
        thread_ts = None
        incident = str(p.get("thread") or "")
        if incident:
            living_key = self._living_key(p, incident)
            ledger = self._ledger(channel)
            living = await ledger.get(living_key)
            if living:
                thread_ts = str(living["ts"])
            elif await ledger.intent(living_key) is not None:
                return Outcome("retryable", detail="the incident's Slack message is not confirmed yet",
                               retry_after=2.0)
        identity = call.idempotency_key
        return await self._post_once(call, channel, "notice:" + identity, build_message(p),
                                     self._metadata(incident, p.get("episode"), identity, "notice"),
                                     lambda payload: payload.get("action") == identity, thread_ts=thread_ts,
                                     broadcast=_flag(p.get("broadcast")))

    async def incident(self, call: ActionCall) -> Outcome:
        """The incident's living message in its channel: posted once, then edited in place."""
        p = call.params
        if not self.web_api:
            return Outcome("skipped", detail="the living message needs Slack's Web API (SLACK_BOT_TOKEN)")
        channel, key = self._channel(p), str(p.get("key") or "")
        if not key:
            return Outcome("permanent", detail="slack.incident needs the incident's key")
        message = build_living(p, with_buttons=bool(self.settings.slack_signing_secret))
        living_key = self._living_key(p, key)
        if not channel:
            return await self._living_by_webhook(p, living_key, message)
        ledger = self._ledger(channel)
        record = await ledger.get(living_key)
        if record is None:
            episode = str(p.get("episode") or "")
            return await self._post_once(
                call, channel, living_key, message, self._metadata(key, episode, call.idempotency_key, "living"),
                lambda payload: (payload.get("message") == "living" and payload.get("incident") == key
                                 and str(payload.get("episode") or "") == episode))
        if (shown := self._shows(record, message)) is not None:
            return shown
        outcome, _ = await self.api.call("chat_update", channel=record["channel"], ts=record["ts"], **message)
        if outcome.ok:
            await ledger.put(living_key, {**record, "digest": _digest(message), "updated_at": int(time.time())})
            outcome.result = self._result(record)
        return outcome

    async def unchanged(self, action: str, call: ActionCall) -> Outcome | None:
        """A living message that shows this already needs no edit, and no token for one (in a
        storm, the alerts that join an incident change nothing it shows)."""
        p = call.params
        channel, key = self._channel(p), str(p.get("key") or "")
        if action != "incident" or not self.web_api or not channel or not key:
            return None
        record = await self._ledger(channel).get(self._living_key(p, key))
        if record is None:
            return None
        return self._shows(record, build_living(p, with_buttons=bool(self.settings.slack_signing_secret)))

    def _shows(self, record: Mapping[str, Any], message: dict[str, Any]) -> Outcome | None:
        if record.get("digest") != _digest(message):
            return None
        return Outcome("skipped", detail="the incident's Slack message already shows this", result=self._result(record))

    async def _living_by_webhook(self, p: Mapping[str, Any], living_key: str, message: dict[str, Any]) -> Outcome:
        """No channel, but a webhook: the message is posted there once, as webhook mode would
        announce it, and never edited (a webhook message cannot be)."""
        url = p.get("webhook_url") or self.settings.slack_webhook_url
        if not url:
            return Outcome("skipped", detail="slack has no channel (slack_channel in the catalog, or SLACK_CHANNEL)")
        ledger = self._ledger("webhook")
        if await ledger.get(living_key):
            return Outcome("skipped", detail="posted through the webhook, which cannot edit it: set slack_channel "
                                             "or SLACK_CHANNEL for a living message")
        outcome, _ = await self.request("POST", str(url), json_body=message)
        if outcome.state == "succeeded" and outcome.response.strip() != "ok":
            return Outcome("permanent", outcome.status, detail=f"Slack answered {outcome.response[:100]!r}",
                           response=outcome.response)
        if outcome.ok:
            await ledger.put(living_key, {"webhook": True})
        return outcome

    async def dm(self, call: ActionCall) -> Outcome:
        """A direct message to each of `users` (`conversations.open`, then `chat.postMessage`),
        once per user and incident episode (`key`, `episode`), whichever step sends it."""
        p = call.params
        if not self.web_api:
            return Outcome("skipped", detail="direct messages need Slack's Web API (SLACK_BOT_TOKEN)")
        raw = p.get("users") or []
        users = list(dict.fromkeys(str(u) for u in (raw if isinstance(raw, list) else [raw]) if u))
        if not users:
            return Outcome("skipped", detail="nobody to message (notify_dm, leadership)")
        key, episode = str(p.get("key") or call.idempotency_key), str(p.get("episode") or "")
        message = build_message(p)
        api = self.api
        sent: dict[str, str] = {}
        last = Outcome("succeeded")
        for user in users:
            outcome, data = await api.call("conversations_open", users=user)
            if not outcome.ok:
                return self._partial(outcome, sent, f"DM to {user}")
            channel = str((data.get("channel") or {}).get("id") or "")
            if not channel:
                return Outcome("retryable", outcome.status, detail=f"Slack opened no DM with {user}")
            last = await self._post_once(
                call, channel, self._living_key(p, key).replace("living:", "dm:", 1), message,
                self._metadata(key, episode, call.idempotency_key, "dm"),
                lambda payload: (payload.get("message") == "dm" and payload.get("incident") == key
                                 and str(payload.get("episode") or "") == episode))
            if not last.ok:
                return self._partial(last, sent, f"DM to {user}")
            sent[user] = str(last.result.get("slack_ts") or "")
        return Outcome("succeeded", last.status, detail=f"{len(sent)} direct message(s)", result={"slack_dms": sent})

    async def create_channel(self, call: ActionCall) -> Outcome:
        """The incident's own channel (`conversations.create`), once per incident episode; a
        channel of that name already there (`name_taken`: ours from an attempt that lost its
        answer, or someone's) is looked up and reused. Then `members` are invited
        (`conversations.invite`). The living message goes there through `slack.incident` with
        `channel: incident.slack_incident_channel` (the built-in `slack-incident`)."""
        p = call.params
        if not self.web_api:
            return Outcome("skipped", detail="creating a channel needs Slack's Web API (SLACK_BOT_TOKEN)")
        key = str(p.get("key") or "")
        if not key:
            return Outcome("permanent", detail="slack.create_channel needs the incident's key")
        ledger, entry = self._ledger("created"), self._living_key(p, key).replace("living:", "channel:", 1)
        api = self.api
        record = await ledger.get(entry)
        if record is None:
            name = channel_name(p)
            outcome, data = await api.call("conversations_create", name=name)
            if outcome.ok:
                channel_id = str((data.get("channel") or {}).get("id") or "")
                detail = f"created #{name}"
            elif data.get("error") == "name_taken":  # a lost attempt's, or an existing one: reuse it
                problem, channel_id = await self._channel_id(api, "#" + name)
                if problem is not None:
                    problem.detail = f"#{name} is taken but could not be found: {problem.detail}"
                    return problem
                channel_id, detail, outcome = str(channel_id), f"reused #{name}", Outcome("succeeded", outcome.status)
            else:
                return outcome
            if not channel_id:
                return Outcome("retryable", outcome.status, detail="Slack created no channel id", ambiguous=True)
            record = {"channel": channel_id, "name": name, "invited": []}
            await ledger.put(entry, record)
        else:
            outcome, detail = Outcome("succeeded"), f"#{record['name']} already made"
        raw = p.get("members") or []
        members = [str(u) for u in dict.fromkeys(raw if isinstance(raw, list) else [raw]) if u]
        todo = [u for u in members if u not in record.get("invited", [])]
        if todo:
            invited, answer = await api.call("conversations_invite", channel=record["channel"], users=",".join(todo))
            if not invited.ok and answer.get("error") not in INVITED_ALREADY:
                invited.detail = f"{detail}; inviting {', '.join(todo)}: {invited.detail}"
                return invited
            record = {**record, "invited": [*record.get("invited", []), *todo]}
            await ledger.put(entry, record)
        outcome.detail = detail + (f", invited {len(todo)}" if todo else "")
        outcome.result = {"slack_incident_channel": record["channel"], "slack_channel_name": record["name"]}
        return outcome

    @staticmethod
    def _partial(outcome: Outcome, sent: Mapping[str, str], what: str) -> Outcome:
        """A failed DM after others went out: said in the detail (a retry skips those already sent)."""
        done = f" ({len(sent)} already sent)" if sent else ""
        outcome.detail = f"{what}: {outcome.detail}{done}"
        return outcome



connector = Slack
#: `POST /slack/interactions`: the living message's buttons (`connectors._slackinteractions`).
interactions = SlackInteractions()
