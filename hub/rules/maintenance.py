"""Maintenance windows: what they match, when they are open (`maintenance:` in `hub.yaml`).

A window matches *alerts* only (`alert.*` and `heartbeat.*` kinds; an incident a person declared arrives as an
`incident.*` kind and is never held back) by service (catalog names or aliases), team (the catalog team of an
affected service), source and labels; each list that is given must hold, an empty one is
"any". A window must name at least one criterion, so a typo never silences everything.

A window is open between `start` and `end`, or — recurring — for `for` after each time the
five-field cron `every` fires in `timezone` (so a nightly 02:00 window stays at 02:00 local
time across a DST change; a start time the clocks skip opens no window that night, one they
repeat opens it once, at the first pass). The cron matcher is deliberately small: numbers, `*`, ranges,
lists and `/step`; day-of-month and day-of-week are combined as cron does (either matches
when both are restricted). Pure functions only: the worker (`hub.worker.quiet`) and the
operators (`hub.operators.maintenance`) read windows from here and from Redis.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AwareDatetime, Field, field_validator, model_validator

from hub.core.ruletypes import Strict, StrList
from hub.core.settings import parse_duration

#: Kinds a window can hold back: alerts (a missed heartbeat is one), never incidents (those a person declared).
QUIET_KINDS = ("alert.", "heartbeat.")
#: Longest recurring window: a cron window is found by looking back this far at most.
MAX_RECURRING_S = 24 * 3600
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_FIELDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))


class CronError(ValueError):
    """A cron expression the matcher does not read."""


def _cron_field(text: str, lo: int, hi: int) -> frozenset[int]:
    out: set[int] = set()
    for item in text.split(","):
        base, _, step_text = item.partition("/")
        step = int(step_text) if step_text.isdigit() and int(step_text) > 0 else None
        if step_text and step is None:
            raise CronError(f"bad step in {item!r}")
        if base == "*":
            a, b = lo, hi
        elif re.fullmatch(r"\d+-\d+", base):
            a, b = (int(x) for x in base.split("-"))
        elif base.isdigit():
            a = b = int(base)
            if step:
                b = hi
        else:
            raise CronError(f"cannot read {item!r} (numbers, *, a-b, lists and /step only)")
        if not (lo <= a <= b <= hi):
            raise CronError(f"{item!r} is outside {lo}-{hi}")
        out.update(range(a, b + 1, step or 1))
    return frozenset(out)


@dataclass(frozen=True)
class Cron:
    """A parsed five-field cron expression (minute hour day-of-month month day-of-week)."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday (7 folded onto 0)
    days_any: bool
    weekdays_any: bool

    @classmethod
    def parse(cls, text: str) -> Cron:
        parts = text.split()
        if len(parts) != 5:
            raise CronError("a cron expression has five fields: minute hour day month weekday")
        sets = [_cron_field(p, lo, hi) for p, (lo, hi) in zip(parts, _FIELDS, strict=True)]
        weekdays = frozenset(d % 7 for d in sets[4])
        return cls(sets[0], sets[1], sets[2], sets[3], weekdays, parts[2] == "*", parts[4] == "*")

    def fires(self, local: datetime) -> bool:
        """Does it fire at this local minute? (The second pass of an hour the clocks repeat never does.)"""
        if local.fold:
            return False
        if local.minute not in self.minutes or local.hour not in self.hours or local.month not in self.months:
            return False
        day = local.day in self.days
        weekday = (local.isoweekday() % 7) in self.weekdays
        if self.days_any or self.weekdays_any:
            return day and weekday
        return day or weekday

    def last_start(self, at: datetime, tz: ZoneInfo, within_s: float) -> datetime | None:
        """The latest firing in (at - within_s, at], as an aware UTC time; None when none."""
        minute = at.astimezone(UTC).replace(second=0, microsecond=0)
        earliest = at - timedelta(seconds=within_s)
        while minute > earliest:
            if self.fires(minute.astimezone(tz)):
                return minute
            minute -= timedelta(minutes=1)
        return None

    def next_start(self, after: datetime, tz: ZoneInfo, within_s: float = 8 * 86400) -> datetime | None:
        """The first firing after `after` (looking at most `within_s` ahead)."""
        minute = after.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
        last = after + timedelta(seconds=within_s)
        while minute <= last:
            if self.fires(minute.astimezone(tz)):
                return minute
            minute += timedelta(minutes=1)
        return None


class WindowMatch(Strict):
    """What a window holds back; each given list must match, an empty one matches any."""

    services: StrList = Field(default_factory=list, description="catalog names or aliases")
    teams: StrList = Field(default_factory=list, description="catalog teams of an affected service")
    sources: StrList = Field(default_factory=list, description="inbound source names (`/webhooks/{source}`)")
    labels: dict[str, str] = Field(default_factory=dict, description="every label must have this value")

    @model_validator(mode="after")
    def _something(self) -> WindowMatch:
        if not (self.services or self.teams or self.sources or self.labels):
            raise ValueError("a window must match something: give services, teams, sources or labels")
        return self


