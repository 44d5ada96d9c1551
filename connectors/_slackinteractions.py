"""Slack's interactivity requests: the living message's buttons (Acknowledge, Resolve, Escalate now).

Slack posts `application/x-www-form-urlencoded` with one `payload` field (JSON), signed with the
app's signing secret: `X-Slack-Signature: v0=<hex HMAC-SHA256 of "v0:{timestamp}:{raw body}">`
and `X-Slack-Request-Timestamp` (refused beyond 5 minutes either way: a replayed request).
The button's `action_id` names the action (`incident_hub_<action>`), its `value` the incident;
neither is trusted beyond that: the ingress checks the incident in Redis and claims the click
once (`hub.ingress.interactions`). A click is identified by the incident, the action, the
message and Slack's `action_ts` (the same on Slack's retries, `X-Slack-Retry-Num`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qs

from pydantic import BaseModel, Field, ValidationError

from connectors.base import BadPayload, InteractionSource, loads_json, summarise_validation
from hub.core.interactions import ACTIONS, Interaction
from hub.ingress.verify import AuthError, check_hex_hmac

#: Slack's advice: refuse requests whose timestamp is more than five minutes off.
MAX_AGE_S = 300
ACTION_PREFIX = "incident_hub_"
FORM = "application/x-www-form-urlencoded"


class _User(BaseModel):
    id: str = Field(min_length=1, max_length=64)


class _Action(BaseModel):
    action_id: str = Field(max_length=255)
    value: str = Field("", max_length=2000)
    action_ts: str | None = Field(None, max_length=64)


class _Container(BaseModel):
    message_ts: str | None = Field(None, max_length=64)


class _Channel(BaseModel):
    id: str = Field(max_length=64)


class BlockActions(BaseModel):
    """The fields of Slack's `block_actions` payload the hub reads."""

    type: Literal["block_actions"]
    user: _User
    actions: list[_Action] = Field(min_length=1, max_length=25)
    container: _Container | None = None
    channel: _Channel | None = None
    trigger_id: str | None = Field(None, max_length=255)


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """What Slack sends as `X-Slack-Signature` for `body` at `timestamp` (for tests and `send`)."""
    return "v0=" + hmac.new(secret.encode(), b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256).hexdigest()


class SlackInteractions(InteractionSource):
    name = "slack"
    path = "/slack/interactions"
    credential_settings: ClassVar[tuple[str, ...]] = ("slack_signing_secret",)

    def verify(self, body: bytes, headers: Mapping[str, str], settings: Any, now: float | None = None) -> None:
        stamp, sig = headers.get("X-Slack-Request-Timestamp", ""), headers.get("X-Slack-Signature", "")
        if not stamp or not sig:
            raise AuthError("missing_signature", "X-Slack-Signature and X-Slack-Request-Timestamp are required")
        if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12):
            raise AuthError("bad_timestamp", "X-Slack-Request-Timestamp is not a Unix time in seconds")
        if abs((time.time() if now is None else now) - int(stamp)) > MAX_AGE_S:
            raise AuthError("stale_timestamp", f"X-Slack-Request-Timestamp is more than {MAX_AGE_S}s off")
        version, _, digest = sig.partition("=")
        message = b"v0:" + stamp.encode() + b":" + body
        if version != "v0" or not check_hex_hmac([settings.slack_signing_secret], message, [digest]):
            raise AuthError("bad_signature", "X-Slack-Signature does not match the body")

    def parse(self, body: bytes, headers: Mapping[str, str], content_type: str) -> Interaction:
        if content_type != FORM:
            raise BadPayload("unsupported_media_type", f"Slack interactions are {FORM}, not {content_type!r}")
        try:
            form = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True, max_num_fields=20)
            (raw,) = form.get("payload") or [None]
            if raw is None:
                raise ValueError("no payload field")
            data = loads_json(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise BadPayload("malformed_payload", f"not a Slack interaction (a form with a JSON payload): {e}") \
                from None
        try:
            p = BlockActions.model_validate(data)
        except ValidationError as e:
            raise BadPayload("invalid_payload", f"not a Slack block_actions payload: {summarise_validation(e)}") \
                from None
        ours = [a for a in p.actions
                if a.action_id.startswith(ACTION_PREFIX) and a.action_id.removeprefix(ACTION_PREFIX) in ACTIONS]
        if not ours or not ours[0].value:
            raise BadPayload("unknown_action", "no incident-hub button (incident_hub_acknowledge, _resolve, "
                                               "_escalate) with an incident in its value")
        act = ours[0]
        click = act.action_ts or p.trigger_id
        if not click:
            raise BadPayload("invalid_payload", "the action has neither action_ts nor trigger_id")
        message = (p.container.message_ts if p.container else None) or ""
        action = act.action_id.removeprefix(ACTION_PREFIX)
        place = [act.value, action, p.channel.id if p.channel else "", message]
        return Interaction(action=action, incident=act.value, by=f"slack:{p.user.id}",  # type: ignore[arg-type]
                           identity=json.dumps([*place, click]), window=json.dumps(place))
