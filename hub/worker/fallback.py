"""The fallback pager: what the hub does when a page dead-letters.

A page that runs out of attempts (its pager answering 500 all along, a revoked key) would
otherwise notify nobody. When a pager's page action (`Connector.page_action`) is dead, the
processor plans two more actions on the same event:

- `<page id>:fallback`: the *other* pager (any other connector declaring a `page_action`),
  when it can page for the service or team, or globally (`Connector.can_page`); its key is
  the failed page's, so a later successful replay of the page is the same alert there;
- `<page id>:fallback-notice`: a message through the notifier (`Connector.notice_action`)
  to the team channel saying the page failed, what the other pager did, and how to replay
  the page (`incident-hub replay EVENT_ID`).

Both are claimed like any action (`hub:claims:*`) and never repeat once recorded: a replay
of the page that then succeeds leaves them alone (one fallback page per incident page).
On by default; `fallback_pager: false` on a service, a team or the catalog turns it off.
The notice text is written after the fallback page was tried, so it says what happened.
Which systems page or notify, and how their parameters read, the connectors declare.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from connectors.base import PageFacts
from hub.core.registry import connector_classes, page_actions
from hub.rules.engine import PlannedStep

if TYPE_CHECKING:
    from connectors.base import Connector

SUFFIX_PAGE = ":fallback"
SUFFIX_NOTICE = ":fallback-notice"


def is_page(step: PlannedStep) -> bool:
    return step.name in page_actions()


def _label(connector: str) -> str:
    cls = connector_classes().get(connector)
    return cls.display_name() if cls is not None else connector


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
    """Another pager that can page for this service (None: there is none)."""
    service, team = step.context.get("service") or {}, step.context.get("team") or {}
    for name, cls in sorted(connector_classes().items()):
        if cls.page_action and name != step.connector and cls.can_page(service, team, configured):
            return name
    return None


def _step(page: PlannedStep, ident: str, connector: str, action: str, params: dict[str, Any]) -> PlannedStep:
    """A fallback action: parameters given outright (never rendered: they quote payload text)."""
    return PlannedStep(id=ident, connector=connector, action=action, params=params, idempotency_key=ident,
                       workflow=page.workflow, step_id=page.step_id + ident[len(page.id):],
                       event_index=page.event_index, incident_key=page.incident_key,
                       subject=page.subject, context=page.context)


def page_step(page: PlannedStep, other: str, error: str) -> PlannedStep:
    """The failed page's alert, sent through `other`, with the same key."""
    incident = page.context.get("incident") or {}
    failed_cls = connector_classes().get(page.connector)
    said = failed_cls.page_facts(page.params) if failed_cls is not None else PageFacts()
    facts = PageFacts(title=said.title or incident.get("title") or page.id, key=said.key or page.idempotency_key,
                      detail=said.detail, severity=said.severity or incident.get("severity"), action_id=page.id)
    cls = connector_classes()[other]
    why = f"The {_label(page.connector)} page failed ({error}); sent through {cls.display_name()} by incident-hub."
    params = cls.fallback_page(facts, why, page.context)
    assert cls.page_action is not None
    return _step(page, fallback_ids(page.id)[0], other, cls.page_action, {k: v for k, v in params.items() if v})


def _notifier() -> type[Connector]:
    for _name, cls in sorted(connector_classes().items()):
        if cls.notice_action:
            return cls
    raise LookupError("no connector declares a notice_action")


def notice_step(page: PlannedStep, event_id: str, error: str, other: str | None,
                fallback: Mapping[str, Any] | None) -> PlannedStep:
    """The notice to the team, worded from what actually happened to the fallback page."""
    notifier = _notifier()
    esc = notifier.notice_escape
    incident = page.context.get("incident") or {}
    failed = _label(page.connector)
    failed_cls = connector_classes().get(page.connector)
    said = failed_cls.page_facts(page.params) if failed_cls is not None else PageFacts()
    title = esc(str(incident.get("title") or said.title or incident.get("key") or page.id))
    lines = [f":x: The {failed} page failed for “{title}”: {esc(error.rstrip('.'))}."]
    state = (fallback or {}).get("state")
    if other is None:
        lines.append("No other pager is configured for this service: nobody was paged.")
    elif state == "succeeded":
        lines.append(f"{_label(other)} was paged instead.")
    elif state == "dead":
        lines.append(f"The {_label(other)} fallback failed too "
                     f"({esc(str((fallback or {}).get('error') or 'no error recorded'))}): nobody was paged.")
    elif state == "skipped":
        lines.append(f"The {_label(other)} fallback was skipped "
                     f"({esc(str((fallback or {}).get('error') or ''))}): nobody was paged.")
    else:
        lines.append(f"Paging through {_label(other)} instead (not confirmed yet).")
    lines.append(f"Replay the page once {failed} is reachable: `incident-hub replay {event_id}`")
    params = notifier.notice(" ".join(lines), page.params.get("severity") or incident.get("severity"),
                             {"incident": str(incident.get("key") or ""), "event": event_id, "action": page.id},
                             page.context)
    assert notifier.notice_action is not None
    return _step(page, fallback_ids(page.id)[1], notifier.name, notifier.notice_action,
                 {k: v for k, v in params.items() if v})
