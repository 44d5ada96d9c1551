"""Every Redis key name the hub builds, in one place: one function per kind of key.

Key names carry values senders control (alert fingerprints, incident keys and aliases,
service names, environments, delivery ids). Pasted in raw, such a value can name another
key: an alert fingerprinted ``V:lock`` had its record at ``hub:incident:V:lock``, the lock
of incident ``V`` (which then never ran); a service ``checkout:production`` read the deploy
list of ``checkout`` in ``production``. So every such value goes through `part`:

- percent-encoding of its UTF-8 bytes, except ``A-Z a-z 0-9 . _ - ~ @ / + =``: the result
  never contains ``:`` (nor ``*``, ``?``, ``[``, ``]``, ``{``, ``}``, ``#``, ``%``, space, …),
  and distinct values give distinct results (``%`` itself is encoded);
- a value whose encoding is longer than `MAX_PART` becomes ``#`` + the SHA-256 of its bytes
  (``#`` never appears in an encoded value, so the two forms cannot meet).

A key is a fixed prefix, encoded parts separated by ``:``, then an optional fixed suffix
(``:timeline``, ``:lock``, …). As no part contains ``:``, a key name splits back into its
prefix, parts and suffix one way only: two different (kind, values) never share a name.
Plain values (hex fingerprints, ``prod``) encode to themselves, so those keys
read as before. `hub.storage.upgrade` renames keys written by versions that did not encode.

Ids the hub makes itself (event ids ``ev_…``, replay job ids ``rp_…``) are used as they
are; operator input is checked against their format before it reaches a key (`EVENT_ID`).
Connector names, sources, states and kinds are the hub's own identifiers.
"""

from __future__ import annotations

import functools
import hashlib
import re
from urllib.parse import quote

PREFIX = "hub:"
#: Longest encoded part kept readable; longer values are hashed (Redis keys stay short).
MAX_PART = 200
_SAFE = "._-~@/+="  # plus letters and digits (quote's own safe set is '_.-~')
#: An event id as the hub makes them (`hub.storage.event_store.new_event_id`): ms in 12 hex digits + 8 random.
EVENT_ID = re.compile(r"ev_[0-9a-f]{20}")
#: A bulk replay job id (`hub.operators.replay.create_bulk`).
REPLAY_JOB_ID = re.compile(r"rp_[0-9a-f]{20}")


#: What `quote(value, safe=_SAFE)` leaves as it is (ASCII only): such a value is its own encoding.
_PLAIN = re.compile(r"[A-Za-z0-9._\-~@/+=]*")


def part(value: str) -> str:
    """`value` as one component of a key name: never contains ``:``; injective."""
    if len(value) <= MAX_PART and _PLAIN.fullmatch(value):
        return value  # the common case (fingerprints, ids, names), without encoding it
    return _encoded(value)


@functools.lru_cache(maxsize=4096)
def _encoded(value: str) -> str:
    """The percent-encoded (or hashed) part: an event names the same incident keys many
    times over (its records, locks, aliases, claims), so the encodings are kept."""
    raw = value.encode("utf-8", "surrogatepass")
    enc = quote(raw, safe=_SAFE)
    if len(enc) > MAX_PART:
        return "#" + hashlib.sha256(raw).hexdigest()
    return enc


def is_event_id(value: str) -> bool:
    return EVENT_ID.fullmatch(value) is not None


def is_replay_job_id(value: str) -> bool:
    return REPLAY_JOB_ID.fullmatch(value) is not None


# -- events (hub-made ids) --------------------------------------------------------------------

def event(event_id: str) -> str:
    return f"{PREFIX}ev:{event_id}"


def event_actions(event_id: str) -> str:
    return f"{PREFIX}ev:{event_id}:actions"


def event_timeline(event_id: str) -> str:
    return f"{PREFIX}ev:{event_id}:timeline"


