"""A storm of alerts joining one incident (`grouping: {storm_threshold, summary_interval}`, issue 12).

Pure part (in `hub.storage.incidents.advance`): every firing alert that lands on an open
incident that is not its own (an alert of a sender's group, or one that joined it through
`grouping.by`) notes its time in ``join_times`` (the newest `threshold`+1 within a minute). When
more than `threshold` joined within a minute the incident *storms*: ``storm`` =
``{"since", "last"}`` (``last``: the newest join). It storms while joins keep coming within
`summary_interval` of the last one; a fresh episode starts without.

While it storms, an alert event that changes nothing but the alerts on the incident plans no
``per: event`` step (`quiet`): in the built-in rules that is the chat living message, edited
once per alert otherwise. What joined is told once per `summary_interval` instead
(`hub.worker.storm`).

Redis part, in the event's first commit (`commit_into`, once per event, the incident's lock held):

=====================================  ======  ==========================================
``hub:incident:{k}:storm-alerts``      zset    alert fingerprint → when it first came (ms)
``hub:incident:{k}:storm-labels``      hash    alert fingerprint → its labels (JSON)
``hub:storm:due``                      zset    incident key → when its next summary is due
=====================================  ======  ==========================================
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hub.core.events import Kind, NormalisedEvent
from hub.storage import keys as layout
from hub.storage.batch import Batch

#: "within a minute": the span over which joins are counted.
SPAN_MS = 60_000
#: Labels kept per alert for the summary (the rest are not counted).
MAX_LABELS = 20


@dataclass(frozen=True)
class StormPolicy:
    threshold: int
    interval_ms: int


def note(state: dict[str, Any], policy: StormPolicy | None, event: NormalisedEvent, joined: bool,
         at_ms: int) -> None:
    """A firing alert `joined` the (already open) incident: count it; storm past the threshold."""
    if policy is None or not joined or event.kind != Kind.ALERT_FIRING or state.get("resolved_at"):
        return
    times = [t for t in state.get("join_times") or [] if int(t) > at_ms - SPAN_MS]
    times.append(at_ms)
    state["join_times"] = times[-(policy.threshold + 1):]
    storm = state.get("storm")
    if storm and at_ms - int(storm["last"]) <= policy.interval_ms:
        state["storm"] = {**storm, "last": max(at_ms, int(storm["last"]))}
    elif len(times) > policy.threshold:
        state["storm"] = {"since": at_ms, "last": at_ms}


def storming(state: dict[str, Any] | None, policy: StormPolicy | None, at_ms: int) -> bool:
    """Whether the incident storms at `at_ms` (a join within the interval)."""
    storm = (state or {}).get("storm")
    return bool(policy and storm and not state.get("resolved_at")  # type: ignore[union-attr]
                and at_ms - int(storm["last"]) <= policy.interval_ms)


def quiet(before: dict[str, Any] | None, after: dict[str, Any] | None, event: NormalisedEvent,
          policy: StormPolicy | None, at_ms: int) -> bool:
    """Whether this alert event's `per: event` steps are left out: the incident storms and the
    event changed nothing of it but its alerts (same episode, severity, acknowledgement, open,
    flapping; an alert's own status text, which each joining alert sets, does not count)."""
    if event.kind not in (Kind.ALERT_FIRING, Kind.ALERT_RESOLVED) or not before or not after:
        return False
    if not storming(after, policy, at_ms):
        return False
    return all(before.get(f) == after.get(f) for f in ("episode", "severity", "acknowledged_at", "resolved_at",
                                                       "flapping"))


def commit_into(p: Batch, key: str, event: NormalisedEvent, member: str, after: dict[str, Any],
                policy: StormPolicy | None, at_ms: int, retention_s: int) -> None:
    """In the event's first commit: a firing alert on the incident is kept with when it first
    came (a resend keeps its time), so a summary counts the alerts new since the storm began or
    the last summary; a storming incident's summary is due."""
    if event.kind != Kind.ALERT_FIRING or policy is None:
        return
    alerts, labels = layout.incident_storm_alerts(key), layout.incident_storm_labels(key)
    p.zadd(alerts, {member: at_ms}, nx=True)
    kept = dict(list(event.labels.items())[:MAX_LABELS])
    p.hset(labels, member, json.dumps(kept, sort_keys=True, separators=(",", ":")))
    p.expire(alerts, retention_s)
    p.expire(labels, retention_s)
    if storming(after, policy, at_ms):
        p.zadd(layout.STORM_DUE, {key: int(after["storm"]["since"]) + policy.interval_ms}, nx=True)
