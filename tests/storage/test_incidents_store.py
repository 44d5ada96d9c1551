"""The incidents store on its own: the record's life (`advance`), reads and writes, aliases,
claims, locks, timers and deploys. Against the real Redis of the root conftest."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from hub.core.events import Kind, NormalisedEvent, Severity
from hub.storage import keys
from hub.storage.batch import Batch
from hub.storage.incidents import IncidentStore, _encode, advance, duration_ms, incident_key
from hub.storage.records import IncidentRecord

T0 = 1_700_000_000_000


def alert(kind: str = Kind.ALERT_FIRING, severity: str | None = "SEV2", **kw: Any) -> NormalisedEvent:
    return NormalisedEvent(kind=kind, source="grafana", fingerprint="grafana:abc",
                           severity=Severity(severity) if severity else None, title="HighCPU", services=["web"], **kw)


def test_an_alert_opens_a_record_and_its_resolve_closes_it() -> None:
    opened = advance(None, alert(), "grafana:abc", T0)
    assert (opened["key"], opened["kind"], opened["episode"], opened["declared_at"]) == ("grafana:abc", "alert", 1, T0)
    assert opened["severity"] == "SEV2" and opened["severity_history"] == [[T0, "SEV2"]]
    assert opened["resolved_at"] is None and (duration_ms(opened) or 0) > 0  # open: measured until now
    worse = advance(opened, alert(severity="SEV1"), "grafana:abc", T0 + 1000)
    assert worse["severity"] == "SEV1" and len(worse["severity_history"]) == 2 and worse["episode"] == 1
    resolved = advance(worse, alert(Kind.ALERT_RESOLVED, severity=None), "grafana:abc", T0 + 60_000)
    assert resolved["resolved_at"] == T0 + 60_000 and resolved["resolution"] == "resolved"
    assert duration_ms(resolved) == 60_000
    assert opened["resolved_at"] is None  # advance is pure: the earlier record is unchanged


def test_firing_again_after_a_resolve_is_a_new_episode() -> None:
    resolved = advance(advance(None, alert(), "grafana:abc", T0), alert(Kind.ALERT_RESOLVED, severity=None),
                       "grafana:abc", T0 + 1)
    again = advance(resolved, alert(), "grafana:abc", T0 + 2)
    assert again["episode"] == 2 and again["resolved_at"] is None and again["declared_at"] == T0 + 2


def test_a_firing_received_before_the_resolution_does_not_reopen_it() -> None:
    """Processed late (concurrent jobs of one storm, a held alert, a replay): a firing that the
    hub received before the event that resolved the incident is stale, not a new episode."""
    opened = advance(None, alert(), "grafana:abc", T0)
    resolved = advance(opened, alert(Kind.ALERT_RESOLVED, severity=None), "grafana:abc", T0 + 2000)
    late = advance(resolved, alert(), "grafana:abc", T0 + 1000)
    assert late["episode"] == 1 and late["resolved_at"] == T0 + 2000
    first_seen_resolved = advance(None, alert(Kind.ALERT_RESOLVED, severity=None), "grafana:abc", T0 + 2000)
    assert advance(first_seen_resolved, alert(), "grafana:abc", T0 + 1000)["resolved_at"] == T0 + 2000


def test_a_recovery_received_before_a_later_firing_does_not_resolve_it() -> None:
    """Fired, recovered, fired again, processed as fired, fired again, recovered: the alert is
    firing (its latest event), so the stale recovery leaves the incident open."""
    opened = advance(None, alert(), "grafana:abc", T0)
    again = advance(opened, alert(), "grafana:abc", T0 + 3000)
    stale = advance(again, alert(Kind.ALERT_RESOLVED, severity=None), "grafana:abc", T0 + 2000)
    assert stale["resolved_at"] is None and stale["episode"] == 1
    later = advance(stale, alert(Kind.ALERT_RESOLVED, severity=None), "grafana:abc", T0 + 4000)
    assert later["resolved_at"] == T0 + 4000


def test_a_joined_alert_keeps_the_state_of_its_latest_received_event() -> None:
    """A member's recovery processed before its own (earlier received) firing stays recovered,
    so the incident it joined still resolves when the others do."""
    from hub.storage.alert_groups import track

    state: dict[str, Any] = {"members": {"own": "resolved"}, "source": "grafana"}
    fired, recovered = alert(), alert(Kind.ALERT_RESOLVED, severity=None)
    assert track(state, "joined", "own", recovered, True, False, T0 + 2000) is True
    assert track(state, "joined", "own", fired, False, False, T0 + 1000) is True  # stale: ignored
    assert state["members"] == {"own": "resolved", "joined": "resolved"}
    assert track(state, "joined", "own", fired, False, False, T0 + 3000) is False  # a later firing counts
    assert state["members"]["joined"] == "firing" and state["members_at"]["joined"] == T0 + 3000


def test_a_page_event_never_creates_an_incident() -> None:
    page = NormalisedEvent(kind=Kind.PAGE_ACKNOWLEDGED, source="pagerduty", fingerprint="grafana:abc")
    assert advance(None, page, "grafana:abc", T0) == {}
    acked = advance(advance(None, alert(), "grafana:abc", T0), page, "grafana:abc", T0 + 5)
    assert acked["acknowledged_at"] == T0 + 5 and acked["acknowledged_by"] == "pagerduty"
    assert incident_key(page) == "grafana:abc"


async def test_save_then_get_reads_the_same_record_and_indexes_it(redis: Any) -> None:
    incidents = IncidentStore(redis, 3600)
    record: IncidentRecord = advance(None, alert(), "grafana:abc", T0)
    await incidents.save("grafana:abc", record, [{"type": "declared"}])
    assert await incidents.get("grafana:abc") == record
    assert await incidents.get_many(["grafana:abc", "nope", "grafana:abc"]) == {"grafana:abc": record, "nope": None}
    (entry,) = await incidents.timeline("grafana:abc")
    assert entry["type"] == "declared"
    assert 0 < await redis.ttl(keys.incident("grafana:abc")) <= 3600


async def test_update_sets_fields_only_on_a_known_incident(redis: Any) -> None:
    incidents = IncidentStore(redis, 3600)
    await incidents.update("unknown", title="x")
    assert await incidents.get("unknown") is None
    await incidents.save("k", {"key": "k", "declared_at": T0, "title": "a"})
    await incidents.update("k", title="b")
    got = await incidents.get("k")
    assert got is not None and got["title"] == "b"


async def test_acknowledge_happens_once_and_says_who(redis: Any) -> None:
    incidents = IncidentStore(redis, 3600)
    assert await incidents.acknowledge("unknown", by="ann") is False
    await incidents.save("k", advance(None, alert(), "k", T0))
    assert await incidents.acknowledge("k", by="ann") is True
    assert await incidents.acknowledge("k", by="bob") is False
    got = await incidents.get("k")
    assert got is not None and got["acknowledged_by"] == "ann"
    assert [e["type"] for e in await incidents.timeline("k")] == ["acknowledged"]


async def test_resolve_follows_an_alias_and_knows_keys_themselves(redis: Any) -> None:
    incidents = IncidentStore(redis, 3600)
    await incidents.save("datadog:1:web", {"key": "datadog:1:web", "declared_at": T0})
    batch = Batch()
    incidents.alias_into(batch, "incidentio:01HX", "datadog:1:web")
    incidents.alias_into(batch, "datadog:1:web", "datadog:1:web")  # an alias to itself is not written
    await batch.execute(redis)
    assert await incidents.resolve("incidentio:01HX") == "datadog:1:web"
    assert await incidents.resolve("datadog:1:web") == "datadog:1:web"
    assert await incidents.resolve("unknown") is None
    assert not await redis.exists(keys.incident_alias("datadog:1:web"))


async def test_the_first_claim_of_an_identity_owns_it_until_given_back(redis: Any) -> None:
    incidents = IncidentStore(redis, 3600)
    for event_id in ("ev_a", "ev_b"):
        batch = Batch()
        incidents.claim_into(batch, "subject", "page", event_id)
        await batch.execute(redis)
    assert await incidents.claims(["subject", "other"]) == {"subject": {"page": "ev_a"}, "other": {}}
    batch = Batch()
    incidents.unclaim_into(batch, "subject", "page")
    await batch.execute(redis)
    assert await incidents.claims(["subject"]) == {"subject": {}}


async def test_locks_are_all_or_none_and_released_by_their_holder_only(redis: Any) -> None:
    incidents = IncidentStore(redis, 3600)
    token = await incidents.lock(["a", "b"], lease_s=30)
    assert token is not None
    assert await incidents.lock(["b", "c"], lease_s=30) is None
    assert not await redis.exists(keys.incident_lock("c"))  # nothing half-taken
    await incidents.unlock(["a", "b"], "not-the-token")
    assert await incidents.lock(["a"], lease_s=30) is None
    await incidents.unlock(["a", "b"], token)
    assert await incidents.lock(["a", "b", "c"], lease_s=30) is not None


async def test_timers_are_added_listed_and_removed(redis: Any) -> None:
    incidents = IncidentStore(redis, 3600)
    await incidents.add_timer("k", "t1", {"due_at": T0, "step": "remind"})
    assert await incidents.timers("k") == {"t1": {"due_at": T0, "step": "remind"}}
    assert await incidents.remove_timer("k", "t1") is True
    assert await incidents.remove_timer("k", "t1") is False
    assert await incidents.timers("k") == {}


async def test_deploys_are_found_by_service_in_any_environment_newest_first(redis: Any) -> None:
    incidents = IncidentStore(redis, 3600)
    older = {"service": "Web", "environment": "production", "sha": "a1", "at": T0}
    newer = {"service": "web", "environment": "staging", "sha": "b2", "at": T0 + 10}
    for deploy in (older, newer, older):  # the same deploy twice is one entry
        await incidents.record_deploy(deploy, keep=10)
    assert [d["sha"] for d in await incidents.deploys(["WEB"], T0)] == ["b2", "a1"]
    assert [d["sha"] for d in await incidents.deploys(["web"], T0 + 5)] == ["b2"]
    assert await incidents.deploys([], T0) == [] and await incidents.deploys(["api"], T0) == []


@pytest.mark.parametrize("value", ["text", "naïve ☃ \"q\" \\ \n", "", None, True, False, 0, -7, 2**70, 1.5,
                                   float("nan"), ["a", 1], {"k": None}, ("t",)])
def test_an_incident_field_reads_back_as_json_dumps_wrote_it_strictly(value: object) -> None:
    """Text, null, booleans and ints byte for byte; anything else the same value, with NaN as null."""
    if value is None or type(value) in (str, bool, int):
        assert _encode(value) == json.dumps(value, default=str)
    expected = None if isinstance(value, float) and math.isnan(value) else json.loads(json.dumps(value, default=str))
    assert json.loads(_encode(value), parse_constant=_refuse) == expected


def _refuse(name: str) -> object:
    raise ValueError(f"not JSON: {name}")