def dedup(source: str, delivery_id: str) -> str:
    """A delivery id is sender text: hashed (this layout predates `part` and is kept)."""
    digest = hashlib.sha256(delivery_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"{PREFIX}dedup:{source}:{digest}"


def source_index(source: str) -> str:
    return f"{PREFIX}idx:source:{source}"


def state_index(state: str) -> str:
    return f"{PREFIX}idx:state:{state}"


def kind_index(kind: str) -> str:
    return f"{PREFIX}idx:kind:{kind}"


# -- incidents (sender-controlled keys) -------------------------------------------------------

INCIDENT_PREFIX = f"{PREFIX}incident:"
ALIAS_PREFIX = f"{PREFIX}incident-alias:"
CLAIMS_PREFIX = f"{PREFIX}claims:"
DEPLOYS_PREFIX = f"{PREFIX}deploys:"


def incident(key: str) -> str:
    return INCIDENT_PREFIX + part(key)


def incident_timeline(key: str) -> str:
    return f"{INCIDENT_PREFIX}{part(key)}:timeline"


def incident_timers(key: str) -> str:
    return f"{INCIDENT_PREFIX}{part(key)}:timers"


def incident_alerts(key: str) -> str:
    """The alerts of a sender's group kept on its incident (`hub.storage.alert_groups`)."""
    return f"{INCIDENT_PREFIX}{part(key)}:alerts"


def incident_alerts_first(key: str) -> str:
    return f"{INCIDENT_PREFIX}{part(key)}:alerts-first"


def incident_storm_alerts(key: str) -> str:
    """Alerts that joined the incident while it stormed (`hub.storage.storm`)."""
    return f"{INCIDENT_PREFIX}{part(key)}:storm-alerts"


def incident_storm_labels(key: str) -> str:
    return f"{INCIDENT_PREFIX}{part(key)}:storm-labels"


def incident_lock(key: str) -> str:
    return f"{INCIDENT_PREFIX}{part(key)}:lock"


def incident_alias(name: str) -> str:
    return ALIAS_PREFIX + part(name)


def correlation(values: str) -> str:
    """The open incident of one set of `grouping.by` values (`hub.worker.grouping`)."""
    return f"{PREFIX}correlation:{part(values)}"


def claims(subject: str) -> str:
    return CLAIMS_PREFIX + part(subject)


def deploys(service: str, environment: str) -> str:
    """The zset of a service's deploys to one environment (two parts)."""
    return f"{DEPLOYS_PREFIX}{part(service)}:{part(environment)}"


def deploy_environments(service: str) -> str:
    """The set of environments a service was deployed to (one part: never a `deploys` key)."""
    return DEPLOYS_PREFIX + part(service)


# -- replays (hub-made ids) -------------------------------------------------------------------

def replay_job(job_id: str) -> str:
    return f"{PREFIX}replay:{job_id}"


def replay_items(job_id: str) -> str:
    return f"{PREFIX}replay:{job_id}:items"


def replay_results(job_id: str) -> str:
    return f"{PREFIX}replay:{job_id}:results"


# -- connectors (hub-named, sender text hashed) -----------------------------------------------

def _digest(value: str, length: int) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:length]


def rate_limit(connector: str, key: str) -> str:
    return f"{PREFIX}rl:{connector}:{_digest(key, 24)}"


def serial_lock(scope: str, key: str) -> str:
    return f"{PREFIX}lock:{scope}:{_digest(key, 24)}"


def ledger(connector: str, scope: str, kind: str, key: str) -> str:
    """A creation ledger entry (`connectors._ledger`): kind is ``rec``, ``intent`` or ``settle``."""
    return f"{PREFIX}ledger:{connector}:{_digest(scope, 12)}:{kind}:{_digest(key, 32)}"


# -- maintenance windows (hub-made ids; held alerts by incident key, a hash field) -------------

#: A window made at run time ``mw_`` + 16 hex digits (`hub.operators.maintenance`).
WINDOW_ID = re.compile(r"mw_[0-9a-f]{16}")
#: hash: window id → the window (JSON), every window made at run time and not yet purged.
MAINTENANCE_WINDOWS = f"{PREFIX}maintenance:windows"
#: zset: window id → its end (ms), so ended windows are found and dropped without a scan.
MAINTENANCE_ENDS = f"{PREFIX}maintenance:ends"
#: hash: incident key → the suppressed event to evaluate again when its window ends (JSON).
QUIET_HELD = f"{PREFIX}quiet:held"
#: zset: incident key → when to look at its held event again (ms): the end of its window.
QUIET_DUE = f"{PREFIX}quiet:due"
#: hash: incident key → the held resolve of a flapping alert, released when due (JSON:
#: event id, its record, held at, until; `hub.worker.flapping`).
FLAP_HELD = f"{PREFIX}flapping:held"
#: zset: incident key → when its held resolve is due for release (ms).
FLAP_DUE = f"{PREFIX}flapping:due"
#: zset: incident key → when its next storm summary is due (ms) (`hub.worker.storm`).
STORM_DUE = f"{PREFIX}storm:due"
#: hash: incident key → JSON {"to": ms summarised up to, "seq": summaries sent}.
STORM_SUMMARISED = f"{PREFIX}storm:summarised"


def is_window_id(value: str) -> bool:
    return WINDOW_ID.fullmatch(value) is not None


# -- heartbeats (names from the rules file: checked, but encoded all the same) ----------------

#: zset: heartbeat name → when it counts as missed (ms).
HEARTBEATS_DUE = f"{PREFIX}hb:due"
#: zset: `missed|name|ms` / `recovered|name|ms` → when decided: events not yet recorded.
HEARTBEATS_OUTBOX = f"{PREFIX}hb:outbox"
#: A web process took pings recently (set with a short expiry): missed checks need one.
HEARTBEATS_INGRESS = f"{PREFIX}hb:ingress-alive"


def heartbeat(name: str) -> str:
    """One heartbeat's state (hash); `hub:hb:due` and the others are fixed names, never a `part`."""
    return f"{PREFIX}hb:state:{part(name)}"
