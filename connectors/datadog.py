"""Datadog: the Webhooks integration, fed by monitor notifications (`@webhook-<name>`).

Auth: Datadog does not sign. Set the token from `DATADOG_WEBHOOK_TOKEN` as a custom header
`{"Authorization": "Bearer <token>"}` or as the webhook's Basic-auth password.

Body: the user's payload template with `$VARIABLES` filled in, so every value is text and
only the template's fields are present. JSON, or form fields when "Encode as form" is on.
Only `id` ($ID, in the default template) is required; everything else degrades:
- transition: `alert_transition`, else the `[Triggered]`/`[Recovered]` prefix of the title,
  else `alert_type` (error/warning → firing, success → resolved), else kind `other`;
- priority: `alert_priority`, else a `[P1]` in the title;
- fingerprint: `datadog:<alert_id>[:<sorted scope>]` (the same for a monitor group's trigger
  and recovery), else `datadog:cycle:<alert_cycle_key>`, else `datadog:aggreg:<aggreg_key>`,
  else a hash of the org, the scope and the title without its transition prefix.

Events: Triggered, Re-Triggered, Warn, Re-Warn, No Data, Re-No Data, Renotify → `alert.firing`;
Recovered → `alert.resolved`. Delivery id: `<id>:<transition>`.

Catalog options (all optional): `severity_map` (priority → SEV1..SEV4, e.g. `{"P3": "SEV2"}`;
defaults P1→SEV1, P2→SEV2, P3→SEV3, P4/P5→SEV4), `default_severity` (no or unknown priority,
default SEV4), `service_tag` (tag key naming services, default `service`),
`environment_tag` (default `["env", "environment"]`).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from pydantic import BaseModel, field_validator

from connectors import _options
from connectors._lenient import Lenient, Opt, Text, bounded, clip, parse_time, short_hash
from connectors._severity import PRIORITY_MAP, SEV4, map_severity
from connectors.base import BadPayload, InboundSource, Setting, is_json_content_type, loads_json
from hub.core.events import Kind, Link, NormalisedEvent
from hub.ingress.verify import bearer, first_credential, require_token

if TYPE_CHECKING:
    from hub.core.settings import Settings

FORM = "application/x-www-form-urlencoded"
DEFAULT_SERVICE_TAG = "service"
DEFAULT_ENVIRONMENT_TAGS = ("env", "environment")
OPTIONS: dict[str, _options.OptionKind] = {**_options.COMMON_OPTIONS, "service_tag": "text",
                                           "environment_tag": "text_list"}

FIRING = {"triggered", "re-triggered", "warn", "re-warn", "no data", "re-no data", "renotify"}
RESOLVED = {"recovered"}
_ALERT_TYPE_KIND = {"error": Kind.ALERT_FIRING, "warning": Kind.ALERT_FIRING, "success": Kind.ALERT_RESOLVED}

# "[Triggered on {host:web-01}] [P1] High CPU" → transition, scope, priority, rest.
_TITLE = re.compile(
    r"^\s*\[(?P<transition>Re-Triggered|Triggered|Recovered|Re-Warn|Warn|Re-No Data|No Data|Renotify|Null)"
    r"(?: on \{(?P<scope>[^}]*)\})?\]\s*(?:\[(?P<priority>P[1-5])\]\s*)?(?P<rest>.*)$",
    re.IGNORECASE | re.DOTALL)
_MD_LINK = re.compile(r"\[\[?([^\[\]]{1,80})\]?\]\((https?://[^)\s]+)\)")
_MENTION = re.compile(r"(?<!\S)@[\w.+-]+(?:@[\w.-]+)?")


class Org(Lenient):
    id: Text = None
    name: Text = None


class DatadogPayload(Lenient):
    id: str
    title: Text = None
    body: Text = None
    event_type: Text = None
    date: Text = None
    last_updated: Text = None
    org: Opt[Org] = None
    alert_id: Text = None
    alert_cycle_key: Text = None
    aggreg_key: Text = None
    alert_transition: Text = None
    alert_priority: Text = None
    alert_scope: Text = None
    alert_title: Text = None
    alert_status: Text = None
    alert_type: Text = None
    alert_metric: Text = None
    alert_query: Text = None
    hostname: Text = None
    link: Text = None
    priority: Text = None
    tags: Text = None

    @field_validator("id", mode="before")
    @classmethod
    def _id_present(cls, v: Any) -> Any:
        if isinstance(v, str) and not v.strip():
            raise ValueError("is empty: the payload template must include $ID")
        return v

    @field_validator("org", mode="before")
    @classmethod
    def _org(cls, v: Any) -> Any:
        if isinstance(v, str):  # an unquoted or hand-written template: keep the text as the name
            return {"name": v}
        return v

    @field_validator("tags", mode="before")
    @classmethod
    def _tags(cls, v: Any) -> Any:
        if isinstance(v, list):
            return ",".join(str(t) for t in v if t is not None)
        return v


def _kind(transition: str, alert_type: str | None) -> Kind:
    t = transition.lower()
    if t in FIRING:
        return Kind.ALERT_FIRING
    if t in RESOLVED:
        return Kind.ALERT_RESOLVED
    if not t:  # a template without $ALERT_TRANSITION and a title without the usual prefix
        return _ALERT_TYPE_KIND.get((alert_type or "").strip().lower(), Kind.OTHER)
    return Kind.OTHER


def _split_tags(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def _tag_values(tags: list[str], key: str) -> list[str]:
    prefix = key + ":"
    out = []
    for t in tags:
        if t.startswith(prefix) and (value := t[len(prefix):].strip()) and value not in out:
            out.append(value)
    return out


def _clean_body(body: str | None) -> tuple[str, list[Link]]:
    """Datadog's markdown message without its `%%%` fences, @-mentions and footer; its links."""
    if not body:
        return "", []
    text = body.replace("%%%", "")
    links = []
    for label, url in _MD_LINK.findall(text):
        if not any(link.href == url for link in links):
            links.append(Link(href=url, text=label.strip()))
    main = text.split("\n- - -", 1)[0]
    main = _MENTION.sub("", main)
    return clip(re.sub(r"\n{3,}", "\n\n", main).strip()), links[:5]


