"""Prometheus Alertmanager: `webhook_config` receivers (body `version: "4"`).

Auth: Alertmanager does not sign; configure `http_config.authorization.credentials` (sent as
`Authorization: Bearer <t>`) or `http_config.basic_auth.password` with
`ALERTMANAGER_WEBHOOK_TOKEN`.

Events: one per alert in the group (see `connectors._alertgroup`), `alert.firing` or
`alert.resolved` from the alert's own status; fingerprint = Alertmanager's alert fingerprint.
The notification group is one incident (`grouping: per_alert`: each alert is).

Catalog options (all optional): `severity_map` (label value → SEV1..SEV4; defaults
critical→SEV1, error/high/major→SEV2, warning/minor→SEV3, else SEV4), `default_severity`
(default SEV4), `severity_label` (default `severity`), `service_labels` (first present wins,
default `["service", "job"]`), `environment_label` (default `["env", "environment"]`),
`grouping` (`group`, the default, or `per_alert`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from connectors._alertgroup import AlertGroupSource
from connectors.base import Setting
from hub.ingress.verify import bearer, first_credential, require_token

if TYPE_CHECKING:
    from hub.core.settings import Settings


class AlertmanagerSource(AlertGroupSource):
    name = "alertmanager"
    recorded_headers = ("User-Agent",)
    credential_settings = ("alertmanager_webhook_token",)
    variables = (Setting("ALERTMANAGER_WEBHOOK_TOKEN", secret=True, rotating=True),)

    def verify(self, body: bytes, headers: Mapping[str, str], settings: Settings) -> str:
        require_token(settings.alertmanager_webhook_token, headers, "ALERTMANAGER_WEBHOOK_TOKEN")
        return "token"

    def sign_request(self, body: bytes, settings: Settings, now: float | None = None, *,
                     same_id: bool = False) -> dict[str, str]:
        token = first_credential(settings.alertmanager_webhook_token, "ALERTMANAGER_WEBHOOK_TOKEN")
        return {"Content-Type": "application/json", "User-Agent": "Alertmanager/0.27.0",
                "Authorization": bearer(token)}


source = AlertmanagerSource()
