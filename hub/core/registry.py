"""Discovers connector modules: each may define `source` (inbound) and/or `connector` (outbound).

Adding a system means adding one module to `connectors/` (any directory on the package's
`__path__`); nothing here changes. The core reads what the modules declare: their settings
(`variables`), actions, rate limits, what a resolution supersedes and what a step may record.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache
from typing import Any

import connectors
from connectors.base import Connector, InboundSource, InteractionSource, Record, Setting


@lru_cache(maxsize=1)
def _modules() -> tuple[object, ...]:
    mods = []
    for info in sorted(pkgutil.iter_modules(connectors.__path__), key=lambda i: i.name):
        if info.name.startswith("_") or info.name == "base":
            continue
        mods.append(importlib.import_module(f"connectors.{info.name}"))
    return tuple(mods)


@lru_cache(maxsize=1)
def sources() -> dict[str, InboundSource]:
    found = {}
    for mod in _modules():
        src = getattr(mod, "source", None)
        if isinstance(src, InboundSource):
            found[src.name] = src
    return found


@lru_cache(maxsize=1)
def interaction_sources() -> dict[str, InteractionSource]:
    """Modules' `interactions`: endpoints where people act on incidents from a tool's messages."""
    found = {}
    for mod in _modules():
        src = getattr(mod, "interactions", None)
        if isinstance(src, InteractionSource):
            found[src.name] = src
    return found


@lru_cache(maxsize=1)
def connector_classes() -> dict[str, type[Connector]]:
    found = {}
    for mod in _modules():
        cls = getattr(mod, "connector", None)
        if isinstance(cls, type) and issubclass(cls, Connector):
            found[cls.name] = cls
    return found


@lru_cache(maxsize=1)
def variables() -> tuple[Setting, ...]:
    """Every environment variable the sources and connectors declare, in discovery order."""
    found: dict[str, Setting] = {}
    for declared in (*sources().values(), *connector_classes().values()):
        for setting in declared.variables:
            found.setdefault(setting.env, setting)
    return tuple(found.values())


@lru_cache(maxsize=1)
def superseded_by_resolution() -> frozenset[str]:
    """`connector.action` names whose pending retry an incident's resolution drops."""
    return frozenset(f"{name}.{action}" for name, cls in connector_classes().items()
                     for action in cls.superseded_by_resolution)


@lru_cache(maxsize=1)
def recorded_fields() -> dict[str, Record]:
    """Incident fields the connectors let a step `record:`, and how each is written."""
    return {field: how for cls in connector_classes().values() for field, how in cls.recorded.items()}


@lru_cache(maxsize=1)
def linked_incident_fields() -> dict[str, str]:
    """Inbound source → the incident field holding the id of that source's incident (`Record.links_source`)."""
    return {how.links_source: field for field, how in recorded_fields().items() if how.links_source}


def incident_result_fields() -> dict[str, Any]:
    """The incident fields the connectors' results fill, with their empty value (None, or [] for a list)."""
    out: dict[str, Any] = {}
    for field, how in recorded_fields().items():
        if how.append_to:
            out[how.append_to] = []
        else:
            out[field] = None
    return out


@lru_cache(maxsize=8)
def catalog_places(place: str) -> tuple[tuple[type[Connector], tuple[str, ...]], ...]:
    """Per connector with keys at `place`: the class and the names of its `env:` reference keys there."""
    return tuple((cls, tuple(f.name for f in cls.catalog_fields if place in f.on and f.secret_ref))
                 for cls in connector_classes().values() if any(place in f.on for f in cls.catalog_fields))


@lru_cache(maxsize=1)
def condition_paths() -> tuple[tuple[str, str], ...]:
    """(condition key, view path) of the workflow conditions the connectors add."""
    return tuple((f.name, f.condition_path) for cls in connector_classes().values() for f in cls.catalog_fields
                 if "condition" in f.on and f.condition_path)


@lru_cache(maxsize=1)
def page_actions() -> frozenset[str]:
    """`connector.action` names that page a person (`Connector.page_action`)."""
    return frozenset(f"{name}.{cls.page_action}" for name, cls in connector_classes().items() if cls.page_action)


def global_target(connector: str) -> tuple[str, str] | None:
    """(parameter, variable) of a connector's target with a global default, else None."""
    cls = connector_classes().get(connector)
    return cls.global_target if cls is not None else None


def reset() -> None:
    """Forget what was discovered (after a directory was added to `connectors.__path__`)."""
    for cached in (_modules, sources, interaction_sources, connector_classes, variables, superseded_by_resolution,
                   recorded_fields, page_actions, condition_paths, linked_incident_fields, catalog_places):
        cached.cache_clear()
    from hub.core import escape, settings

    settings.settings_model.cache_clear()
    escape.formats.cache_clear()
