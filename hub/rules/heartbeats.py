"""Heartbeats (`heartbeats:` in `hub.yaml`): a pinger that must check in every `interval`.

No ping for `interval + grace` is an event of kind `heartbeat.missed` from the hub's own
source `heartbeat`, routed through the workflows like an alert of the heartbeat's service
and severity; the next ping is `heartbeat.recovered`, which resolves it. The state and its
timing are in `hub.storage.heartbeats`; the pings arrive at `hub.ingress.heartbeats`; the
missed check runs in the worker (`hub.worker.heartbeats`).

`HeartbeatSource` turns the events the hub records for itself into normalised events, as
an inbound source's `normalise` would (it is not a webhook source: nothing outside can post
to it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hub.core.events import NormalisedEvent, Severity
from hub.core.ruletypes import SecretRef, Strict
from hub.core.settings import parse_duration

SOURCE = "heartbeat"
MISSED = "heartbeat.missed"
RECOVERED = "heartbeat.recovered"
MIN_INTERVAL_S = 10.0
MAX_INTERVAL_S = 48 * 3600.0
NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("not a duration (use e.g. 30s, 5m, 1h)")
    return parse_duration(value)


class Heartbeat(Strict):
    """One heartbeat."""

    interval: float = Field(description="how often the pinger checks in (10s to 48h)")
    grace: float = Field(0.0, description="extra time before a late ping counts as missed (at most 48h)")
    service: str = Field(description="the catalog service its incident is about (routing, team)")
    severity: Severity = Field(Severity.SEV2, description="the severity of its incident")
    token: SecretRef = Field(description="the ping token, as `env:NAME`; sent as Bearer or ?token=")
    alertname: str | None = Field(None, description="an alert whose `alertname` label is this counts as a ping "
                                                    "and never pages itself (a Watchdog)")

    @field_validator("interval", "grace", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> float:
        return _seconds(v)

    @field_validator("interval")
    @classmethod
    def _interval(cls, v: float) -> float:
        if not MIN_INTERVAL_S <= v <= MAX_INTERVAL_S:
            raise ValueError("interval must be between 10s and 48h")
        return v

    @field_validator("grace")
    @classmethod
    def _grace(cls, v: float) -> float:
        if not 0 <= v <= MAX_INTERVAL_S:
            raise ValueError("grace must be between 0 and 48h")
        return v

    @field_validator("severity", mode="before")
    @classmethod
    def _sev(cls, v: Any) -> Any:
        if isinstance(v, str):
            text = v.strip().upper().replace(" ", "")
            return "SEV" + text if text.isdigit() else text
        return v

    @property
    def window_ms(self) -> int:
        """Time from a ping until the heartbeat counts as missed."""
        return int((self.interval + self.grace) * 1000)


def check_names(value: Mapping[str, Heartbeat]) -> Mapping[str, Heartbeat]:
    bad = [n for n in value if not NAME.match(n)]
    if bad:
        raise ValueError(f"heartbeat names use lowercase letters, digits, . - _ (at most 63): {', '.join(bad)}")
    return value


class HeartbeatBody(BaseModel):
    """What the hub records for one of its own heartbeat events."""

    model_config = ConfigDict(extra="ignore")

    heartbeat: str
    kind: str
    at: int
    service: str
    severity: Severity
    interval: float
    grace: float
    last_ping: int | None = None


def event_body(name: str, hb: Heartbeat, kind: str, at: int, last_ping: int | None) -> bytes:
    return json.dumps({"heartbeat": name, "kind": kind, "at": at, "service": hb.service,
                       "severity": hb.severity.value, "interval": hb.interval, "grace": hb.grace,
                       "last_ping": last_ping}, separators=(",", ":")).encode()


def _iso(ms: int | None) -> str:
    return "never" if not ms else datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


class HeartbeatSource:
    """The hub's own `heartbeat` events, parsed and normalised (for the planner)."""

    name = SOURCE

    def parse(self, body: bytes, headers: Mapping[str, str], content_type: str) -> HeartbeatBody:
        return HeartbeatBody.model_validate_json(body)

    def normalise(self, payload: Any, headers: Mapping[str, str],
                  options: Mapping[str, Any] | None = None) -> list[NormalisedEvent]:
        p: HeartbeatBody = payload
        if p.kind == MISSED:
            title = f"Heartbeat {p.heartbeat} missed"
            summary = (f"No ping for {p.interval:g}s + {p.grace:g}s grace; last ping {_iso(p.last_ping)}.")
        else:
            title = f"Heartbeat {p.heartbeat} recovered"
            summary = f"Pinged again at {_iso(p.at)}."
        return [NormalisedEvent(kind=p.kind, source=SOURCE, fingerprint=f"heartbeat:{p.heartbeat}",
                                severity=p.severity, services=[p.service], title=title, summary=summary,
                                occurred_at=datetime.fromtimestamp(p.at / 1000, UTC),
                                status="firing" if p.kind == MISSED else "resolved",
                                labels={"heartbeat": p.heartbeat},
                                attributes={"heartbeat": p.heartbeat, "last_ping": p.last_ping})]

    def no_events_reason(self, payload: Any, headers: Mapping[str, str],
                         options: Mapping[str, Any] | None = None) -> str:
        return "a heartbeat event the hub did not recognise"
