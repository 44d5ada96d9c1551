"""Escaping of outbound text, one function per destination format.

Payload text (alert titles, incident names, git refs, messages) is data: wherever it
lands it must read as text and never as markup of that destination. Each format is escaped
in one place: the formats of an outside system live in its connector module (declared in
`Connector.formats`, e.g. a chat's markup, a tracker's wiki markup, a public page's plain
text); the hub's own, and what they share, are here:

- `safe_http_url`: an absolute http(s) URL, or None (links are built only from these).
- `terminal`: control characters (ESC sequences, C0 and C1 codes, bidi overrides) are
  removed; newline and tab stay.

Which parameters of which action are in which format is declared by each connector
(`Connector.markup`); the templating escapes values interpolated into those parameters
while the operator's own literal text in hub.yaml is kept as written.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from urllib.parse import urlsplit


def safe_http_url(url: str) -> str | None:
    """`url` when it is an absolute http(s) URL with a host, else None."""
    try:
        parts = urlsplit(str(url).strip())
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    return str(url).strip()


# -- terminals ----------------------------------------------------------------------------------

_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def terminal(text: str) -> str:
    """Text safe to print on a terminal: control characters removed (newline and tab kept)."""
    return _CONTROL.sub("", str(text))


#: The hub's own formats; connectors add theirs (`Connector.formats`, see `formats()`).
FORMATS: dict[str, Callable[[str], str]] = {"terminal": terminal}


@lru_cache(maxsize=1)
def formats() -> dict[str, Callable[[str], str]]:
    """Format names as connectors declare them (`Connector.markup`) → the escape function."""
    from hub.core.registry import connector_classes

    out = dict(FORMATS)
    for cls in connector_classes().values():
        out.update(cls.formats)
    return out
