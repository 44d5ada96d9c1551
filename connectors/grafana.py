"""Grafana unified alerting: the webhook contact point (body `version: "1"`).

Auth, any of (both when both are configured):
- HMAC: `X-Grafana-Alerting-Signature: <hex HMAC-SHA256(secret, body)>` with
  `GRAFANA_WEBHOOK_SECRET`. When `GRAFANA_TIMESTAMP_HEADER` names Grafana's timestamp header,
  the signature covers `ts + ":" + body` and a timestamp outside `HUB_TIMESTAMP_TOLERANCE` is
  refused, so a captured request cannot be replayed later.
- Token: `Authorization: Bearer <GRAFANA_WEBHOOK_TOKEN>` or the Basic-auth password.

Events: one per alert in the group (see `connectors._alertgroup`), `alert.firing` or
`alert.resolved` from the alert's own status; fingerprint = Grafana's alert fingerprint.

Catalog options (all optional): `severity_map` (label value → SEV1..SEV4, e.g.
`{"critical": "SEV1"}`; defaults critical→SEV1, error/high/major→SEV2, warning/minor→SEV3,
else SEV4), `default_severity` (for a missing or unknown label, default SEV4),
`severity_label` (default `severity`), `service_labels` (first present wins, default
`["service", "job"]`), `environment_label` (default `["env", "environment"]`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from connectors._alertgroup import AlertGroupSource
from hub.settings import Settings
from hub.verify import (
    AuthError,
    bearer,
    check_hex_hmac,
    check_timestamp,
    first_credential,
    require_token,
    sign_hex_hmac,
)

SIGNATURE_HEADER = "X-Grafana-Alerting-Signature"


class GrafanaSource(AlertGroupSource):
    name = "grafana"
    recorded_headers = ("User-Agent",)
    credential_settings = ("grafana_webhook_secret", "grafana_webhook_token")

    def verify(self, body: bytes, headers: Mapping[str, str], settings: Settings) -> str:
        how = []
        if settings.grafana_webhook_secret:
            how.append(self._verify_hmac(body, headers, settings))
        if settings.grafana_webhook_token:
            require_token(settings.grafana_webhook_token, headers, "GRAFANA_WEBHOOK_TOKEN")
            how.append("token")
        return " + ".join(how)

    def _verify_hmac(self, body: bytes, headers: Mapping[str, str], settings: Settings) -> str:
        sig = headers.get(SIGNATURE_HEADER, "").strip()
        if not sig:
            raise AuthError("missing_signature", f"{SIGNATURE_HEADER} header missing (set the contact point's "
                                                 "HMAC secret in Grafana to GRAFANA_WEBHOOK_SECRET)")
        message = body
        ts_header = settings.grafana_timestamp_header
        if ts_header:
            ts = headers.get(ts_header)
            try:
                check_timestamp(ts, settings.hub_timestamp_tolerance)
            except AuthError as e:
                raise AuthError(e.code, f"{ts_header}: {e.detail}") from None
            message = ts.strip().encode() + b":" + body  # type: ignore[union-attr]
        if not check_hex_hmac(settings.grafana_webhook_secret, message, [sig]):
            raise AuthError("bad_signature", f"{SIGNATURE_HEADER} does not match GRAFANA_WEBHOOK_SECRET")
        return f"hmac-sha256 ({SIGNATURE_HEADER}{', timestamped' if ts_header else ''})"

    def sign_request(self, body: bytes, settings: Settings, now: float | None = None) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "User-Agent": "Grafana"}
        if not (settings.grafana_webhook_secret or settings.grafana_webhook_token):
            raise LookupError("GRAFANA_WEBHOOK_SECRET or GRAFANA_WEBHOOK_TOKEN is not set")
        if settings.grafana_webhook_secret:
            secret = first_credential(settings.grafana_webhook_secret, "GRAFANA_WEBHOOK_SECRET")
            message = body
            if settings.grafana_timestamp_header:
                ts = str(int(time.time() if now is None else now))
                headers[settings.grafana_timestamp_header] = ts
                message = ts.encode() + b":" + body
            headers[SIGNATURE_HEADER] = sign_hex_hmac(secret, message)
        if settings.grafana_webhook_token:
            headers["Authorization"] = bearer(first_credential(settings.grafana_webhook_token,
                                                               "GRAFANA_WEBHOOK_TOKEN"))
        return headers


source = GrafanaSource()
