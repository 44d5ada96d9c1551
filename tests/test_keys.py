"""The Redis key layout (`hub.storage.keys`): no two sender values, of any kind, name the same key.

The fuzz builds fingerprints, aliases, services, environments and delivery ids from the
characters and words that used to cut keys apart (``:``, ``*``, ``{``, ``}``, ``%``, ``#``
and the names of the sub-keys) and checks the layout is injective across every kind.
Also here: the one-shot upgrade of keys an older version wrote (`hub.storage.upgrade`).
"""

from __future__ import annotations

import hashlib
import json
import string
from typing import Any
from urllib.parse import quote

from hypothesis import given, settings
from hypothesis import strategies as st

from hub.storage import keys, upgrade
from hub.storage.batch import Batch
from hub.storage.incidents import IncidentStore

PIECES = [":", "*", "{", "}", "%", "#", "%3A", "lock", "timeline", "timers", "actions", "V", "checkout",
          "production", ":lock", ":timeline", ":timers", "é", " ", "\udcff", "x" * 70]
VALUES = st.lists(st.sampled_from(PIECES), max_size=6).map("".join) | st.text(max_size=30)


def all_keys(value: str, other: str) -> list[tuple[tuple[str, ...], str]]:
    """(what was asked for, key) for every key a sender value can reach (`other`: a second part)."""
    one = {
        "incident": keys.incident(value), "incident_timeline": keys.incident_timeline(value),
        "incident_timers": keys.incident_timers(value), "incident_lock": keys.incident_lock(value),
        "alias": keys.incident_alias(value), "claims": keys.claims(value),
        "deploy_envs": keys.deploy_environments(value), "dedup": keys.dedup("github", value),
        "rate_limit": keys.rate_limit("slack", value), "serial_lock": keys.serial_lock("jira", value),
    }
    two = {"deploys": keys.deploys(value, other), "ledger": keys.ledger("jira", other, "rec", value)}
    return [((kind, value), key) for kind, key in one.items()] + \
        [((kind, value, other), key) for kind, key in two.items()]


@settings(max_examples=400, deadline=None)
@given(a=VALUES, b=VALUES, a2=VALUES, b2=VALUES)
def test_distinct_inputs_never_share_a_key(a: str, b: str, a2: str, b2: str) -> None:
    seen: dict[str, tuple[str, ...]] = {}
    for asked, key in all_keys(a, a2) + all_keys(b, b2):
        assert seen.setdefault(key, asked) == asked, (key, seen[key], asked)


@settings(max_examples=300, deadline=None)
@given(value=VALUES)
def test_a_part_never_holds_a_separator_or_a_glob(value: str) -> None:
    enc = keys.part(value)
    assert not set(enc) & set(":*?[]{}\\ ")
    assert len(enc) <= keys.MAX_PART
    # every key of an incident is its record's name plus a fixed suffix: nothing else can end so
    record = keys.incident(value)
    for sub in (keys.incident_timeline(value), keys.incident_timers(value), keys.incident_lock(value)):
        assert sub.startswith(record + ":") and ":" not in sub[len(record) + 1:]


def test_plain_values_keep_their_names_and_others_are_encoded() -> None:
    assert keys.incident("a3f1c2d4e5b60789") == "hub:incident:a3f1c2d4e5b60789"
    assert keys.incident("V:lock") == "hub:incident:V%3Alock" != keys.incident_lock("V")
    assert keys.deploys("checkout", "production") == "hub:deploys:checkout:production"
    assert keys.deploy_environments("checkout:production") == "hub:deploys:checkout%3Aproduction"
    long = keys.part("x" * 500)
    assert long.startswith("#") and keys.part("#" + long[1:]) != long


def test_only_ids_of_the_hubs_own_format_are_ids() -> None:
    assert keys.is_event_id("ev_0123456789ab01234567")
    for bad in ("ev_0123456789ab01234567:timeline", "ev_0123456789ab01234567:actions", "ev_x", "",
                "ev_0123456789AB01234567", "rp_0123456789ab01234567"):
        assert not keys.is_event_id(bad)
    assert keys.is_replay_job_id("rp_0123456789ab01234567")
    assert not keys.is_replay_job_id("rp_0123456789ab01234567:items")


# -- the upgrade of an older layout -------------------------------------------------------------

def _record(key: str) -> dict[str, str]:
    return {"key": json.dumps(key), "declared_at": "1", "title": json.dumps(f"incident {key}")}


