"""Reading and checking a source's catalog options (its section of the rules file).

Every option is optional. A wrong value never stops an event from being processed: readers
fall back to the default, and `check_options` names the problem so `incident-hub validate`
can report it before it matters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from hub.core.events import Severity

OptionKind = Literal["severity_map", "severity", "text", "text_list", "int"]

#: Options every source understands.
COMMON_OPTIONS: dict[str, OptionKind] = {"severity_map": "severity_map", "default_severity": "severity"}


def parse_severity(value: Any) -> Severity | None:
    """`SEV1`, `sev1`, `Sev 1`, `1` → Severity.SEV1; anything else → None."""
    if isinstance(value, Severity):
        return value
    if isinstance(value, bool) or value is None:
        return None
    text = str(value).strip().upper().replace(" ", "").replace("-", "")
    if text.isdigit():
        text = "SEV" + text
    try:
        return Severity(text)
    except ValueError:
        return None


def text(options: Mapping[str, Any], key: str, default: str) -> str:
    value = options.get(key)
    return value.strip() if isinstance(value, str) and value.strip() else default


def text_list(options: Mapping[str, Any], key: str, default: Sequence[str]) -> tuple[str, ...]:
    """A list option that may also be written as one string."""
    value = options.get(key)
    if isinstance(value, str) and value.strip():
        return (value.strip(),)
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return tuple(v.strip() for v in value if v.strip())
    return tuple(default)


def integer(options: Mapping[str, Any], key: str, default: int) -> int:
    value = options.get(key)
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return default


def check_options(options: Any, spec: Mapping[str, OptionKind]) -> list[str]:
    """One sentence per problem in a source's options (unknown key, wrong type, bad severity)."""
    if options is None:
        return []
    if not isinstance(options, Mapping):
        return [f"options must be a mapping, not {type(options).__name__}"]
    problems = []
    for key, value in options.items():
        kind = spec.get(key)
        if kind is None:
            problems.append(f"unknown option {key!r} (known: {', '.join(sorted(spec))})")
        elif kind == "severity_map":
            if not isinstance(value, Mapping):
                problems.append(f"{key} must map source values to SEV1..SEV4")
                continue
            for k, v in value.items():
                if parse_severity(v) is None:
                    problems.append(f"{key}[{k!r}]: {v!r} is not one of SEV1, SEV2, SEV3, SEV4")
        elif kind == "severity" and parse_severity(value) is None:
            problems.append(f"{key}: {value!r} is not one of SEV1, SEV2, SEV3, SEV4")
        elif kind == "text" and not (isinstance(value, str) and value.strip()):
            problems.append(f"{key} must be a non-empty string")
        elif kind == "text_list" and not (
            (isinstance(value, str) and value.strip())
            or (isinstance(value, list | tuple) and value and all(isinstance(v, str) and v.strip() for v in value))
        ):
            problems.append(f"{key} must be a string or a list of strings")
        elif kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
            problems.append(f"{key} must be an integer")
    return problems
