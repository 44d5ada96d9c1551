"""toypager: a made-up pager, the whole of a connector in one file (tests/test_connector_plugin.py).

It declares everything the hub needs to know: its variables (a secret token and an API URL
with a default), its one action, its rate limit, that a resolution supersedes a pending page,
and the incident field a step may record from its result.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from connectors.base import ActionCall, CatalogField, Connector, Outcome, Record, RetryPolicy, Setting


class ToyPager(Connector):
    name = "toypager"
    variables = (Setting("TOYPAGER_TOKEN", secret=True), Setting("TOYPAGER_URL", "https://toypager.invalid"))
    action_names = frozenset({"page"})
    default_rate_limit = "7/s"
    superseded_by_resolution = frozenset({"page"})
    recorded = {"toypager_page_id": Record()}
    #: Catalog services and teams may name their toypager rota (`service.toypager_rota` in templates).
    catalog_fields = (CatalogField("toypager_rota", str | None, on=("service", "team")),)
    retry_policy = RetryPolicy(max_attempts=3, base_delay=0.05, max_delay=0.2)

    def missing_config(self, params: Mapping[str, Any] | None = None) -> str | None:
        return None if self.settings.toypager_token else "toypager not configured (TOYPAGER_TOKEN)"

    def secrets(self, params: Mapping[str, Any] | None = None) -> list[str]:
        return [self.settings.toypager_token] if self.settings.toypager_token else []

    def describe_target(self, params: Mapping[str, Any], mask: Callable[[str], str]) -> str:
        return f"toypager rota {params.get('rota') or '(default)'} at {self.settings.toypager_url}"

    async def page(self, call: ActionCall) -> Outcome:
        outcome, body = await self.request(
            "POST", self.settings.toypager_url.rstrip("/") + "/pages",
            json_body={"text": str(call.params.get("text") or ""), "rota": call.params.get("rota"),
                       "key": call.idempotency_key},
            headers={"Authorization": f"Bearer {self.settings.toypager_token}"})
        if outcome.ok and isinstance(body, dict):
            outcome.result = {"page_id": body.get("id")}
        return outcome


connector = ToyPager
