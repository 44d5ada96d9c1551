"""Decide: which actions a list of normalised events causes.

This is the built-in minimum (a failed production deploy notifies Slack). The YAML catalog
and workflows replace it behind the same `plan()` signature.
"""

from __future__ import annotations

from typing import Any

from hub.actions import PlannedAction
from hub.events import Kind, NormalisedEvent


class Rules:
    def source_options(self, source: str) -> dict[str, Any]:
        """The catalog's options for one inbound source (severity maps, label names, …)."""
        return {}

    def plan(self, events: list[NormalisedEvent]) -> list[PlannedAction]:
        planned: list[PlannedAction] = []
        for ev in events:
            if ev.kind == Kind.DEPLOY_FAILED and (ev.environment or "").lower() in ("production", "prod"):
                planned.append(PlannedAction(
                    id=f"deploy-failed.notify:{ev.fingerprint}", connector="slack", action="notify",
                    workflow="deploy-failed",
                    params={"text": f":rotating_light: {ev.title}", "summary": ev.summary,
                            "links": [link.model_dump() for link in ev.links],
                            "ids": {"sha": ev.attributes.get("sha", "")[:12],
                                    "author": ev.attributes.get("author", "")}},
                    idempotency_key=f"{ev.fingerprint}:deploy-failed.notify"))
        return planned
