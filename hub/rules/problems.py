"""What the rules loader, its checks and the engine share: a problem, a path into the document,
where each path starts in the file, and a loaded document. A module of its own so that
`checks` does not import `loader` (nor `loader` import `checks` lazily), and the engine does
not import the loader at all."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hub.rules.model import HubConfig

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the rules file (`severity` "error") or worth a look ("warning")."""

    line: int
    column: int
    path: str
    message: str
    hint: str = ""
    severity: str = "error"

    def format(self, filename: str) -> str:
        where = f"{filename}:{self.line}:{self.column}"
        text = f"{where}: {self.severity}: {self.message}" + (f" (at {self.path})" if self.path else "")
        return text + (f"\n    hint: {self.hint}" if self.hint else "")


@dataclass
class Positions:
    """Where each value (and each mapping key) of the document starts, by path."""

    values: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    #: Values written as literal block scalars (`|`): their text's line n is the file's line + n.
    literal: set[Path_] = field(default_factory=set)

    def find(self, path: Path_, *, key: bool = False) -> tuple[int, int]:
        """The closest known position: the path itself, else its nearest ancestor."""
        p = tuple(path)
        while True:
            if key and p in self.keys:
                return self.keys[p]
            if p in self.values:
                return self.values[p]
            if not p:
                return (1, 1)
            p = p[:-1]


def dotted(path: Path_) -> str:
    """`a.b[0].c`: a path as the problem reports print it."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


@dataclass
class Loaded:
    """A rules document read and checked: its config, positions, warnings and where it came from."""

    config: HubConfig
    positions: Positions
    warnings: list[Problem]
    source: str
