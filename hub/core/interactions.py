"""A person acting on an incident from a chat message (a button): what it asks, and the event it becomes.

An outside tool's interactions endpoint (`InteractionSource`, declared by its connector module)
turns a signed request into an `Interaction`; the ingress checks it against Redis and records
it (`hub.ingress.interactions`). Acknowledge and resolve are recorded as events of the hub's
own `interaction` source, so the worker processes them like any event and the normal
workflows run: `page.acknowledged` (as a pager's ack: escalation stops) and
`incident.resolved` (the page, status page and timers resolved). Escalate-now is a worker job
(`hub.worker.interactions`) that fires the incident's next escalation timer early.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel

from hub.core.events import Kind, NormalisedEvent

#: The recorded events' source (not a webhook sender: nothing posts to /webhooks/interaction).
SOURCE = "interaction"

Action = Literal["acknowledge", "resolve", "escalate"]
ACTIONS: tuple[str, ...] = ("acknowledge", "resolve", "escalate")
#: The arq job that fires an incident's next escalation timer (`hub.worker.interactions`).
ESCALATE_JOB = "escalate_now"


@dataclass(frozen=True)
class Interaction:
    """One click, as its tool's endpoint parsed it (only the signature makes it trusted; the
    incident it names is checked against Redis before anything runs)."""

    action: Action
    #: The incident's key (or alias) the button carries.
    incident: str
    #: Who clicked, as `<tool>:<user id>` (e.g. `chat:U024BE7LH`): the audit log's `who`.
    by: str
    #: One click: the same across the tool's retries of it.
    identity: str
    #: One button of one message: a second click within `hub.ingress.interactions.WINDOW_S` does nothing.
    window: str

    def body(self, key: str, at_ms: int) -> bytes:
        """The recorded event's body (the incident's resolved key, not the name the button carried)."""
        return json.dumps({**asdict(self), "incident": key, "at": at_ms}, separators=(",", ":")).encode()


class InteractionBody(BaseModel):
    action: Action
    incident: str
    by: str
    identity: str
    window: str
    at: int


class InteractionEvents:
    """The hub's own `interaction` events, parsed and normalised (for the planner)."""

    name = SOURCE

    def parse(self, body: bytes, headers: Mapping[str, str], content_type: str) -> InteractionBody:
        return InteractionBody.model_validate_json(body)

    def normalise(self, payload: Any, headers: Mapping[str, str],
                  options: Mapping[str, Any] | None = None) -> list[NormalisedEvent]:
        p: InteractionBody = payload
        at = datetime.fromtimestamp(p.at / 1000, UTC)
        attributes = {"interaction": p.action, "by": p.by}
        if p.action == "acknowledge":  # a pager's ack names the incident the same way (fingerprint = key)
            return [NormalisedEvent(kind=Kind.PAGE_ACKNOWLEDGED, source=SOURCE, fingerprint=p.incident,
                                    occurred_at=at, attributes={**attributes, "acknowledged_by": p.by})]
        if p.action == "resolve":
            return [NormalisedEvent(kind=Kind.INCIDENT_RESOLVED, source=SOURCE, fingerprint=p.incident,
                                    occurred_at=at, status="resolved",
                                    attributes={**attributes, "resolution": f"resolved by {p.by}"})]
        return []

    def no_events_reason(self, payload: Any, headers: Mapping[str, str],
                         options: Mapping[str, Any] | None = None) -> str:
        return "an interaction that is not an event (escalate now is a worker job of its own)"
