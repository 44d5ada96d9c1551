"""Discovers connector modules: each may define `source` (inbound) and/or `connector` (outbound).

Adding a system means adding one module to `connectors/`; nothing here changes.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache

import connectors
from connectors.base import Connector, InboundSource


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
def connector_classes() -> dict[str, type[Connector]]:
    found = {}
    for mod in _modules():
        cls = getattr(mod, "connector", None)
        if isinstance(cls, type) and issubclass(cls, Connector):
            found[cls.name] = cls
    return found
