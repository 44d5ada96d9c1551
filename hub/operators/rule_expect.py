"""A case's `expect:` against what its webhook planned: each failed expectation in words.

Every message says what was expected and what was planned instead, so a failure reads as a
diff without opening the rules file.
"""

from __future__ import annotations

import json
from typing import Any

from hub.operators.rule_cases import Expect, ExpectAction, ExpectTimer, Joins
from hub.operators.rule_scenario import Outcome
from hub.rules.engine import PlannedStep
from hub.worker.actions import redact


def subset(expected: Any, actual: Any) -> bool:
    """`expected` is found in `actual`: mappings key by key (extra keys allowed), lists item by item."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(k in actual and subset(v, actual[k]) for k, v in expected.items())
    if isinstance(expected, list):
        return isinstance(actual, list) and len(expected) == len(actual) and \
            all(subset(e, a) for e, a in zip(expected, actual, strict=True))
    if expected == actual:
        return True
    return not isinstance(expected, bool | dict | list) and not isinstance(actual, bool | dict | list) and \
        actual is not None and str(expected) == str(actual)


def span(seconds: float) -> str:
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def describe(s: PlannedStep) -> str:
    """One planned action, as the failure output lists it (secret-looking values masked)."""
    when = ""
    if s.timer is not None:
        when = f" (timer {s.timer.group}, after {span(s.delay)}"
        every = _every(s)
        when += f", every {span(every)})" if every is not None else ")"
    return f"{s.name} [{s.workflow}/{s.step_id}]{when} {json.dumps(redact(s.params), default=str, sort_keys=True)}"


def _every(s: PlannedStep) -> float | None:
    if s.timer is None or s.timer.every is None:
        return None
    return s.timer.delay(_severity(s), 2)


def _severity(s: PlannedStep) -> str | None:
    return (s.context.get("incident") or {}).get("severity") or (s.context.get("event") or {}).get("severity")


def _action_candidates(want: ExpectAction, planned: list[PlannedStep]) -> list[PlannedStep]:
    return [s for s in planned if s.name == want.action and (want.workflow is None or s.workflow == want.workflow)
            and (want.step is None or want.step in (s.step_id, s.timer.group if s.timer else None))]


def _differences(expected: dict[str, Any], params: dict[str, Any]) -> str:
    shown = redact(params)
    parts = []
    for k, v in expected.items():
        if k not in params:
            parts.append(f"{k}: expected {v!r}, not set")
        elif not subset(v, params[k]):
            parts.append(f"{k}: expected {v!r}, planned {shown[k]!r}")
    return "; ".join(parts)


def check_actions(wanted: list[ExpectAction], planned: list[PlannedStep]) -> list[str]:
    """Each expected action matches its own planned action (in order, one planned action per expectation)."""
    used: set[int] = set()
    out = []
    for want in wanted:
        candidates = [s for s in _action_candidates(want, planned) if id(s) not in used]
        hit = next((s for s in candidates if subset(want.with_, s.params)), None)
        if hit is not None:
            used.add(id(hit))
            continue
        label = want.action + (f" [{want.workflow or '*'}/{want.step or '*'}]" if want.workflow or want.step else "")
        if not candidates:
            out.append(f"expected action {label} with {json.dumps(want.with_, default=str)}: none planned")
        else:
            near = "\n".join(f"      {s.workflow}/{s.step_id}: {_differences(want.with_, s.params)}"
                             for s in candidates)
            out.append(f"expected action {label} with {json.dumps(want.with_, default=str)}; planned with other "
                       f"parameters:\n{near}")
    return out


def check_not_actions(names: list[str], planned: list[PlannedStep]) -> list[str]:
    return [f"expected no {name}; planned: " + ", ".join(f"[{s.workflow}/{s.step_id}]" for s in found)
            for name in names if (found := [s for s in planned if s.name == name])]


def _first_key(outcome: Outcome) -> tuple[int, str] | None:
    return next(((i, k) for i, k in enumerate(outcome.keys) if k), None)


def check_incident(want: str | Joins, outcome: Outcome, given: list[Outcome]) -> list[str]:
    found = _first_key(outcome)
    if found is None:
        return [f"expected the webhook to {'open' if want == 'opens' else 'join'} an incident; "
                "its events belong to none"]
    i, key = found
    before, after = outcome.before[i], outcome.after[i] or {}
    if want == "opens":
        if before is None or before.get("episode") != after.get("episode"):
            return []
        return [f"expected a new incident; joined {key} (episode {after.get('episode')}, opened "
                f"by an earlier webhook)"]
    assert isinstance(want, Joins)
    if isinstance(want.joins, int):
        target = _first_key(given[want.joins])
        if target is None:
            return [f"expected to join the incident of given[{want.joins}]; that webhook has none"]
        target_key = target[1]
        what = f"the incident of given[{want.joins}] ({target_key})"
    else:
        target_key, what = want.joins, want.joins
    if key != target_key:
        return [f"expected to join {what}; " + (f"opened {key}" if before is None else f"joined {key}")]
    if before is None:
        return [f"expected to join {what}; it was not open before this webhook (this webhook opened it)"]
    return []


def check_suppressed(name: str, outcome: Outcome) -> list[str]:
    if not outcome.events:
        return [f"expected suppression by {name!r}; the webhook has no events"]
    wrong = [i for i in range(len(outcome.events)) if outcome.held.get(i) != name]
    if not wrong:
        return []
    held = {outcome.held[i] for i in wrong if i in outcome.held}
    return [f"expected every event held back by maintenance window {name!r}; "
            + (f"held by {', '.join(sorted(held))}" if held else
               f"{len(wrong)} of {len(outcome.events)} not held by any window")]


def check_deferred(want: bool, outcome: Outcome) -> list[str]:
    if want and not outcome.deferred:
        return ["expected the alert workflows to be deferred (grouping.defer); nothing was"
                + ("" if outcome.planned else ": no action planned")]
    if not want and outcome.deferred:
        return [f"expected no deferral; deferred: {', '.join(outcome.deferred)}"]
    return []


def check_timers(wanted: list[ExpectTimer], planned: list[PlannedStep]) -> list[str]:
    timers = [s for s in planned if s.timer is not None]
    if not wanted:
        return [f"expected no timers; planned {len(timers)}"] if timers else []
    out = []
    for want in wanted:
        named = [s for s in timers if want.step in (s.timer.group, s.step_id)]  # type: ignore[union-attr]
        hit = [s for s in named if (want.after is None or abs(s.delay - want.after) < 1e-6)
               and (want.every is None or ((e := _every(s)) is not None and abs(e - want.every) < 1e-6))]
        if hit:
            continue
        what = f"expected timer {want.step}" + (f" after {span(want.after)}" if want.after is not None else "") + \
            (f" every {span(want.every)}" if want.every is not None else "")
        if not named:
            out.append(f"{what}: no such timer planned")
        else:
            got = sorted({(span(s.delay), span(e) if (e := _every(s)) is not None else None) for s in named},
                         key=str)
            out.append(f"{what}; planned after " + ", ".join(a + (f" every {e}" if e else "") for a, e in got))
    return out


def check(expect: Expect, outcome: Outcome, given: list[Outcome]) -> list[str]:
    """Every expectation that does not hold, in words (none: the case passes)."""
    out = check_actions(expect.actions, outcome.planned)
    out += check_not_actions(expect.not_actions, outcome.planned)
    if expect.incident is not None:
        out += check_incident(expect.incident, outcome, given)
    if expect.suppressed_by is not None:
        out += check_suppressed(expect.suppressed_by, outcome)
    if expect.deferred is not None:
        out += check_deferred(expect.deferred, outcome)
    if expect.timers is not None:
        out += check_timers(expect.timers, outcome.planned)
    return out
