"""Maintenance windows at run time: which alerts an open window holds back, and what happens
when it closes.

The executor asks `Quiet.decide` once per event (the answer is pinned on the record as
`quiet`, so a retried run suppresses exactly what the first one did) and drops the planned
steps of the held alerts: the event is recorded, its incident advanced and its timeline says
`suppressed` with the window, but nothing is sent. Each held firing alert is remembered by
incident key in `QUIET_HELD` (the first event of the alert: the one that would have paged),
due at its window's end in `QUIET_DUE`. A resolve of the same alert, in the window or after,
forgets it: an alert that resolved during the window stays quiet.

`release_due` (the worker's sweeper, every 30 s and at start) takes the held alerts whose
window has ended: one still held by another open window waits for that one; the others get
their `quiet` pin dropped and are replayed, so they plan as if they had just arrived, with
no window open. The state is all in Redis, so a window that ends while no worker runs is
released by the first sweep after start.

An alert named like a heartbeat's `alertname` (a Watchdog) is held back the same way, for
good: it is a ping of that heartbeat (`hub.worker.heartbeats`), never a page.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from hub.core import metrics
from hub.core.events import Kind, NormalisedEvent
from hub.rules import Rules
from hub.rules.maintenance import OpenWindow, file_windows_open, matches, quietable
from hub.storage import keys
from hub.storage.batch import Batch
from hub.storage.event_store import ev_key, now_ms
from hub.storage.incidents import incident_key
from hub.worker import deploy_quiet
from hub.worker.heartbeats import Heartbeats, watchdog_of

log = logging.getLogger("hub.worker.quiet")
#: The record field that pins which events a window held back (event index → window).
QUIET_FIELD = "quiet"
#: Held alerts released per sweep at most (the rest on the next one).
RELEASE_BATCH = 200
#: When an event could not be replayed (still in flight), its held alerts come back this much later.
RETRY_MS = 30_000


async def runtime_windows(redis: Redis) -> list[dict[str, Any]]:
    """Every window made at run time that has not been purged (ended ones included)."""
    return stored_windows((await redis.hgetall(keys.MAINTENANCE_WINDOWS)).values())


def stored_windows(raw: Iterable[bytes]) -> list[dict[str, Any]]:
    """Windows made at run time, from their stored JSON (one that is not JSON is skipped)."""
    out = []
    for v in raw:
        try:
            out.append(json.loads(v))
        except ValueError:
            continue
    return out


async def open_windows(redis: Redis, rules: Rules, at_ms: int, stored: list[dict[str, Any]] | None = None
                       ) -> list[OpenWindow]:
    """The windows open at `at_ms`: the file's, then those made at run time (`stored`, when
    already read; else read now)."""
    if stored is None:
        stored = await runtime_windows(redis)
    return file_windows_open(rules.config.maintenance, at_ms) + runtime_open(stored, at_ms)


def runtime_open(stored: Iterable[dict[str, Any]], at_ms: int) -> list[OpenWindow]:
    """Of windows made at run time (as stored), those open at `at_ms`."""
    return [OpenWindow(w["id"], w.get("name") or w["id"], w["match"], int(w["start"]), int(w["end"]),
                       w.get("origin") or "api", w.get("reason", ""))
            for w in stored if int(w["start"]) <= at_ms < int(w["end"])]


def facts(rules: Rules, ev: NormalisedEvent | dict[str, Any]) -> dict[str, Any]:
    """What a window matches on, from an event (or from a held alert's saved facts)."""
    if isinstance(ev, dict):
        services, source, labels = ev.get("services") or [], ev.get("source", ""), ev.get("labels") or {}
    else:
        services, source, labels = list(ev.services), ev.source, dict(ev.labels)
    canon = rules.canonical_services(services)
    catalog = rules.config.catalog.services
    teams = [t for s in canon if s in catalog and (t := catalog[s].team)]
    return {"services": canon + [s for s in services if s not in canon], "teams": teams, "source": source,
            "labels": labels}


def holding(windows: Iterable[OpenWindow], fx: dict[str, Any]) -> OpenWindow | None:
    """The open window that holds an event with these facts (the one ending last), or None."""
    found = [w for w in windows if matches(w.match, **fx)]
    return max(found, key=lambda w: w.end_ms) if found else None


def would_hold(rules: Rules, events: list[NormalisedEvent], at_ms: int) -> dict[int, str]:
    """Offline (`simulate`): what the rules file's windows and Watchdogs would do to each event, in words."""
    windows = file_windows_open(rules.config.maintenance, at_ms)
    out: dict[int, str] = {}
    for i, ev in enumerate(events):
        if not quietable(ev.kind, ev.source):
            continue
        if (beat := watchdog_of(rules, ev)) is not None:
            out[i] = f"a ping of heartbeat {beat}: would never page"
        elif (w := holding(windows, facts(rules, ev))) is not None:
            until = datetime.fromtimestamp(w.end_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
            out[i] = f"would be suppressed by maintenance window {w.name} until {until}"
    return out


class Quiet:
    """Suppression by maintenance windows, for one worker (rules read live: SIGHUP reloads)."""

    def __init__(self, redis: Redis, rules: Callable[[], Rules], heartbeats: Heartbeats | None = None) -> None:
        self.redis = redis
        self._rules = rules
        self.heartbeats = heartbeats

    async def decide(self, rec: dict[str, Any], events: list[NormalisedEvent], first: int = 0,
                     windows: list[bytes] | None = None) -> tuple[dict[int, dict[str, Any]], bool]:
        """The events (by absolute index) a window holds back, and whether this was decided now
        (not read from the pin). `windows`: the run-time windows as stored, when the run has
        read them already (`IncidentStore.enter`); else they are read here."""
        if rec.get(QUIET_FIELD) is not None:
            pinned = json.loads(rec[QUIET_FIELD])
            return {int(i): w for i, w in pinned.items()}, False
        candidates = [(i, ev) for i, ev in enumerate(events, first) if quietable(ev.kind, ev.source)]
        if not candidates:
            return {}, True
        rules = self._rules()
        opened = await open_windows(self.redis, rules, now_ms(), None if windows is None else stored_windows(windows))
        held: dict[int, dict[str, Any]] = {}
        for i, ev in candidates:
            if (beat := watchdog_of(rules, ev)) is not None:
                held[i] = {"id": f"heartbeat:{beat}", "name": beat, "until": 0, "ping": beat}
                continue
            w = holding(opened, facts(rules, ev))
            if w is not None:
                held[i] = {"id": w.id, "name": w.name, "until": w.end_ms}
        return held, True

    def commit_into(self, p: Batch, rec: dict[str, Any], record_key: str, events: list[NormalisedEvent],
                    held: dict[int, dict[str, Any]], first: int = 0) -> None:
        """Pin the decision, remember held firing alerts, forget resolved ones, say so on the timeline."""
        event_id = rec["id"]
        p.hset(record_key, QUIET_FIELD, json.dumps({str(i): w for i, w in held.items()}, separators=(",", ":")))
        for i, ev in enumerate(events, first):
            key = incident_key(ev)
            if key is None or not quietable(ev.kind, ev.source) or "ping" in held.get(i, {}):
                continue
            if ev.kind in (Kind.ALERT_RESOLVED, Kind.HEARTBEAT_RECOVERED):
                p.hdel(keys.QUIET_HELD, key)
                p.zrem(keys.QUIET_DUE, key)
            elif i in held and ev.kind in (Kind.ALERT_FIRING, Kind.HEARTBEAT_MISSED):
                w = held[i]
                entry = {"event_id": event_id, "record": record_key, "window": w["id"], "name": w["name"],
                         "until": w["until"],
                         "services": list(ev.services), "source": ev.source, "labels": dict(ev.labels)}
                p.hsetnx(keys.QUIET_HELD, key, json.dumps(entry, separators=(",", ":")))
                p.zadd(keys.QUIET_DUE, {key: w["until"]}, gt=True)  # adds, or moves it later
        by_window: dict[str, dict[str, Any]] = {}
        for i, w in held.items():
            by_window.setdefault(w["id"], {**w, "events": []})["events"].append(i)
        for w in by_window.values():
            entry = ({"type": "heartbeat_ping", "heartbeat": w["name"]} if "ping" in w else
                     {"type": "suppressed", "window": w["name"], "window_id": w["id"], "until": w["until"]})
            p.rpush(keys.event_timeline(event_id), json.dumps({"at": now_ms(), **entry, "events": w["events"]},
                                                              separators=(",", ":")))

    async def deploys(self, rec: dict[str, Any], events: list[NormalisedEvent]) -> None:
        """Deploy events open, move or end their service's quiet period (`hub.worker.deploy_quiet`)."""
        notes = await deploy_quiet.apply(self.redis, self._rules(), events, now_ms())
        for note in notes:
            await self.redis.rpush(keys.event_timeline(rec["id"]), json.dumps({"at": now_ms(), **note},
                                                                             separators=(",", ":")))

    async def pinged(self, events: list[NormalisedEvent], held: dict[int, dict[str, Any]], first: int = 0) -> None:
        """Firing Watchdog alerts ping their heartbeat (after the commit that pinned the decision)."""
        if self.heartbeats is None:
            return
        for i, w in held.items():
            if "ping" in w and events[i - first].kind == Kind.ALERT_FIRING:
                await self.heartbeats.ping(w["ping"])

    @staticmethod
    def count(source: str, held: dict[int, dict[str, Any]]) -> None:
        windows = sum(1 for w in held.values() if "ping" not in w)
        if windows:
            metrics.ALERTS_SUPPRESSED.labels(source).inc(windows)

    @staticmethod
    def reason(held: dict[int, dict[str, Any]]) -> str:
        names = sorted({w["name"] for w in held.values() if "ping" not in w})
        beats = sorted({w["name"] for w in held.values() if "ping" in w})
        parts = ([f"suppressed by maintenance window {', '.join(names)}"] if names else []) + \
                ([f"a ping of heartbeat {', '.join(beats)} (never pages)"] if beats else [])
        return "; ".join(parts)

    async def release_due(self, replay: Callable[[str], Any], at_ms: int | None = None) -> int:
        """Held alerts whose window has ended: wait for another open window, or evaluate again.

        `replay(event_id)` hands the event back to the workers (the sweeper passes
        `hub.operators.replay.replay_event`). Returns how many were released."""
        at = now_ms() if at_ms is None else at_ms
        due = await self.redis.zrangebyscore(keys.QUIET_DUE, "-inf", at, start=0, num=RELEASE_BATCH)
        if not due:
            return 0
        rules = self._rules()
        windows = await open_windows(self.redis, rules, at)
        ready: dict[str, list[tuple[str, dict[str, Any], bytes]]] = {}
        for raw_key in due:
            key = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
            raw = await self.redis.hget(keys.QUIET_HELD, key)
            if raw is None:
                await self.redis.zrem(keys.QUIET_DUE, key)
                continue
            entry = json.loads(raw)
            still = holding(windows, facts(rules, entry))
            if still is not None:  # another (or a longer) window holds it now
                await self.redis.zadd(keys.QUIET_DUE, {key: still.end_ms})
                continue
            ready.setdefault(entry["event_id"], []).append((key, entry, raw))
        released = 0
        for event_id, held in ready.items():  # one replay per event, whatever it held
            # forget them first: a resolve arriving from now on finds nothing held
            async with self.redis.pipeline(transaction=True) as p:
                for key, entry, _raw in held:
                    p.hdel(keys.QUIET_HELD, key)
                    p.zrem(keys.QUIET_DUE, key)
                    p.hdel(entry.get("record") or ev_key(event_id), QUIET_FIELD)  # a chunk's own record, if any
                    p.rpush(keys.event_timeline(event_id), json.dumps(
                        {"at": at, "type": "window_ended", "window": entry.get("name"), "incident": key,
                         "evaluated_again": True}, separators=(",", ":")))
                await p.execute()
            try:
                await replay(event_id)
            except Exception as e:  # in flight (or Redis): hold them again and come back; expired: drop
                if getattr(e, "status", None) == 404:
                    log.warning("held alerts of event %s not evaluated again: the event expired", event_id)
                    continue
                log.warning("held alerts of event %s: evaluating again later (%s)", event_id, e)
                async with self.redis.pipeline(transaction=True) as p:
                    for key, _entry, raw in held:
                        p.hsetnx(keys.QUIET_HELD, key, raw)
                        p.zadd(keys.QUIET_DUE, {key: at + RETRY_MS}, nx=True)
                    await p.execute()
                continue
            released += len(held)
            metrics.ALERTS_RELEASED.inc(len(held))
        return released
