"""The rules engine: the catalog and workflows of `hub.yaml`, and what they make the hub do.

`load_rules(settings.rules_path())` loads the file the settings name (HUB_CONFIG, else
./hub.yaml, else the built-in defaults in `defaults.yaml`); `load_rules(None)` loads the
built-in defaults. It raises RulesError listing every problem with its line and column.
"""

from __future__ import annotations

from pathlib import Path

from hub.rules.engine import PlannedStep, Rules, World
from hub.rules.loader import DEFAULTS_PATH, Problem, RulesError, load_file, load_text

__all__ = ["DEFAULTS_PATH", "PlannedStep", "Problem", "Rules", "RulesError", "World", "load_file", "load_rules",
           "load_text"]


def load_rules(path: Path | None) -> Rules:
    """The rules at `path` (None: the built-in defaults); RulesError when invalid."""
    return Rules(load_file(path))
