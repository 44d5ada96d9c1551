"""Severity mapping for every inbound source, in one place.

Order of precedence: the catalog's `severity_map` (exact key, then case-insensitive), then
the source's built-in map (case-insensitive), then the source's fallback or the catalog's
`default_severity`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connectors._options import parse_severity
from hub.core.events import Severity

SEV1, SEV2, SEV3, SEV4 = Severity.SEV1, Severity.SEV2, Severity.SEV3, Severity.SEV4

#: Datadog monitor priority (also PagerDuty's default priority names).
PRIORITY_MAP: dict[str, Severity] = {"p1": SEV1, "p2": SEV2, "p3": SEV3, "p4": SEV4, "p5": SEV4}
#: Grafana / Alertmanager `severity` label values.
ALERT_LABEL_MAP: dict[str, Severity] = {"critical": SEV1, "error": SEV2, "high": SEV2, "major": SEV2,
                                        "warning": SEV3, "minor": SEV3}
#: incident.io's default severity names (ranks 3, 2, 1 in a new account).
INCIDENTIO_NAME_MAP: dict[str, Severity] = {"critical": SEV1, "major": SEV2, "minor": SEV3}


def _override(options: Mapping[str, Any], value: str) -> Severity | None:
    table = options.get("severity_map")
    if not isinstance(table, Mapping):
        return None
    if value in table:
        return parse_severity(table[value])
    folded = value.casefold()
    for key, sev in table.items():
        if str(key).strip().casefold() == folded:
            return parse_severity(sev)
    return None


def default_severity(options: Mapping[str, Any], fallback: Severity | None) -> Severity | None:
    configured = parse_severity(options.get("default_severity"))
    return configured or fallback


def lookup_severity(value: Any, options: Mapping[str, Any], builtin: Mapping[str, Severity]) -> Severity | None:
    """The catalog's or the built-in severity for a source value; None when neither knows it."""
    text = "" if value is None else str(value).strip()
    if not text:
        return None
    return _override(options, text) or builtin.get(text.casefold())


def map_severity(value: Any, options: Mapping[str, Any], builtin: Mapping[str, Severity],
                 fallback: Severity | None) -> Severity | None:
    """The severity for a source value such as `P2`, `critical` or `Major`, else the default."""
    return lookup_severity(value, options, builtin) or default_severity(options, fallback)


def severity_by_rank(rank: int | None, top_rank: int) -> Severity | None:
    """incident.io ranks grow with severity: `top_rank` is SEV1, each rank below one step less, floor SEV4."""
    if rank is None:
        return None
    return Severity(f"SEV{min(4, max(1, 1 + top_rank - rank))}")