async def _seed_old_layout(redis: Any) -> None:
    """Keys as versions before `hub.storage.keys` wrote them: values pasted in raw."""
    await redis.hset("hub:incident:datadog:42:web", mapping=_record("datadog:42:web"))
    await redis.rpush("hub:incident:datadog:42:web:timeline", json.dumps({"type": "opened"}))
    await redis.hset("hub:incident:datadog:42:web:timers", "timer:x", json.dumps({"timer": "timer:x"}))
    await redis.set("hub:incident:datadog:42:web:lock", "tok", px=60_000)
    await redis.hset("hub:incident:a3f1c2d4e5b60789", mapping=_record("a3f1c2d4e5b60789"))
    await redis.hset("hub:incident:V:timeline", mapping=_record("V:timeline"))  # a collided record
    await redis.set("hub:incident-alias:incidentio:01HX", "datadog:42:web")
    await redis.hset("hub:claims:datadog:42:web", "datadog:42:web#1:page", "ev_0123456789ab01234567")
    deploy = {"service": "checkout:eu", "environment": "prod:blue", "sha": "abc", "at": 5}
    await redis.zadd("hub:deploys:checkout:eu:prod:blue", {json.dumps(deploy, sort_keys=True): 5})
    await redis.sadd("hub:deploys:checkout:eu", "prod:blue")


async def test_upgrade_renames_an_old_layout_once_and_the_incidents_read_back(redis: Any) -> None:
    await _seed_old_layout(redis)
    counts = await upgrade.ensure(redis)
    assert counts == {"incident keys": 4, "aliases": 1, "claims": 1, "deploy keys": 2}
    incidents = IncidentStore(redis, 3600)
    assert (await incidents.get("datadog:42:web"))["title"] == "incident datadog:42:web"
    assert await incidents.timeline("datadog:42:web") == [{"type": "opened"}]
    assert list(await incidents.timers("datadog:42:web")) == ["timer:x"]
    assert (await incidents.get("V:timeline"))["key"] == "V:timeline"
    assert await incidents.get("V") is None and await incidents.timeline("V") == []
    assert await incidents.get("a3f1c2d4e5b60789") is not None  # a plain key did not move
    assert await incidents.resolve("incidentio:01HX") == "datadog:42:web"
    assert await incidents.claims(["datadog:42:web"]) == {
        "datadog:42:web": {"datadog:42:web#1:page": "ev_0123456789ab01234567"}}
    assert [d["sha"] for d in await incidents.deploys(["checkout:eu"], 0)] == ["abc"]
    assert await redis.exists("hub:incident:datadog:42:web:lock")  # a lock is left to lapse
    assert await upgrade.ensure(redis) is None  # done once: later starts only read the marker
    assert not await redis.exists(upgrade.MOVED, upgrade.LOCK)


async def test_an_interrupted_upgrade_runs_again_without_moving_anything_twice(redis: Any) -> None:
    await _seed_old_layout(redis)
    await upgrade.upgrade_keys(redis)  # stopped before it recorded that it was done
    again = await upgrade.ensure(redis)
    assert again == {"incident keys": 0, "aliases": 0, "claims": 0, "deploy keys": 0}
    incidents = IncidentStore(redis, 3600)
    assert await incidents.resolve("incidentio:01HX") == "datadog:42:web"
    assert await incidents.claims(["datadog:42:web"]) == {
        "datadog:42:web": {"datadog:42:web#1:page": "ev_0123456789ab01234567"}}
    assert [d["sha"] for d in await incidents.deploys(["checkout:eu"], 0)] == ["abc"]