class MaintenanceWindow(Strict):
    """One window of the rules file: fixed (`start`/`end`) or recurring (`every`/`for`)."""

    name: str = Field(description="unique; shown on the events it suppresses")
    match: WindowMatch
    start: AwareDatetime | None = None
    end: AwareDatetime | None = None
    every: str | None = Field(None, description="five-field cron: minute hour day month weekday")
    for_: float | None = Field(None, alias="for", description="how long each recurring window lasts (≤ 24h)")
    timezone: str = Field("UTC", description="the IANA time zone `every` is read in")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("use letters, digits, . - and _ (at most 63)")
        return v

    @field_validator("for_", mode="before")
    @classmethod
    def _for(cls, v: Any) -> Any:
        if v is None:
            return v
        if isinstance(v, bool) or not isinstance(v, str | int | float):
            raise ValueError("not a duration (use e.g. 30m, 90m, 2h)")
        return parse_duration(v)

    @field_validator("every")
    @classmethod
    def _every(cls, v: str | None) -> str | None:
        if v is not None:
            Cron.parse(v)  # CronError is a ValueError: reported at its line
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise ValueError(f"unknown time zone {v!r}") from e
        return v

    @model_validator(mode="after")
    def _shape(self) -> MaintenanceWindow:
        fixed, recurring = self.start is not None or self.end is not None, self.every is not None
        if fixed == recurring:
            raise ValueError("give either start and end, or every and for")
        if fixed and (self.start is None or self.end is None or self.end <= self.start):
            raise ValueError("a fixed window needs start and end, end after start")
        if recurring and (self.for_ is None or not 0 < self.for_ <= MAX_RECURRING_S):
            raise ValueError("a recurring window needs `for`, more than 0 and at most 24h")
        return self

    def open_at(self, at: datetime) -> tuple[datetime, datetime] | None:
        """(start, end) of this window's occurrence open at `at`, else None."""
        if self.every is None:
            assert self.start is not None and self.end is not None
            return (self.start, self.end) if self.start <= at < self.end else None
        assert self.for_ is not None
        start = Cron.parse(self.every).last_start(at, ZoneInfo(self.timezone), self.for_)
        if start is None:
            return None
        end = start + timedelta(seconds=self.for_)
        return (start, end) if at < end else None

    def next_open(self, at: datetime) -> tuple[datetime, datetime] | None:
        """The next occurrence starting after `at` (fixed: only if it has not started)."""
        if self.every is None:
            assert self.start is not None and self.end is not None
            return (self.start, self.end) if self.start > at else None
        assert self.for_ is not None
        start = Cron.parse(self.every).next_start(at, ZoneInfo(self.timezone))
        return None if start is None else (start, start + timedelta(seconds=self.for_))


@dataclass(frozen=True)
class OpenWindow:
    """A window open now, from the file or made at run time, in the terms the worker uses."""

    id: str  # the file's name, or the runtime id (mw_…)
    name: str
    match: Mapping[str, Any]
    start_ms: int
    end_ms: int
    origin: str  # "file" or "api"
    reason: str = ""

    def view(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "match": dict(self.match), "start": self.start_ms,
                "end": self.end_ms, "origin": self.origin, "reason": self.reason}


def quietable(kind: str, source: str) -> bool:
    """Can a window hold back an event of this kind? (Alerts from any source; never an incident.)"""
    del source  # every source's alerts alike
    return kind.startswith(QUIET_KINDS)


def matches(match: Mapping[str, Any], *, services: Iterable[str], teams: Iterable[str], source: str,
            labels: Mapping[str, str]) -> bool:
    """Does an event with these facts fall under `match`? (services already canonical; casefolded compare)"""
    want_services = {s.casefold() for s in match.get("services") or []}
    if want_services and not want_services & {s.casefold() for s in services}:
        return False
    want_teams = {t.casefold() for t in match.get("teams") or []}
    if want_teams and not want_teams & {t.casefold() for t in teams}:
        return False
    want_sources = {s.casefold() for s in match.get("sources") or []}
    if want_sources and source.casefold() not in want_sources:
        return False
    return all(labels.get(k) == v for k, v in (match.get("labels") or {}).items())


def file_windows_open(windows: Iterable[MaintenanceWindow], at_ms: int) -> list[OpenWindow]:
    """The file's windows open at `at_ms`."""
    at = datetime.fromtimestamp(at_ms / 1000, UTC)
    out = []
    for w in windows:
        span = w.open_at(at)
        if span is not None:
            out.append(OpenWindow(w.name, w.name, w.match.model_dump(), int(span[0].timestamp() * 1000),
                                  int(span[1].timestamp() * 1000), "file"))
    return out


def file_windows_upcoming(windows: Iterable[MaintenanceWindow], at_ms: int) -> list[OpenWindow]:
    """The next occurrence of each file window that is not open at `at_ms`."""
    at = datetime.fromtimestamp(at_ms / 1000, UTC)
    out = []
    for w in windows:
        if w.open_at(at) is None and (span := w.next_open(at)) is not None:
            out.append(OpenWindow(w.name, w.name, w.match.model_dump(), int(span[0].timestamp() * 1000),
                                  int(span[1].timestamp() * 1000), "file"))
    return out
