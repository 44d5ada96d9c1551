"""The test-case files of `incident-hub test`: their format, and reading them.

A file is a mapping with `cases:`, each case a webhook (`source`, `payload`, optional
`headers`, `at`, `given` earlier webhooks) and what its plan must show (`expect`). The
format is checked here, before anything is planned: a file that cannot be read is
`CaseFileError` (the command's exit 2), never a failed case.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hub.core.registry import sources
from hub.core.settings import parse_duration
from hub.rules.storm_source import SOURCE as STORM_SOURCE


class CaseFileError(Exception):
    """A test file that cannot be used: bad YAML, an unknown key or source, a missing payload file."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _duration(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("not a duration (use e.g. 30s, 5m, 1h)")
    try:
        return parse_duration(value)
    except ValueError as e:
        raise ValueError(f"{value!r} is not a duration (use e.g. 30s, 5m, 1h)") from e


class Webhook(_Strict):
    """One delivery: a case's own, or one of its `given`."""

    source: str
    payload: dict[str, Any] | list[Any] | str = Field(description="the body, or a file relative to the test file")
    headers: dict[str, str] = Field(default_factory=dict)
    content_type: str = "application/json"
    at: datetime | None = Field(None, description="when it arrives (ISO 8601; no zone: UTC)")

    @field_validator("source")
    @classmethod
    def _known_source(cls, v: str) -> str:
        # the webhook sources, as in POST /webhooks/SOURCE, and the hub's own storm summaries
        known = sorted([*sources(), STORM_SOURCE])
        if v not in known:
            raise ValueError(f"unknown source {v!r}; one of {', '.join(known)}")
        return v

    @field_validator("at")
    @classmethod
    def _utc(cls, v: datetime | None) -> datetime | None:
        return v.replace(tzinfo=UTC) if v is not None and v.tzinfo is None else v


class ExpectAction(_Strict):
    action: str = Field(description="connector.action, as `simulate` shows it")
    with_: dict[str, Any] = Field(default_factory=dict, alias="with", description="a subset of the parameters")
    workflow: str | None = None
    step: str | None = None


class ExpectTimer(_Strict):
    step: str = Field(description="the delayed step's id (or one of its actions' ids)")
    after: float | None = None
    every: float | None = None

    @field_validator("after", "every", mode="before")
    @classmethod
    def _seconds(cls, v: Any) -> float | None:
        return None if v is None else _duration(v)


class Joins(_Strict):
    joins: int | str = Field(description="the index of a `given` webhook, or an incident key")


class Expect(_Strict):
    actions: list[ExpectAction] = Field(default_factory=list)
    not_actions: list[str] = Field(default_factory=list)
    incident: str | Joins | None = None
    suppressed_by: str | None = None
    deferred: bool | None = None
    timers: list[ExpectTimer] | None = None

    @field_validator("incident")
    @classmethod
    def _opens(cls, v: Any) -> Any:
        if isinstance(v, str) and v != "opens":
            raise ValueError("use `opens` or `{joins: <given index or key>}`")
        return v


class Case(Webhook):
    name: str
    given: list[Webhook] = Field(default_factory=list)
    expect: Expect
    modes: list[str] = Field(default_factory=list, description="connector modes switched on for this case, as "
                                                               "`configured:` conditions name them (e.g. a mode a "
                                                               "connector's settings turn on)")
    unconfigured: list[str] = Field(default_factory=list, description="connectors treated as not configured for "
                                                                      "this case (their settings unset)")

    @field_validator("modes")
    @classmethod
    def _mode_names(cls, v: list[str]) -> list[str]:
        for mode in v:
            if mode.count(".") != 1 or not all(mode.split(".")):
                raise ValueError(f"{mode!r}: a mode is written connector.mode")
        return v


class CaseFile(_Strict):
    cases: list[Case]


@dataclass(frozen=True)
class LoadedCase:
    file: Path
    case: Case

    @property
    def suite(self) -> str:
        return self.file.stem


def _json_scalar(value: Any) -> str:
    """A YAML scalar JSON has no type for: an unquoted timestamp is sent as the ISO text it was."""
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"a {type(value).__name__} value has no JSON form")


def body_of(hook: Webhook, base: Path) -> bytes:
    """The request body: an inline payload as JSON, else the file it names (relative to the test file)."""
    if not isinstance(hook.payload, str):
        try:
            return json.dumps(hook.payload, default=_json_scalar).encode()
        except (TypeError, ValueError) as e:
            raise CaseFileError(f"the payload cannot be sent as JSON: {e}") from None
    path = base / hook.payload
    try:
        return path.read_bytes()
    except OSError as e:
        raise CaseFileError(f"payload file {hook.payload!r}: {e.strerror or e}") from None


def load(path: Path) -> tuple[list[LoadedCase], dict[tuple[Path, str, int | None], bytes]]:
    """The cases of one file, and every payload's body by (file, case name, given index)."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise CaseFileError(f"{path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise CaseFileError(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as e:
        raise CaseFileError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict) or "cases" not in raw:
        raise CaseFileError(f"{path}: a test file is a mapping with `cases:` (a list of cases)")
    try:
        parsed = CaseFile.model_validate(raw)
    except ValidationError as e:
        lines = [f"{path}: {len(e.errors())} problem{'s' if len(e.errors()) != 1 else ''}"]
        for err in e.errors():
            where = ".".join(str(p) for p in err["loc"])
            lines.append(f"  {where}: {err['msg']}")
        raise CaseFileError("\n".join(lines)) from None
    names = [c.name for c in parsed.cases]
    if dupes := sorted({n for n in names if names.count(n) > 1}):
        raise CaseFileError(f"{path}: case names must be unique in a file: {', '.join(dupes)}")
    bodies: dict[tuple[Path, str, int | None], bytes] = {}
    for case in parsed.cases:
        try:
            bodies[(path, case.name, None)] = body_of(case, path.parent)
            for i, given in enumerate(case.given):
                bodies[(path, case.name, i)] = body_of(given, path.parent)
        except CaseFileError as e:
            raise CaseFileError(f"{path}: case {case.name!r}: {e}") from None
        joins = case.expect.incident
        if isinstance(joins, Joins) and isinstance(joins.joins, int) and not 0 <= joins.joins < len(case.given):
            raise CaseFileError(f"{path}: case {case.name!r}: joins: {joins.joins} is not the index of a `given` "
                                f"webhook (it has {len(case.given)})")
    return [LoadedCase(path, c) for c in parsed.cases], bodies


def collect(paths: list[Path]) -> list[Path]:
    """The test files: each file named, and the *.yaml / *.yml files under each directory (sorted)."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.suffix in (".yaml", ".yml") and f.is_file())
        elif p.exists():
            out.append(p)
        else:
            raise CaseFileError(f"{p}: no such file or directory")
    if not out:
        raise CaseFileError(f"no test files (*.yaml) in {', '.join(map(str, paths))}")
    return out