def test_the_upgrade_command_renames_and_then_says_it_is_up_to_date(redis_url: str, monkeypatch: Any,
                                                                    capsys: Any) -> None:
    import asyncio

    from hub.cli.main import main
    from hub.storage.connection import connect

    monkeypatch.setenv("REDIS_URL", redis_url)

    async def seed() -> None:
        client = connect(redis_url)
        try:
            await _seed_old_layout(client)
        finally:
            await client.aclose()

    asyncio.run(seed())
    assert main(["upgrade", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first == {"version": upgrade.VERSION,
                     "renamed": {"incident keys": 4, "aliases": 1, "claims": 1, "deploy keys": 2}}
    assert main(["upgrade"]) == 0
    assert "already up to date" in capsys.readouterr().out


# -- the way in: names resolved through aliases, locks by full key names --------------------------

async def test_enter_follows_an_alias_and_locks_the_incident_it_names(redis: Any) -> None:
    incidents = IncidentStore(redis, 3600)
    await incidents.save("datadog:1:web", {"key": "datadog:1:web", "declared_at": 1}, [])
    batch = Batch()
    incidents.alias_into(batch, "incidentio:01HX", "datadog:1:web")
    await batch.execute(redis)
    entered = await incidents.enter(keys.event("ev_0123456789ab01234567"),
                                    keys.event_actions("ev_0123456789ab01234567"),
                                    ["incidentio:01HX", "pd-dedup-unknown", "datadog:1:web"], [False, True, False],
                                    5.0, resolve=True)
    assert entered.locked
    assert entered.keys == ["datadog:1:web", None, "datadog:1:web"]  # an unknown page: no incident
    assert entered.lock_keys == ["datadog:1:web"]
    assert await redis.get(keys.incident_lock("datadog:1:web")) == entered.token.encode()
    assert entered.incidents["datadog:1:web"] == {"key": "datadog:1:web", "declared_at": 1}
    await incidents.unlock(entered.lock_keys, entered.token)
    assert not await redis.exists(keys.incident_lock("datadog:1:web"))


async def test_enter_reports_what_blocks_it(redis: Any) -> None:
    incidents = IncidentStore(redis, 3600)
    event, actions = keys.event("ev_0123456789ab01234567"), keys.event_actions("ev_0123456789ab01234567")
    await redis.hset(event, mapping={"state": "processing", "runs": 1})
    await redis.set(keys.incident_lock("a"), "other", px=5000)
    busy = await incidents.enter(event, actions, ["b", "a"], [False, False], 5.0, resolve=True)
    assert (busy.locked, busy.blocked) == (False, "busy")
    assert not await redis.exists(keys.incident_lock("b"))  # all or none
    assert await redis.hget(event, "runs") == b"0"  # waiting for a lease is not a run
    await redis.hset(keys.incident_lock("c"), "x", "1")
    await redis.hset(event, "runs", 1)
    foreign = await incidents.enter(event, actions, ["c"], [False], 5.0, resolve=True)
    assert (foreign.locked, foreign.blocked) == (False, "hash")
    assert await redis.hget(event, "runs") == b"1"


async def test_enter_reads_the_run_time_maintenance_windows_in_the_same_round_trip_when_asked(
        redis: Any) -> None:
    """A first run decides its maintenance holds right after entering: the windows come with
    the record instead of in a round trip of their own."""
    incidents = IncidentStore(redis, 3600)
    event, actions = keys.event("ev_0123456789ab01234567"), keys.event_actions("ev_0123456789ab01234567")
    await redis.hset(keys.MAINTENANCE_WINDOWS, mapping={"w1": '{"id":"w1"}', "w2": '{"id":"w2"}'})
    without = await incidents.enter(event, actions, ["k"], [False], 5.0, resolve=True)  # script loaded here
    assert without.locked and without.windows is None
    await incidents.unlock(without.lock_keys, without.token)
    reads_before = (await redis.info("stats"))["total_reads_processed"]
    entered = await incidents.enter(event, actions, ["k"], [False], 5.0, resolve=True, windows=True)
    assert (await redis.info("stats"))["total_reads_processed"] - reads_before == 2  # the script, and this INFO
    assert entered.locked and sorted(entered.windows or []) == [b'{"id":"w1"}', b'{"id":"w2"}']
    await incidents.unlock(entered.lock_keys, entered.token)
    await redis.delete(keys.MAINTENANCE_WINDOWS)
    none = await incidents.enter(event, actions, ["k"], [False], 5.0, resolve=True, windows=True)
    assert none.windows == []
    await incidents.unlock(none.lock_keys, none.token)


def test_a_deploy_is_dated_by_its_sender_never_later_than_received() -> None:
    from datetime import UTC, datetime

    from hub.core.events import Kind, NormalisedEvent
    from hub.worker.processor import deploy_time

    def ev(at: datetime | None) -> NormalisedEvent:
        return NormalisedEvent(kind=Kind.DEPLOY_SUCCEEDED, source="github", fingerprint="github:deploy:r:1",
                               occurred_at=at)

    received = 1_700_000_000_000
    assert deploy_time(ev(datetime(2023, 11, 14, 22, 0, tzinfo=UTC)), received) == 1_699_999_200_000
    assert deploy_time(ev(datetime(2023, 11, 14, 22, 0)), received) == 1_699_999_200_000  # naive: UTC
    assert deploy_time(ev(datetime(2030, 1, 1, tzinfo=UTC)), received) == received  # not from the future
    assert deploy_time(ev(None), received) == received


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(alphabet=string.ascii_letters + string.digits + "._-~@/+=", max_size=260),
                 st.text(max_size=260)))
def test_a_part_that_needs_no_encoding_is_kept_as_is_and_equals_its_encoding(value: str) -> None:
    """The fast path for plain values (`_PLAIN`) answers what percent-encoding would."""
    raw = value.encode("utf-8", "surrogatepass")
    encoded = quote(raw, safe=keys._SAFE)
    expected = "#" + hashlib.sha256(raw).hexdigest() if len(encoded) > keys.MAX_PART else encoded
    assert keys.part(value) == expected
