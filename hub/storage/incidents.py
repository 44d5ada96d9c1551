"""Per-incident state in Redis: what timers re-check, what later actions reference, what reports read.

An incident is keyed by the fingerprint of an incident tool's incident (`<source>:<id>`) or,
for an incident born from an alert, by the alert's fingerprint (a label hash, or
`<source>:<monitor>[:<scope>]`). A page's dedup key is the incident key, so a pager's ack
(`page.acknowledged`, fingerprint = the dedup key) finds its incident directly.

Keys (all expire HUB_RETENTION after the incident's last write). ``{k}`` is the incident key
(sender text) as `hub.storage.keys.part` encodes it: never a ``:``, so ``{k}:lock`` is no incident's
record, whatever a sender names its alert; likewise ``{alias}``, ``{subject}``, ``{service}``
and ``{env}``. Names are built by `hub.storage.keys` only.

===================================  ======  ===============================================
``hub:incident:{k}``                 hash    the record; every value is JSON (fields below)
``hub:incident:{k}:timeline``        list    JSON entries, oldest first: opened, acknowledged,
                                             resolved, timer scheduled/fired/cancelled, …
``hub:incident:{k}:timers``          hash    timer job id → JSON {workflow, step, due_ms, …}
``hub:incident:{k}:lock``            string  held while one worker advances the incident
``hub:incident:{k}:alerts``          hash    a sender group's alerts (`hub.storage.alert_groups`)
``hub:incidents``                    zset    incident key (raw) by declared_at ms (reports)
``hub:incident-alias:{alias}``       string  another name → incident key (escalation dedup
                                             keys, the incident tool's id of an alert-born incident)
``hub:claims:{subject}``             hash    action identity → id of the event that owns it
                                             (subject: incident key or event fingerprint)
``hub:deploys:{service}:{env}``      zset    JSON deploy → deploy time ms (last N kept; the
                                             time is the sender's, see `hub.worker.recording`)
``hub:deploys:{service}``            set     the environments seen for the service
===================================  ======  ===============================================

Fields of ``hub:incident:{key}`` (JSON values; times are epoch milliseconds as the hub saw
them, so MTTA = acknowledged_at - declared_at and MTTR = resolved_at - declared_at):
``key``, ``kind`` ("incident" | "alert"), ``source``, ``title``, ``severity`` ("SEV1".."SEV4"),
``status`` (the source's status name), ``status_category`` (an incident tool's: triage, live, …),
``services`` (list), ``episode`` (1, then +1 each time it fires or reopens after a resolve),
``declared_at``, ``acknowledged_at``, ``acknowledged_by`` (the source that saw the ack, or operator),
``resolved_at``, ``resolution``, ``escalated_at``, ``escalation_level``, ``updated_at``,
``page_dedup_key``, ``paged_by`` (the pager a fallback paged through, else null),
the fields the connectors' results fill (`Connector.recorded`: an outside incident's id, a
status-page incident's id, a list of ticket keys; see docs/connectors.md),
``deploys`` (list of {service, environment, sha, ref, author, url, state, at}),
``links`` (list of {href, text}), ``severity_history`` (list of [ms, severity]), ``group``
(an alert's notification group key, else null); with `flapping:` in hub.yaml ``flap_times``,
``flapping``, ``resolve_held_at``/``_until``/``_by`` and ``resolution_released_by``
(`hub.storage.flapping`).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from hub.core import registry
from hub.core.events import Kind, NormalisedEvent
from hub.core.strict_json import dumps
from hub.storage import alert_groups, flapping, storm
from hub.storage import keys as layout
from hub.storage.batch import Batch, Reply
from hub.storage.event_store import now_ms
from hub.storage.records import IncidentRecord

PREFIX = layout.INCIDENT_PREFIX
INDEX = "hub:incidents"

#: Alerts, and the hub's own heartbeat events (an alert that the pinger went silent).
ALERT_KINDS = frozenset({Kind.ALERT_FIRING, Kind.ALERT_RESOLVED, Kind.HEARTBEAT_MISSED, Kind.HEARTBEAT_RECOVERED})
INCIDENT_KINDS = frozenset({Kind.INCIDENT_DECLARED, Kind.INCIDENT_UPDATED, Kind.INCIDENT_STATUS_CHANGED,
                            Kind.INCIDENT_RESOLVED})
PAGE_KINDS = frozenset({Kind.PAGE_ACKNOWLEDGED, Kind.PAGE_RESOLVED})
DEPLOY_KINDS = frozenset({Kind.DEPLOY_SUCCEEDED, Kind.DEPLOY_FAILED})
#: Kinds that (re)open an incident that was resolved.
OPENING = frozenset({Kind.ALERT_FIRING, Kind.INCIDENT_DECLARED, Kind.INCIDENT_UPDATED,
                     Kind.INCIDENT_STATUS_CHANGED, Kind.HEARTBEAT_MISSED})
#: An alert (or a pinger's silence) that fires: what a flapping alert repeats.
FIRING = frozenset({Kind.ALERT_FIRING, Kind.HEARTBEAT_MISSED})
RESOLVING = frozenset({Kind.ALERT_RESOLVED, Kind.INCIDENT_RESOLVED, Kind.HEARTBEAT_RECOVERED})
_FIRING = frozenset({Kind.ALERT_FIRING, Kind.HEARTBEAT_MISSED})
CLOSED_CATEGORIES = frozenset({"closed", "resolved", "learning", "canceled", "cancelled", "declined", "merged"})


def incident_key(event: NormalisedEvent) -> str | None:
    """The incident an event belongs to, without looking anything up (page events: their dedup key)."""
    if event.kind in ALERT_KINDS:  # the sender's notification group, else the alert: the page's dedup key
        return alert_groups.group_of(event) or event.fingerprint
    if event.kind in INCIDENT_KINDS:
        return event.fingerprint
    if event.kind == Kind.FOLLOWUP_CREATED:
        parent = event.attributes.get("incident_id")
        return f"{event.source}:{parent}" if parent else None
    if event.kind in PAGE_KINDS or event.kind == Kind.INCIDENT_STORM_SUMMARY:
        return event.fingerprint
    return None


def _closed(event: NormalisedEvent) -> bool:
    return str(event.attributes.get("status_category") or "").lower() in CLOSED_CATEGORIES


def advance(before: IncidentRecord | None, event: NormalisedEvent, key: str, at_ms: int,
            *, episode: int | None = None, flap: flapping.FlapContext | None = None,
            storm_policy: storm.StormPolicy | None = None) -> IncidentRecord:
    """The incident after `event` (pure). `episode` pins the episode chosen the first time;
    `flap`: `flapping:` in hub.yaml (`hub.storage.flapping`), None when not configured;
    `storm_policy`: `grouping:` in hub.yaml (`hub.storage.storm`), None when not configured."""
    if event.kind == Kind.INCIDENT_STORM_SUMMARY:  # the hub's own summary: changes nothing
        return dict(before) if before is not None else {}
    if event.kind in PAGE_KINDS or event.kind == Kind.FOLLOWUP_CREATED:
        if before is None:
            return {}
        state = dict(before)
        if event.kind == Kind.PAGE_ACKNOWLEDGED and not state.get("acknowledged_at"):
            # a person's ack (a button: `hub.core.interactions`) names them; a pager's names the pager
            state.update(acknowledged_at=at_ms, acknowledged_by=event.attributes.get("acknowledged_by") or event.source)
        state["updated_at"] = at_ms
        return state

    # A firing received before the resolution (processed late: concurrent jobs, a held alert,
    # a replay) is stale: it does not reopen what a later event resolved.
    reopening = bool(before and before.get("resolved_at")) and event.kind in OPENING and not _closed(event) \
        and at_ms >= int((before or {}).get("resolved_at") or 0)
    fresh = before is None or reopening or (episode is not None and episode > int((before or {}).get("episode", 0)))
    if fresh:
        prior = before or {}
        state: IncidentRecord = {  # type: ignore[typeddict-unknown-key]
            "key": key, "kind": "alert" if event.kind in ALERT_KINDS else "incident", "source": event.source,
            "episode": episode or int(prior.get("episode", 0)) + 1, "declared_at": at_ms,
            "acknowledged_at": None, "acknowledged_by": None, "resolved_at": None, "resolution": None,
            "escalated_at": None, "escalation_level": 0, "page_dedup_key": None, "paged_by": None,
            **registry.incident_result_fields(),  # what the connectors' results fill (ids, ticket keys)
            "deploys": [], "links": [], "services": [], "severity_history": [],
            "status": None, "status_category": None, "severity": None, "title": "",
            # the alert's notification group: reports count one group's alerts open together as one incident
            "group": (event.attributes.get("group_key") or None) if event.kind in ALERT_KINDS else None,
        }
        for source, field in registry.linked_incident_fields().items():  # the outside incident's id
            own = event.kind in INCIDENT_KINDS and event.source == source
            state[field] = (event.attributes.get("incident_id") if own
                            else prior.get(field) if prior.get("kind") == "incident" else None)
        flapping.carry(prior, state, flap, event.kind in FIRING, at_ms)
    else:
        state = dict(before)
    grouped = alert_groups.group_of(event) is not None
    severity_before = state.get("severity") if grouped else None
    if event.title:
        state["title"] = event.title
    if event.severity and event.severity.value != state.get("severity"):
        state["severity_history"] = [*state.get("severity_history", []), [at_ms, event.severity.value]]
        state["severity"] = event.severity.value
    if event.status:
        state["status"] = event.status
    category = event.attributes.get("status_category")
    if category:
        previous = state.get("status_category")
        state["status_category"] = category
        left_triage = event.attributes.get("left_triage") or (previous == "triage" and category != "triage")
        if left_triage and not state.get("acknowledged_at"):
            state.update(acknowledged_at=at_ms, acknowledged_by=event.source)
    if event.kind in INCIDENT_KINDS and event.attributes.get("incident_id"):
        if (linked := registry.linked_incident_fields().get(event.source)) is not None:
            state[linked] = event.attributes["incident_id"]
    for svc in event.services:
        if svc not in state["services"]:
            state["services"] = [*state["services"], svc]
    for link in event.links:
        entry = link.model_dump()
        if entry not in state["links"]:
            state["links"] = [*state["links"], entry][:10]
    if grouped:
        alert_groups.shape(state, event, severity_before)
    resolving = alert_groups.resolves(event) if grouped else event.kind in RESOLVING
    if event.kind in _FIRING:
        state["fired_at"] = max(at_ms, int(state.get("fired_at") or 0))
    elif resolving and event.kind in ALERT_KINDS and at_ms < int(state.get("fired_at") or 0):
        resolving = False  # a recovery received before a firing already applied is stale
    if event.kind in ALERT_KINDS:  # an alert that joined another incident (`grouping:` in hub.yaml)
        member = incident_key(event) or key
        joined = alert_groups.track(state, member, key, event, resolving, fresh, at_ms)
        if joined is not None:
            resolving = joined
    if not fresh:  # an alert of its group, or one correlated to it, joined the open incident
        storm.note(state, storm_policy, event, grouped or (incident_key(event) or key) != key, at_ms)
    if not fresh and not resolving and event.kind in FIRING:  # back while its resolve was held
        flapping.fired_while_held(before, state, flap, at_ms, own=(incident_key(event) or key) == key)
    closing = event.kind in INCIDENT_KINDS and _closed(event)
    if (resolving or closing) and not state.get("resolved_at"):
        if closing or event.kind not in ALERT_KINDS or not flapping.hold(state, flap, at_ms):
            state["resolved_at"] = at_ms
            state["resolution"] = event.attributes.get("resolution") or "resolved"
            flapping.settle(state, flap)
    state["updated_at"] = at_ms
    return state


def duration_ms(state: IncidentRecord | None) -> int | None:
    if not state or not state.get("declared_at"):
        return None
    end = state.get("resolved_at") or now_ms()
    return max(0, int(end) - int(state["declared_at"]))


# An event's way in, in one round trip: resolve its incident names (key, else alias, else
# none for a page), take every incident's lock (all or none), and read what the run needs.
# Key names come from `hub.storage.keys` (this script builds none). As an alias is only known once
# read, the caller passes a *guess* of each name's incident with that incident's keys; a
# wrong guess (an alias in play) answers {2, resolved} and the caller calls again with the
# resolved names as its guesses. Busy: {0, resolved, locks, why}, why = 'busy' for a lock
# another worker holds (it lapses with its lease: the run is not counted, see
# `hub.storage.event_store.Store.start`), else the type of what sits at the lock's name (not a lock: it
# will never clear, and the run stays counted so the event ends as a dead letter).
# KEYS: event hash, its actions, then per name: its record, its alias, the guess's record,
# the guess's lock. ARGV: token, lease ms, flags, then per name: name, page flag, guess. Flags:
# '1' or '0' (resolve the names or not), then '1' when an earlier busy answer gave this run's
# count back: it is counted again only if the locks are had (`recount`).
_ENTER = """
local n = (#ARGV - 3) / 3
local resolved, wrong = {}, false
for i = 1, n do
  local name, guess = ARGV[1 + 3 * i], ARGV[3 + 3 * i]
  local key = name
  if name ~= '' and string.sub(ARGV[3], 1, 1) == '1' and redis.call('EXISTS', KEYS[4 * i - 1]) == 0 then
    local alias = redis.call('GET', KEYS[4 * i])
    if alias then key = alias elseif ARGV[2 + 3 * i] == '1' then key = '' end
  end
  resolved[i] = key
  if key ~= guess then wrong = true end
end
if wrong then return {2, resolved} end
local recount = string.sub(ARGV[3], 2, 2)
local first, locks = {}, {}
for i = 1, n do
  local k = resolved[i]
  if k ~= '' and not first[k] then first[k] = i; locks[#locks + 1] = k end
end
table.sort(locks)
for j, k in ipairs(locks) do
  local lock = KEYS[4 * first[k] + 2]
  if not redis.call('SET', lock, ARGV[1], 'NX', 'PX', ARGV[2]) then
    for m = 1, j - 1 do redis.call('DEL', KEYS[4 * first[locks[m]] + 2]) end
    local kind = redis.call('TYPE', lock)['ok']
    local why = kind
    if kind == 'string' and redis.call('PTTL', lock) > 0 then
      why = 'busy'
      if recount ~= '1' and tonumber(redis.call('HGET', KEYS[1], 'runs') or '0') > 0 then
        redis.call('HINCRBY', KEYS[1], 'runs', -1)
      end
    end
    return {0, resolved, locks, why}
  end
end
if recount == '1' and redis.call('HEXISTS', KEYS[1], 'runs') == 1 then redis.call('HINCRBY', KEYS[1], 'runs', 1) end
local incidents = {}
for j, k in ipairs(locks) do incidents[j] = redis.call('HGETALL', KEYS[4 * first[k] + 1]) end
local out = {1, resolved, locks, redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2]), incidents}
if string.sub(ARGV[3], 3, 3) == '1' then out[7] = redis.call('HVALS', KEYS[#KEYS]) end
return out
"""
#: Calls of `_ENTER` before giving up on aliases that keep changing under it.
ENTER_TRIES = 5


_encode_text = json.encoder.encode_basestring_ascii  # what json.dumps does with a str


def _encode(value: Any) -> str:
    """An incident field as strict JSON (`hub.core.strict_json.dumps`), with the scalars most
    fields hold written directly, byte for byte as json.dumps writes them."""
    kind = type(value)
    if kind is str:
        return _encode_text(value)
    if value is None:
        return "null"
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return int.__repr__(value)
    return dumps(value)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _decode_state(raw: Any) -> IncidentRecord | None:
    """An incident hash as HGETALL answers it (a dict, or a flat list from a script)."""
    if not raw:
        return None
    if isinstance(raw, list):
        raw = dict(zip(raw[::2], raw[1::2], strict=True))
    return {k.decode(): json.loads(v) for k, v in raw.items()}


class Claim:
    """The owner of a claimed action identity, known once the claim's batch has run."""

    __slots__ = ("_owner",)

    def __init__(self, owner: Reply) -> None:
        self._owner = owner

    @property
    def value(self) -> str:
        """The id of the event that owns the identity (this one, or the one that was first)."""
        if not self._owner.done:
            raise RuntimeError("the claim's batch has not run yet")
        return _text(self._owner.value)


@dataclass
class Entered:
    """What `IncidentStore.enter` found: the locks it holds and what the run reads first."""

    locked: bool
    token: str
    keys: list[str | None]
    lock_keys: list[str]
    record: dict[bytes, bytes] = field(default_factory=dict)
    actions: dict[bytes, bytes] = field(default_factory=dict)
    incidents: dict[str, IncidentRecord | None] = field(default_factory=dict)
    released: bool = False
    #: Why the locks were not taken: "busy" (another worker), else the type found at a lock's name.
    blocked: str = ""
    #: The maintenance windows made at run time, as stored (JSON), when asked for (`windows=True`).
    windows: list[bytes] | None = None


class IncidentStore:
    """Async access to the keys above. Cheap to construct."""

    def __init__(self, redis: Redis, retention_s: float) -> None:
        self.redis = redis
        self.retention = int(retention_s)
        self._enter = redis.register_script(_ENTER)

    # -- the record ----------------------------------------------------------------------------

    async def get(self, key: str) -> IncidentRecord | None:
        raw = await self.redis.hgetall(layout.incident(key))
        if not raw:
            return None
        return {k.decode(): json.loads(v) for k, v in raw.items()}

    async def get_many(self, keys: Iterable[str]) -> dict[str, IncidentRecord | None]:
        keys = list(dict.fromkeys(keys))
        if not keys:
            return {}
        async with self.redis.pipeline(transaction=False) as p:
            for key in keys:
                p.hgetall(layout.incident(key))
            raws = await p.execute()
        return {key: _decode_state(raw) for key, raw in zip(keys, raws, strict=True)}

    async def save(self, key: str, state: IncidentRecord, changes: Iterable[dict[str, Any]] = ()) -> None:
        """Write the whole record (and timeline entries) in one transaction; refresh expiry."""
        p = Batch()
        self.save_into(p, key, state, changes)
        await p.execute(self.redis)

    def save_into(self, p: Batch, key: str, state: IncidentRecord, changes: Iterable[dict[str, Any]] = ()) -> None:
        """Queue the writes of `save` on a pipeline (so they can share a transaction)."""
        if not state:
            return
        ms = now_ms()
        p.hset(layout.incident(key), mapping={k: _encode(v) for k, v in state.items()})
        p.expire(layout.incident(key), self.retention)
        if state.get("declared_at"):
            p.zadd(INDEX, {key: int(state["declared_at"])})
        for entry in changes:
            p.rpush(layout.incident_timeline(key), _encode({"at": ms, **entry}))
            if entry.get("type") == alert_groups.MEMBER_ENTRY:
                alert_groups.save_member_into(p, key, entry, ms, self.retention)
        p.expire(layout.incident_timeline(key), self.retention)
        p.expire(layout.incident_timers(key), self.retention)
        p.zremrangebyscore(INDEX, "-inf", ms - self.retention * 1000)

    async def update(self, key: str, **fields: Any) -> None:
        """Set a few fields of an existing record (results of actions: an outside id, a ticket key, …)."""
        if not await self.redis.exists(layout.incident(key)):
            return
        await self.redis.hset(layout.incident(key), mapping={k: _encode(v) for k, v in fields.items()})

    def update_noted_into(self, p: Batch, key: str, fields: dict[str, Any], entry: dict[str, Any]) -> None:
        """Queue on a batch: set `fields` if the record exists (`update`), and `note` the entry."""
        pairs: list[Any] = []
        for k, v in fields.items():
            pairs += [k, _encode(v)]
        p.update_noted(layout.incident(key), layout.incident_timeline(key), _encode({"at": now_ms(), **entry}),
                       self.retention, pairs)

    async def timeline(self, key: str) -> list[dict[str, Any]]:
        return [json.loads(x) for x in await self.redis.lrange(layout.incident_timeline(key), 0, -1)]

    async def note(self, key: str, entry: dict[str, Any]) -> None:
        p = Batch()
        self.note_into(p, key, entry)
        await p.execute(self.redis)

    def note_into(self, p: Batch, key: str, entry: dict[str, Any]) -> None:
        p.rpush(layout.incident_timeline(key), _encode({"at": now_ms(), **entry}))
        p.expire(layout.incident_timeline(key), self.retention)

    async def acknowledge(self, key: str, by: str = "operator") -> bool:
        """An operator's ack (stops escalation). False when unknown or already acknowledged."""
        state = await self.get(key)
        if state is None or state.get("acknowledged_at"):
            return False
        ms = now_ms()
        await self.update(key, acknowledged_at=ms, acknowledged_by=by)
        await self.note(key, {"type": "acknowledged", "by": by})
        return True

    # -- aliases -------------------------------------------------------------------------------

    async def resolve(self, name: str) -> str | None:
        """The incident key for a key or alias (None when neither is known)."""
        if await self.redis.exists(layout.incident(name)):
            return name
        found = await self.redis.get(layout.incident_alias(name))
        return found.decode() if found else None

    def alias_into(self, p: Batch, name: str, key: str) -> None:
        if name != key:
            p.set(layout.incident_alias(name), key, ex=self.retention)

    # -- claims: who owns an action identity -------------------------------------------------

    async def claims(self, subjects: Iterable[str]) -> dict[str, dict[str, str]]:
        subjects = list(dict.fromkeys(subjects))
        async with self.redis.pipeline(transaction=False) as p:
            for s in subjects:
                p.hgetall(layout.claims(s))
            raws = await p.execute()
        return {s: {k.decode(): v.decode() for k, v in raw.items()} for s, raw in zip(subjects, raws, strict=True)}

    def claim_into(self, p: Batch, subject: str, identity: str, event_id: str) -> Claim:
        """Queue `claim` on a batch; the handle says the owner once the batch has run."""
        p.hsetnx(layout.claims(subject), identity, event_id)
        owner = p.hget(layout.claims(subject), identity)
        p.expire(layout.claims(subject), self.retention)
        return Claim(owner)

    def unclaim_into(self, p: Batch, subject: str, identity: str) -> None:
        """Queue giving an identity back (its owner only: see `hub.worker.claims.Claims.unclaim_not_configured`)."""
        p.hdel(layout.claims(subject), identity)

    # -- timers --------------------------------------------------------------------------------

    async def timers(self, key: str) -> dict[str, dict[str, Any]]:
        raw = await self.redis.hgetall(layout.incident_timers(key))
        return {k.decode(): json.loads(v) for k, v in raw.items()}

    async def add_timer(self, key: str, timer_id: str, spec: dict[str, Any]) -> None:
        async with self.redis.pipeline(transaction=True) as p:
            p.hset(layout.incident_timers(key), timer_id, _encode(spec))
            p.expire(layout.incident_timers(key), self.retention)
            await p.execute()

    async def remove_timer(self, key: str, timer_id: str) -> bool:
        return bool(await self.redis.hdel(layout.incident_timers(key), timer_id))

    @staticmethod
    def remove_timer_into(p: Batch, key: str, timer_id: str) -> None:
        p.hdel(layout.incident_timers(key), timer_id)

    # -- locking -------------------------------------------------------------------------------

    async def lock(self, keys: Iterable[str], lease_s: float) -> str | None:
        """Take every key's lock (sorted, all or none); a token to unlock, or None when busy."""
        token = secrets.token_hex(8)
        taken: list[str] = []
        for key in sorted(set(keys)):
            if await self.redis.set(layout.incident_lock(key), token, nx=True, px=int(lease_s * 1000)):
                taken.append(key)
            else:
                await self.unlock(taken, token)
                return None
        return token

    async def unlock(self, keys: Iterable[str], token: str) -> None:
        """Release the locks that still hold `token`, in one round trip."""
        p = Batch()
        self.release_into(p, keys, token)
        await p.execute(self.redis)

    @staticmethod
    def release_into(p: Batch, keys: Iterable[str], token: str) -> None:
        for key in keys:
            p.release(layout.incident_lock(key), token)

    @classmethod
    def unlock_into(cls, p: Batch, entered: Entered) -> None:
        """Queue the release of `entered`'s locks on a batch (it then shares that atomic write).

        The caller sets `entered.released` once the batch ran; until then the run's own
        `finally` still releases them.
        """
        cls.release_into(p, entered.lock_keys, entered.token)

    async def enter(self, event_key: str, actions_key: str, names: list[str | None], pages: list[bool],
                    lease_s: float, *, resolve: bool, recount: bool = False, windows: bool = False) -> Entered:
        """Resolve the event's incident names, lock them, read the event: one round trip
        (two when an alias is involved: see `_ENTER`).

        `resolve=False` takes `names` as incident keys already (the pinned keys of a rerun).
        `recount`: an earlier call of this run answered busy (and gave the run's count back);
        the run is counted again if the locks are had now.
        When one of the incidents cannot be locked nothing is locked (`locked` is False, and
        `blocked` says why: ``busy``, or the type of a foreign key at the lock's name).
        `windows`: also read the run-time maintenance windows (`Entered.windows`), in the same
        round trip, for a run that decides its maintenance holds (`hub.worker.quiet`).
        """
        token = secrets.token_hex(8)
        guesses = [name or "" for name in names]
        for _ in range(ENTER_TRIES):
            key_names: list[str] = [event_key, actions_key]
            flags = ("1" if resolve else "0") + ("1" if recount else "0") + ("1" if windows else "0")
            argv: list[Any] = [token, int(lease_s * 1000), flags]
            for name, page, guess in zip(names, pages, guesses, strict=True):
                key_names += [layout.incident(name or ""), layout.incident_alias(name or ""), layout.incident(guess),
                              layout.incident_lock(guess)]
                argv += [name or "", "1" if page else "0", guess]
            if windows:
                key_names.append(layout.MAINTENANCE_WINDOWS)
            out = await self._enter(keys=key_names, args=argv)
            resolved = [_text(k) for k in out[1]]
            if out[0] != 2:
                break
            guesses = resolved
        else:
            raise RuntimeError(f"the aliases of {names!r} changed {ENTER_TRIES} times while resolving them")
        found: list[str | None] = [k or None for k in resolved]
        lock_keys = [_text(k) for k in out[2]]
        if not out[0]:
            return Entered(False, token, found, lock_keys, blocked=_text(out[3]))
        record = dict(zip(out[3][::2], out[3][1::2], strict=True))
        actions = dict(zip(out[4][::2], out[4][1::2], strict=True))
        incidents = {k: _decode_state(raw) for k, raw in zip(lock_keys, out[5], strict=True)}
        return Entered(True, token, found, lock_keys, record, actions, incidents,
                       windows=list(out[6]) if windows else None)

    # -- deploys -------------------------------------------------------------------------------

    async def record_deploy(self, deploy: dict[str, Any], keep: int) -> None:
        """Remember a deploy under its service and environment (idempotent: same deploy, same member)."""
        service, env = deploy["service"].casefold(), (deploy.get("environment") or "unknown").casefold()
        zkey = layout.deploys(service, env)
        async with self.redis.pipeline(transaction=True) as p:
            p.zadd(zkey, {json.dumps(deploy, sort_keys=True, default=str): int(deploy["at"])})
            p.zremrangebyrank(zkey, 0, -keep - 1)
            p.expire(zkey, self.retention)
            p.sadd(layout.deploy_environments(service), env)
            p.expire(layout.deploy_environments(service), self.retention)
            await p.execute()

    async def deploys(self, services: Iterable[str], since_ms: int) -> list[dict[str, Any]]:
        """Deploys of these services (any environment) since `since_ms`, newest first."""
        out: list[dict[str, Any]] = []
        names = list(dict.fromkeys(s.casefold() for s in services))
        if not names:
            return out
        async with self.redis.pipeline(transaction=False) as p:  # two round trips, however many services
            for service in names:
                p.smembers(layout.deploy_environments(service))
            envs = await p.execute()
            zkeys = [layout.deploys(service, env.decode()) for service, found in zip(names, envs, strict=True)
                     for env in found]
            if not zkeys:
                return out
            for zkey in zkeys:
                p.zrangebyscore(zkey, since_ms, "+inf")
            for found in await p.execute():
                out.extend(json.loads(raw) for raw in found)
        return sorted(out, key=lambda d: -int(d.get("at", 0)))