class DatadogSource(InboundSource):
    name = "datadog"
    recorded_headers = ("User-Agent",)
    credential_settings = ("datadog_webhook_token",)
    variables = (Setting("DATADOG_WEBHOOK_TOKEN", secret=True, rotating=True),)
    model = DatadogPayload

    def verify(self, body: bytes, headers: Mapping[str, str], settings: Settings) -> str:
        require_token(settings.datadog_webhook_token, headers, "DATADOG_WEBHOOK_TOKEN")
        return "token"

    accepted_content_types = "application/json or application/x-www-form-urlencoded (Encode as form)"

    def accepts_content_type(self, content_type: str) -> bool:
        return content_type == FORM or is_json_content_type(content_type)

    def decode(self, body: bytes, content_type: str) -> Any:
        if content_type != FORM or body.lstrip().startswith(b"{"):
            return super().decode(body, content_type)
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=1000)
        except (UnicodeDecodeError, ValueError) as e:
            raise BadPayload("malformed_form", f"body is not valid form data: {e}") from None
        return _form_to_dict(pairs)

    def delivery_id(self, payload: BaseModel, headers: Mapping[str, str], body: bytes) -> str:
        assert isinstance(payload, DatadogPayload)
        transition = self._title_parts(payload)[0]
        did = payload.id.strip()
        return (f"{did}:{transition}" if transition else did)[:200]

    def check_options(self, options: Any) -> list[str]:
        return _options.check_options(options, OPTIONS)

    @staticmethod
    def _title_parts(p: DatadogPayload) -> tuple[str, str, str, str]:
        """(transition, scope, priority, title without prefixes): each from its own field, else the titles."""
        transition, scope = (p.alert_transition or "").strip(), (p.alert_scope or "").strip()
        priority = (p.alert_priority or "").strip()
        shown = (p.alert_title or p.title or "").strip()
        rest = shown
        for candidate in (p.alert_title, p.title):
            m = _TITLE.match(candidate or "")
            if m:
                transition = transition or m["transition"]
                scope = scope or (m["scope"] or "").strip()
                priority = priority or (m["priority"] or "")
                if candidate.strip() == shown:  # type: ignore[union-attr]
                    rest = m["rest"].strip()
        return transition, scope, priority.upper(), rest

    def normalise(self, payload: BaseModel, headers: Mapping[str, str],
                  options: Mapping[str, Any] | None = None) -> list[NormalisedEvent]:
        assert isinstance(payload, DatadogPayload)
        p, opts = payload, options or {}
        transition, scope, priority, title = self._title_parts(p)
        kind = _kind(transition, p.alert_type)
        tags = _split_tags(p.tags)
        scope_tags = [] if scope in ("", "*") else sorted(_split_tags(scope))
        service_tag = _options.text(opts, "service_tag", DEFAULT_SERVICE_TAG)
        services = _tag_values(tags, service_tag) or _tag_values(scope_tags, service_tag)
        environment = next((v for key in _options.text_list(opts, "environment_tag", DEFAULT_ENVIRONMENT_TAGS)
                            for v in _tag_values(tags + scope_tags, key)), None)
        labels: dict[str, str] = {}
        for tag in tags + scope_tags:
            key, sep, value = tag.partition(":")
            if sep and key and key not in labels:
                labels[key] = value
        summary, links = _clean_body(p.body)
        if p.link:
            links.insert(0, Link(href=p.link, text="Datadog event"))
        org = p.org or Org()
        return [NormalisedEvent(
            kind=kind, source=self.name, fingerprint=self._fingerprint(p, scope_tags, org, title),
            severity=map_severity(priority, opts, PRIORITY_MAP, SEV4), services=services,
            title=clip(title or f"Datadog monitor {p.alert_id or p.id}", 300),
            summary=summary or clip(p.alert_status), links=links,
            occurred_at=parse_time(p.date) or parse_time(p.last_updated), environment=environment,
            status=transition or None, labels=labels,
            attributes={
                "datadog_id": p.id, "monitor_id": p.alert_id, "transition": transition, "priority": priority or None,
                "alert_type": p.alert_type, "scope": ",".join(scope_tags), "alert_cycle_key": p.alert_cycle_key,
                "aggreg_key": p.aggreg_key, "event_type": p.event_type, "hostname": p.hostname,
                "metric": p.alert_metric, "query": p.alert_query, "org_id": org.id, "org_name": org.name,
                "tags": tags,
            },
        )]

    @staticmethod
    def _fingerprint(p: DatadogPayload, scope_tags: list[str], org: Org, title: str) -> str:
        if p.alert_id and p.alert_id.strip():
            scope = ",".join(scope_tags)
            return bounded(f"datadog:{p.alert_id.strip()}" + (f":{scope}" if scope else ""))
        if p.alert_cycle_key and p.alert_cycle_key.strip():
            return bounded(f"datadog:cycle:{p.alert_cycle_key.strip()}")
        if p.aggreg_key and p.aggreg_key.strip():
            return bounded(f"datadog:aggreg:{p.aggreg_key.strip()}")
        if title:
            return f"datadog:title:{short_hash(org.id or '', org.name or '', title, *scope_tags)}"
        return bounded(f"datadog:event:{p.id.strip()}")

    def freshen(self, data: Any) -> bool:
        if not isinstance(data, dict):
            return False
        data["id"] = str(secrets.randbelow(10**18))
        return True

    def sign_request(self, body: bytes, settings: Settings, now: float | None = None, *,
                     same_id: bool = False) -> dict[str, str]:
        token = first_credential(settings.datadog_webhook_token, "DATADOG_WEBHOOK_TOKEN")
        return {"Content-Type": "application/json", "Authorization": bearer(token)}


def _form_to_dict(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Form fields → the template's JSON shape: `org[id]=1` nests, a JSON object value is decoded."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        parent, sep, child = key.partition("[")
        if sep and child.endswith("]") and parent:
            nested = out.setdefault(parent, {})
            if isinstance(nested, dict):
                nested.setdefault(child[:-1], value)
            continue
        if key in out:
            continue  # first value wins, as with a repeated JSON key Datadog would not send
        decoded: Any = value
        if value.startswith("{"):
            try:
                decoded = loads_json(value)
            except ValueError:
                decoded = value
        out[key] = decoded
    return out


source = DatadogSource()
