"""Grafana unified alerting: the webhook contact point (body `version: "1"`).

Auth, any of (both when both are configured):
- HMAC: `X-Grafana-Alerting-Signature: <hex HMAC-SHA256(secret, body)>` with
  `GRAFANA_WEBHOOK_SECRET`. When `GRAFANA_TIMESTAMP_HEADER` names Grafana's timestamp header,
  the signature covers `ts + ":" + body` and a timestamp outside `HUB_TIMESTAMP_TOLERANCE` is
  refused, so a captured request cannot be replayed later.
- Token: `Authorization: Bearer <GRAFANA_WEBHOOK_TOKEN>` or the Basic-auth password.

Events: one per alert in the group (see `connectors._alertgroup`), `alert.firing` or
`alert.resolved` from the alert's own status; fingerprint = Grafana's alert fingerprint.
The notification group is one incident (`grouping: per_alert`: each alert is).

Legacy alerting (Grafana ≤ 10 dashboards' alert rules, removed in 11) posts a different
body: one rule with `ruleId`, `ruleName`, `state` (`alerting`, `no_data`, `ok`, `pending`,
`paused`), `message`, `ruleUrl`, `tags`, `evalMatches`. It is read as a group of one alert:
`alerting` and `no_data` fire, `ok` resolves, other states are recorded as `other`; the
fingerprint is `legacy-<orgId>-<ruleId>` (the same for a rule's alert and its recovery),
labels are the rule's tags plus `alertname`, and a delivery is identified by its body (the
body carries no timestamp: two notifications differ in their state or values).

Catalog options (all optional): `severity_map` (label value → SEV1..SEV4, e.g.
`{"critical": "SEV1"}`; defaults critical→SEV1, error/high/major→SEV2, warning/minor→SEV3,
else SEV4), `default_severity` (for a missing or unknown label, default SEV4),
`severity_label` (default `severity`), `service_labels` (first present wins, default
`["service", "job"]`), `environment_label` (default `["env", "environment"]`), `grouping` (`group`, the default, or
`per_alert`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from connectors._alertgroup import AlertGroup, AlertGroupSource
from connectors._lenient import short_hash
from connectors.base import Setting
from hub.ingress.verify import (
    AuthError,
    bearer,
    check_hex_hmac,
    check_timestamp,
    first_credential,
    require_token,
    sign_hex_hmac,
)

if TYPE_CHECKING:
    from hub.core.settings import Settings

SIGNATURE_HEADER = "X-Grafana-Alerting-Signature"
LEGACY_VERSION = "legacy"
_LEGACY_STATUS = {"alerting": "firing", "no_data": "firing", "ok": "resolved"}


def is_legacy(data: Any) -> bool:
    """A legacy-alerting body: a single rule, no `alerts` list."""
    return isinstance(data, dict) and "alerts" not in data and ("ruleId" in data or "ruleName" in data)


def from_legacy(data: dict[str, Any]) -> dict[str, Any]:
    """A legacy-alerting body as the group of one alert the unified format would send."""
    tags = data.get("tags") if isinstance(data.get("tags"), dict) else {}
    name = str(data.get("ruleName") or data.get("title") or "grafana alert")
    labels = {str(k): str(v) for k, v in tags.items() if v is not None}
    labels.setdefault("alertname", name)
    state = str(data.get("state") or "").strip().lower()
    status = _LEGACY_STATUS.get(state, state or "unknown")
    rule = data.get("ruleId")
    matches = data.get("evalMatches") if isinstance(data.get("evalMatches"), list) else []
    values = {str(m.get("metric")): m.get("value") for m in matches if isinstance(m, dict) and m.get("metric")}
    alert = {"status": status, "labels": labels,
             "annotations": {"description": str(data.get("message") or "")},
             "fingerprint": f"legacy-{data.get('orgId') or 0}-{rule}" if rule not in (None, "") else None,
             "generatorURL": data.get("ruleUrl"), "imageURL": data.get("imageUrl"), "values": values}
    return {"status": status, "alerts": [alert], "groupLabels": {"alertname": name}, "version": LEGACY_VERSION,
            "orgId": data.get("orgId"), "title": data.get("title"), "state": state,
            "message": data.get("message")}


class GrafanaSource(AlertGroupSource):
    name = "grafana"
    recorded_headers = ("User-Agent",)
    credential_settings = ("grafana_webhook_secret", "grafana_webhook_token")
    variables = (Setting("GRAFANA_WEBHOOK_SECRET", secret=True, rotating=True), Setting("GRAFANA_TIMESTAMP_HEADER"),
                 Setting("GRAFANA_WEBHOOK_TOKEN", secret=True, rotating=True))

    def verify(self, body: bytes, headers: Mapping[str, str], settings: Settings) -> str:
        how = []
        if settings.grafana_webhook_secret:
            how.append(self._verify_hmac(body, headers, settings))
        if settings.grafana_webhook_token:
            require_token(settings.grafana_webhook_token, headers, "GRAFANA_WEBHOOK_TOKEN")
            how.append("token")
        return " + ".join(how)

    def validate(self, data: Any, headers: Mapping[str, str]) -> BaseModel:
        return super().validate(from_legacy(data) if is_legacy(data) else data, headers)

    def delivery_id(self, payload: BaseModel, headers: Mapping[str, str], body: bytes) -> str:
        if isinstance(payload, AlertGroup) and payload.version == LEGACY_VERSION:
            return short_hash(LEGACY_VERSION, body.decode("utf-8", "surrogateescape"))
        return super().delivery_id(payload, headers, body)

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

    def sign_request(self, body: bytes, settings: Settings, now: float | None = None, *,
                     same_id: bool = False) -> dict[str, str]:
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
