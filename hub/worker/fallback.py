"""The fallback pager: what the hub does when a page dead-letters.

A page that runs out of attempts (PagerDuty answering 500 all along, a revoked key) would
otherwise notify nobody. When a `pagerduty.trigger` or `opsgenie.create` action is dead,
the processor plans two more actions on the same event:

- `<page id>:fallback`: the *other* pager (OpsGenie when PagerDuty failed and vice versa),
  when it is configured for the service or team, or globally; its alias / dedup key is the
  failed page's, so a later successful replay of the page is the same alert there;
- `<page id>:fallback-notice`: a Slack message to the team channel saying the page failed,
  what the other pager did, and how to replay the page (`incident-hub replay EVENT_ID`).

Both are claimed like any action (`hub:claims:*`) and never repeat once recorded: a replay
of the page that then succeeds leaves them alone (one fallback page per incident page).
On by default; `fallback_pager: false` on a service, a team or the catalog turns it off.
The notice text is written after the fallback page was tried, so it says what happened.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hub.rules.engine import PlannedStep

#: Page actions and the pager each falls back to.
OTHER_PAGER = {"pagerduty.trigger": "opsgenie", "opsgenie.create": "pagerduty"}
PAGER_NAMES = {"pagerduty": "PagerDuty", "opsgenie": "OpsGenie"}
SUFFIX_PAGE = ":fallback"
SUFFIX_NOTICE = ":fallback-notice"


def is_page(step: PlannedStep) -> bool:
    return step.name in OTHER_PAGER


def fallback_ids(page_id: str) -> tuple[str, str]:
    return page_id + SUFFIX_PAGE, page_id + SUFFIX_NOTICE


def enabled(step: PlannedStep, catalog_default: bool) -> bool:
    """The service's setting, else the team's, else the catalog's (default on)."""
    for view in (step.context.get("service") or {}, step.context.get("team") or {}):
        value = view.get("fallback_pager")
        if value is not None:
            return bool(value)
    return catalog_default


def target(step: PlannedStep, configured: set[str]) -> str | None:
    """The other pager when it can page for this service (None: there is none)."""
    other = OTHER_PAGER.get(step.name)
    service, team = step.context.get("service") or {}, step.context.get("team") or {}
    if other == "opsgenie" and "opsgenie" in configured:
        return other
    if other == "pagerduty" and (service.get("pagerduty_routing_key") or team.get("pagerduty_routing_key")
                                 or "pagerduty" in configured):
        return other
    return None


def _step(page: PlannedStep, ident: str, connector: str, action: str, params: dict[str, Any]) -> PlannedStep:
    """A fallback action: parameters given outright (never rendered: they quote payload text)."""
    return PlannedStep(id=ident, connector=connector, action=action, params=params, idempotency_key=ident,
                       workflow=page.workflow, step_id=page.step_id + ident[len(page.id):],
                       event_index=page.event_index, incident_key=page.incident_key,
                       subject=page.subject, context=page.context)


def page_step(page: PlannedStep, other: str, error: str) -> PlannedStep:
    """The failed page's alert, sent through `other`, with the same key."""
    p: Mapping[str, Any] = page.params
    service, team = page.context.get("service") or {}, page.context.get("team") or {}
    incident = page.context.get("incident") or {}
    failed = PAGER_NAMES.get(page.connector, page.connector)
    why = f"The {failed} page failed ({error}); sent through {PAGER_NAMES[other]} by incident-hub."
    ident = fallback_ids(page.id)[0]
    if other == "opsgenie":
        details = p.get("custom_details") or {}
        summary = details.get("summary") if isinstance(details, Mapping) else None
        params: dict[str, Any] = {
            "message": p.get("summary") or incident.get("title") or page.id,
            "alias": p.get("dedup_key") or page.idempotency_key,
            "description": f"{why}\n\n{summary}" if summary else why,
            "responders": service.get("opsgenie_responders") or team.get("opsgenie_responders") or [],
            "severity": p.get("severity") or incident.get("severity"),
            "tags": list(incident.get("services") or []),
            "details": {"incident": str(incident.get("key") or ""), "failed_page": page.id},
        }
        return _step(page, ident, "opsgenie", "create", {k: v for k, v in params.items() if v})
    params = {
        "summary": p.get("message") or incident.get("title") or page.id,
        "severity": p.get("severity") or incident.get("severity"),
        "source": "incident-hub",
        "dedup_key": p.get("alias") or page.idempotency_key,
        "routing_key": service.get("pagerduty_routing_key") or team.get("pagerduty_routing_key"),
        "component": service.get("name"),
        "group": team.get("name"),
        "custom_details": {"note": why, "description": p.get("description") or "",
                           "incident": str(incident.get("key") or "")},
    }
    return _step(page, ident, "pagerduty", "trigger", {k: v for k, v in params.items() if v})


def notice_step(page: PlannedStep, event_id: str, error: str, other: str | None,
                fallback: Mapping[str, Any] | None) -> PlannedStep:
    """The Slack notice, worded from what actually happened to the fallback page."""
    incident = page.context.get("incident") or {}
    service, team = page.context.get("service") or {}, page.context.get("team") or {}
    failed = PAGER_NAMES.get(page.connector, page.connector)
    title = slack_escape(str(incident.get("title") or page.params.get("summary") or page.params.get("message")
                             or incident.get("key") or page.id))
    lines = [f":x: The {failed} page for {title} failed: {slack_escape(error)}."]
    state = (fallback or {}).get("state")
    if other is None:
        lines.append("No other pager is configured for this service: nobody was paged.")
    elif state == "succeeded":
        lines.append(f"{PAGER_NAMES[other]} was paged instead.")
    elif state == "dead":
        lines.append(f"The {PAGER_NAMES[other]} fallback failed too "
                     f"({slack_escape(str((fallback or {}).get('error') or 'no error recorded'))}): nobody was paged.")
    elif state == "skipped":
        lines.append(f"The {PAGER_NAMES[other]} fallback was skipped "
                     f"({slack_escape(str((fallback or {}).get('error') or ''))}): nobody was paged.")
    else:
        lines.append(f"Paging through {PAGER_NAMES[other]} instead (not confirmed yet).")
    lines.append(f"Replay the page once {failed} is reachable: `incident-hub replay {event_id}`")
    params = {"text": " ".join(lines), "severity": page.params.get("severity") or incident.get("severity"),
              "ids": {"incident": str(incident.get("key") or ""), "event": event_id, "action": page.id},
              "webhook_url": service.get("slack_webhook") or team.get("slack_webhook")}
    return _step(page, fallback_ids(page.id)[1], "slack", "notify", {k: v for k, v in params.items() if v})


def slack_escape(text: str) -> str:
    """Slack mrkdwn control characters as entities (payload text must not become links or mentions)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
