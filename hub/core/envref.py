"""`env:NAME` references in hub.yaml, read from the same environment the settings read.

The settings (pydantic-settings) take a variable from the process environment, else from
`.env` in the working directory. A reference in the rules file must see exactly that, or a
team key kept in `.env` would be "unset" for the rules and the hub would page with the
global key instead: one resolver, used by `validate`, the worker's start-up check and the
planner alike.

`env:NAME` must resolve (an unresolved one is a rules error); `env:NAME?` may be unset, and
then the reference counts as not configured (the workflow's fallback applies, and is
recorded on the timeline).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from dotenv import dotenv_values

ENV_REF = re.compile(r"^env:([A-Za-z_][A-Za-z0-9_]*)(\?)?$")


@dataclass(frozen=True)
class EnvRef:
    name: str
    optional: bool

    def __str__(self) -> str:
        return f"env:{self.name}{'?' if self.optional else ''}"


def parse(value: str | None) -> EnvRef | None:
    """The reference in `value`, or None for a literal (or an empty value)."""
    m = ENV_REF.match(value or "")
    return EnvRef(m.group(1), bool(m.group(2))) if m else None


def looks_like_ref(value: str | None) -> bool:
    """Written as a reference (`env:…`), valid or not."""
    return bool(value) and str(value).startswith("env:")


def _env_files() -> list[Path]:
    from hub.core.settings import Settings

    files = Settings.model_config.get("env_file")
    if files is None:
        return []
    if isinstance(files, str | os.PathLike):
        files = [files]
    return [Path(f) for f in files]  # type: ignore[union-attr]


_cache: dict[Path, tuple[tuple[int, int], dict[str, str]]] = {}


def _dotenv(path: Path) -> dict[str, str]:
    """The file's variables, re-read only when it changes (planning asks on every event)."""
    try:
        st = path.stat()
    except OSError:
        return {}
    stamp = (st.st_mtime_ns, st.st_size)
    hit = _cache.get(path.resolve())
    if hit and hit[0] == stamp:
        return hit[1]
    values = {k: v for k, v in dotenv_values(path, encoding="utf-8").items() if v is not None}
    _cache[path.resolve()] = (stamp, values)
    return values


class _Environment(Mapping[str, str]):
    """The process environment over the `.env` files, read on demand: planning builds one per
    catalog view, and most views never look a variable up (no copy of `os.environ`, and the
    files are looked at only on the first lookup the process environment cannot answer)."""

    def __init__(self) -> None:
        self._files: dict[str, str] | None = None

    def _from_files(self) -> dict[str, str]:
        if self._files is None:
            merged: dict[str, str] = {}
            for path in _env_files():
                merged.update(_dotenv(path))
            self._files = merged
        return self._files

    def __getitem__(self, name: str) -> str:
        value = os.environ.get(name)
        return value if value is not None else self._from_files()[name]

    def __iter__(self) -> Iterator[str]:
        return iter({**self._from_files(), **os.environ})

    def __len__(self) -> int:
        return len({**self._from_files(), **os.environ})


def environment() -> Mapping[str, str]:
    """The variables the settings see: `.env` files, overridden by the process environment."""
    return _Environment()


def lookup(name: str, env: Mapping[str, str] | None = None) -> str | None:
    """A variable's value (None when unset or empty)."""
    return (env if env is not None else environment()).get(name) or None


def resolve(value: str | None, env: Mapping[str, str] | None = None) -> str | None:
    """`env:NAME` / `env:NAME?` → the variable's value (None when unset); a literal stays as written."""
    if not value:
        return None
    ref = parse(value)
    if ref is None:
        return value
    return lookup(ref.name, env)
