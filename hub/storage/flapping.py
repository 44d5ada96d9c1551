"""A flapping alert in its incident record (pure): what `hub.storage.incidents.advance` does with `flapping:`.

Fields of ``hub:incident:{key}`` (JSON; absent unless `flapping:` is configured):

- ``flap_times``: when the alert's firings opened an episode (or came back while its resolve was
  held), newest last, at most `KEEP`, carried across episodes;
- ``resolve_held_at`` / ``resolve_held_until`` / ``resolve_held_by``: a resolve that was *held*
  (received at, due for release at, the event): the incident stays open, so its page does too;
- ``flapping``: ``{"since", "count"}`` once a firing came back while the resolve was held;
- ``resolution_released_by``: the held resolve whose release resolved the episode.

Safety first: a held resolve keeps one page open; a firing while it is held clears the hold
in the same episode (no second page); only a release with no firing since resolves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Firing times kept on a record (the threshold is checked over the newest of them).
KEEP = 32
#: Fields a fresh episode starts without (the times are carried over).
HOLD_FIELDS = ("resolve_held_at", "resolve_held_until", "resolve_held_by")


@dataclass(frozen=True)
class FlapPolicy:
    window_ms: int
    threshold: int


@dataclass(frozen=True)
class FlapContext:
    """What `advance` needs: the policy (None: not configured), whether this event's held
    resolve is being released (`hub.worker.flapping`), and the event's id."""

    policy: FlapPolicy | None = None
    released: bool = False
    event_id: str = ""


def held(state: dict[str, Any] | None) -> bool:
    """Whether the incident stays open only because its resolve is held."""
    return bool(state and state.get("resolve_held_at") and not state.get("resolved_at"))


def _recent(times: list[int], at_ms: int, window_ms: int) -> list[int]:
    return [t for t in times if t >= at_ms - window_ms]


def _note(state: dict[str, Any], at_ms: int, policy: FlapPolicy | None) -> None:
    times = [*(state.get("flap_times") or []), at_ms]
    if policy is not None:
        times = _recent(times, at_ms, policy.window_ms)
    state["flap_times"] = times[-KEEP:]


def carry(prior: dict[str, Any], state: dict[str, Any], ctx: FlapContext | None, firing: bool, at_ms: int) -> None:
    """A fresh episode: the firing times carried over (and this one noted when it fires)."""
    if ctx is None or ctx.policy is None:
        return
    state["flap_times"] = list(prior.get("flap_times") or [])
    state.update(flapping=None, **dict.fromkeys(HOLD_FIELDS))
    if firing:
        _note(state, at_ms, ctx.policy)


def fired_while_held(before: dict[str, Any] | None, state: dict[str, Any], ctx: FlapContext | None,
                     at_ms: int, own: bool = True) -> None:
    """A firing received after the held resolve: the hold ends in the same episode (no second
    page), and the alert is marked flapping (the first time: `since`, and how many firings).
    `own`: the incident's own alert (or sender group); another alert that joined it (`grouping:`)
    ends the hold too, but is not the incident flapping."""
    if not held(before) or at_ms < int((before or {}).get("resolve_held_at") or 0):
        return  # nothing held, or a firing received before the resolve (stale)
    policy = ctx.policy if ctx is not None else None
    state.update(dict.fromkeys(HOLD_FIELDS))
    if not own:
        return
    _note(state, at_ms, policy)
    previous = state.get("flapping")
    state["flapping"] = ({**previous, "count": int(previous.get("count") or 0) + 1} if previous else
                         {"since": at_ms, "count": len(state["flap_times"])})


def hold(state: dict[str, Any], ctx: FlapContext | None, at_ms: int) -> bool:
    """Whether an alert's resolve is held (the incident is not resolved): it is flapping, or
    it opened threshold-1 episodes within the window. A second resolve keeps the first hold."""
    if held(state):
        return not (ctx is not None and ctx.released)
    if ctx is None or ctx.policy is None or ctx.released:
        return False
    policy = ctx.policy
    recent = _recent(list(state.get("flap_times") or []), at_ms, policy.window_ms)
    if not state.get("flapping") and len(recent) < policy.threshold - 1:
        return False
    state.update(resolve_held_at=at_ms, resolve_held_until=at_ms + policy.window_ms, resolve_held_by=ctx.event_id)
    return True


def settle(state: dict[str, Any], ctx: FlapContext | None) -> None:
    """The incident resolved: nothing held, not flapping any more."""
    if any(state.get(f) for f in HOLD_FIELDS) or state.get("flapping"):
        state.update(flapping=None, **dict.fromkeys(HOLD_FIELDS))
    if ctx is not None and ctx.released:
        state["resolution_released_by"] = ctx.event_id


def changes(before: dict[str, Any] | None, after: dict[str, Any], event_id: str) -> list[dict[str, Any]]:
    """Timeline lines: a resolution held (until when), a hold ended by a firing, flapping from now on."""
    before = before or {}
    out: list[dict[str, Any]] = []
    if held(after) and after.get("resolve_held_at") != before.get("resolve_held_at"):
        out.append({"type": "resolution_held", "until": after.get("resolve_held_until"), "event_id": event_id})
    if held(before) and not held(after) and not after.get("resolved_at"):
        own = (after.get("flap_times") or [])[-1:] != (before.get("flap_times") or [])[-1:]  # its own firing
        out.append({"type": "resolution_hold_cleared", "flap": own, "event_id": event_id})
    if after.get("flapping") and not before.get("flapping"):
        out.append({"type": "flapping", **after["flapping"], "event_id": event_id})
    return out
