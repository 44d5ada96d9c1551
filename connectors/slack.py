"""Slack incoming webhook: action `notify`.

Escaping: `text`, `title` and `summary` are mrkdwn (`Slack.markup`): values interpolated
into them are escaped when rendered (`slack_mrkdwn`, below: `& < >` as entities, so no `<!channel>`, `<@U…>` or
`<url|label>` comes from a payload; `slack_link` is the only way a link is built), the operator's literal text
is kept. Everything else is data and escaped here: link texts and URLs (only http(s) URLs
become links), ids, severity.

Idempotency: Slack does not deduplicate messages. The runner records a success before the
job returns and never re-sends a recorded success on retry or replay (unless forced); the
remaining window (crash between Slack's 200 and the record) can at worst repeat one message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

from pydantic import Field

from connectors.base import ActionCall, CatalogField, Connector, Outcome, RetryPolicy, Setting
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


class Slack(Connector):
    name = "slack"
    label = "Slack"
    notice_action = "notify"
    catalog_fields = (
        CatalogField("slack", str, Field("", description="how to mention them in Slack, e.g. <@U024BE7LH>"),
                     on=("contact",)),
        CatalogField("slack_webhook", SecretRef | None, on=("service", "team", "contact"), secret_ref=True),
    )
    default_rate_limit = "1/s"
    variables = (Setting("SLACK_WEBHOOK_URL", secret=True),)
    action_names = frozenset({"notify"})
    global_target = ("webhook_url", "SLACK_WEBHOOK_URL")
    retry_policy = RetryPolicy(max_attempts=6, base_delay=1.0, max_delay=120.0, deadline=6 * 3600)
    formats = {"slack_mrkdwn": slack_mrkdwn}
    markup = {"notify": {"text": "slack_mrkdwn", "title": "slack_mrkdwn", "summary": "slack_mrkdwn"}}

    def missing_config(self, params: Mapping[str, Any] | None = None) -> str | None:
        if self.settings.slack_webhook_url or (params or {}).get("webhook_url"):
            return None
        return "slack not configured (SLACK_WEBHOOK_URL)"

    def secrets(self, params: Mapping[str, Any] | None = None) -> list[str]:
        """The webhook URL is the credential: it must never appear in a recorded error."""
        return [u for u in (self.settings.slack_webhook_url, (params or {}).get("webhook_url")) if u]

    @classmethod
    def notice(cls, text: str, severity: Any, ids: Mapping[str, str], view: Mapping[str, Any]) -> dict[str, Any]:
        service, team = view.get("service") or {}, view.get("team") or {}
        return {"text": text, "severity": severity, "ids": dict(ids),
                "webhook_url": service.get("slack_webhook") or team.get("slack_webhook")}

    @classmethod
    def notice_escape(cls, text: str) -> str:
        return slack_mrkdwn(text)

    def describe_target(self, params: Mapping[str, Any], mask: Callable[[str], str]) -> str:
        if params.get("webhook_url"):
            return f"Slack webhook {mask(str(params['webhook_url']))} (the step's webhook_url: service or team)"
        if self.settings.slack_webhook_url:
            return f"Slack webhook {mask(self.settings.slack_webhook_url)} (SLACK_WEBHOOK_URL)"
        return "nowhere: slack not configured (SLACK_WEBHOOK_URL)"

    def rate_limit_key(self, call: ActionCall) -> str | None:
        return "slack:" + str(call.params.get("webhook_url") or "default")

    async def notify(self, call: ActionCall) -> Outcome:
        url = call.params.get("webhook_url") or self.settings.slack_webhook_url
        if not url:
            return Outcome("skipped", detail="slack not configured (SLACK_WEBHOOK_URL)")
        outcome, _ = await self.request("POST", url, json_body=build_message(call.params))
        if outcome.state == "succeeded" and outcome.response.strip() != "ok":
            # Slack answers 200 with the plain body `ok`; anything else is an error string.
            return Outcome("permanent", outcome.status, detail=f"Slack answered {outcome.response[:100]!r}",
                           response=outcome.response)
        return outcome


connector = Slack
