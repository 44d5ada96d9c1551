"""The three records the hub keeps, one name each: an event, an action, an incident.

They are plain dicts at run time (JSON in and out of Redis); these TypedDicts name their
fields in one place so a signature says which record it takes. Every field is optional
(`total=False`): a record grows as the event moves on, and older records lack newer fields.

- `EventRecord`: the hash ``hub:ev:{id}`` as `Store.get` decodes it (written by the ingress
  script, then by the worker). In code it is `rec` (or `record` when no other record is near).
- `ActionRecord`: one value of ``hub:ev:{id}:actions`` (JSON), written by the ActionRunner and
  reset by a replay. In code it is `action` or `record`, never `rec`.
- `IncidentRecord`: the hash ``hub:incident:{key}`` (`hub.storage.incidents.advance` builds it);
  connectors record their own result fields on it too (`Recordable` in `hub.rules.model`).
"""

from __future__ import annotations

from typing import Any, TypedDict


class EventRecord(TypedDict, total=False):
    """One inbound delivery and what became of it."""

    id: str
    source: str
    #: accepted → processing → done | partially_failed | dead
    state: str
    received_at: int
    updated_at: int
    delivery_id: str
    content_type: str
    headers: dict[str, str]
    #: how it was authenticated (the scheme's name)
    verified: str
    size: int
    #: the raw body as received (bytes, never decoded)
    body: bytes
    #: job starts counted against HUB_MAX_EVENT_RUNS
    runs: int
    #: the normalised events, and what a listing row shows of them
    events: list[dict[str, Any]]
    kinds: str
    title: str
    severity: str
    services: str
    error: str
    last_error: str
    #: why nothing was done (no workflow matched, …)
    reason: str
    replays: str
    chunks: str
    chunk_size: str
    truncated_alerts: str


class Attempt(TypedDict, total=False):
    """One call to the outside system, as an action record keeps it."""

    at: int
    status: int | None
    outcome: str
    error: str | None
    duration_ms: float
    response: str | None
    ambiguous: bool


class ActionRecord(TypedDict, total=False):
    """One planned action of an event: its attempts, state and result."""

    id: str
    name: str
    connector: str
    action: str
    workflow: str
    #: pending → retrying → succeeded | skipped | dead
    state: str
    idempotency_key: str
    params: dict[str, Any]
    attempts: list[Attempt]
    result: dict[str, Any]
    next_at: int | None
    error: str | None
    created_at: int
    last_response: str
    waiting: str
    not_configured: bool
    round_first: int
    round_started_at: int
    #: set by a replay: attempts and the deadline count from here; `history` says how earlier rounds ended
    replayed_at: int
    history: list[dict[str, Any]]


class IncidentRecord(TypedDict, total=False):
    """What the hub knows of one incident (or alert episode) across events."""

    key: str
    #: "alert" or "incident"
    kind: str
    source: str
    episode: int
    declared_at: int
    updated_at: int
    acknowledged_at: int | None
    acknowledged_by: str | None
    resolved_at: int | None
    resolution: str | None
    escalated_at: int | None
    escalation_level: int
    status: str | None
    status_category: str | None
    severity: str | None
    severity_history: list[list[Any]]
    title: str
    services: list[str]
    links: list[dict[str, Any]]
    deploys: list[dict[str, Any]]
    #: the alert's notification group (reports count one group's alerts as one incident)
    group: str | None
    #: `flapping:` in hub.yaml (`hub.storage.flapping`): when firings opened an episode, the
    #: flapping mark ({since, count}), a held resolve (at, until, by which event), its release
    flap_times: list[int]
    flapping: dict[str, int] | None
    resolve_held_at: int | None
    resolve_held_until: int | None
    resolve_held_by: str | None
    resolution_released_by: str | None
