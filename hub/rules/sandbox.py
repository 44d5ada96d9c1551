"""The Jinja sandbox a step's template renders in, and the limits that keep it safe.

Jinja's immutable sandbox: templates read the context and call a few filters; they cannot
reach Python internals, mutate anything, import or evaluate code. Unknown names fail loudly
at render time (StrictUndefined).

Escaping: `environment(fmt)` escapes every `{{ }}` output for the format `fmt` (hub.escape),
and `escape_value(fmt)` does the same to a value kept whole; text the operator wrote in
hub.yaml (`Trusted`) is never escaped.

Bounds: a template cannot build huge values: `*`, `**` and `%` are checked before they run
(at most MAX_OUTPUT characters or items, exponents up to 64 bits of result, no format
widths over 4 digits), as are the padding filters; `TemplateTooLarge` says so.

`hub.rules.templating` renders templates with this environment (or without it, for plain
lookups) and reads what they refer to.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined
from jinja2.filters import do_center, do_format, do_indent
from jinja2.sandbox import ImmutableSandboxedEnvironment

from hub.core.escape import formats

#: Filters the hub adds to Jinja's built-in ones.
HUB_FILTERS = ("duration", "pd_severity", "og_priority", "component_status", "iso")

PD_SEVERITY = {"SEV1": "critical", "SEV2": "error", "SEV3": "warning", "SEV4": "info"}
OG_PRIORITY = {"SEV1": "P1", "SEV2": "P2", "SEV3": "P3", "SEV4": "P4"}


def _duration(value: Any) -> str:
    """Seconds (or a timedelta) as `1h 05m`, `12m 30s`, `45s`."""
    if value is None or value == "":
        return ""
    seconds = int(value.total_seconds() if isinstance(value, timedelta) else float(value))
    h, rem = divmod(max(0, seconds), 3600)
    m, s = divmod(rem, 60)
    if h:
        return f"{h}h {m:02d}m"
    return f"{m}m {s:02d}s" if m else f"{s}s"


def _pd_severity(value: Any) -> str:
    return PD_SEVERITY.get(str(value), "error")


def _og_priority(value: Any) -> str:
    return OG_PRIORITY.get(str(value), "P3")


def _component_status(ids: Any, status: str = "major_outage") -> dict[str, str]:
    """A status page's `components` from a list of component ids: {id: status}."""
    return {str(i): status for i in (ids or [])}


def _iso(ms: Any) -> str:
    """Epoch milliseconds as ISO 8601 (UTC)."""
    if ms in (None, ""):
        return ""
    return datetime.fromtimestamp(float(ms) / 1000, UTC).isoformat(timespec="seconds")


def _date_in(hours: Any, base_ms: Any = None) -> str:
    """The date `hours` from now (or from `base_ms`), as YYYY-MM-DD (a ticket's due date)."""
    base = datetime.fromtimestamp(float(base_ms) / 1000, UTC) if base_ms else datetime.now(UTC)
    return (base + timedelta(hours=float(hours))).date().isoformat()


#: The longest text (or list) a template may build.
MAX_OUTPUT = 100_000
_BIG_WIDTH = re.compile(r"%[-#0 +]*(?:\d{5,}|\*)|%[-#0 +]*\d*\.\d{5,}|\{[^{}]*[:.][^{}]*\d{5,}[^{}]*\}")


class TemplateTooLarge(ValueError):
    """A template would build a value longer than MAX_OUTPUT (or an absurd number)."""


class Trusted(str):
    """Text the operator wrote in hub.yaml (catalog entries): never escaped when interpolated."""

    __slots__ = ()


def trusted(value: Any) -> Any:
    """`value` with every string inside it marked Trusted."""
    if isinstance(value, str):
        return Trusted(value)
    if isinstance(value, dict):
        return {k: trusted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [trusted(v) for v in value]
    return value


def _size(value: Any) -> int:
    return len(value) if isinstance(value, str | bytes | list | tuple) else 0


def _mul(left: Any, right: Any) -> Any:
    for seq, n in ((left, right), (right, left)):
        if _size(seq) and isinstance(n, int) and _size(seq) * n > MAX_OUTPUT:
            raise TemplateTooLarge(f"template builds a value over {MAX_OUTPUT} characters (repetition)")
    return operator.mul(left, right)


def _pow(left: Any, right: Any) -> Any:
    if isinstance(left, int | float) and isinstance(right, int | float) and abs(left) > 1 \
            and right * math.log2(abs(left)) > 64:
        raise TemplateTooLarge("template computes a number over 64 bits (power)")
    return operator.pow(left, right)


def _mod(left: Any, right: Any) -> Any:
    if isinstance(left, str) and _BIG_WIDTH.search(left):
        raise TemplateTooLarge("template uses a format width over 4 digits")
    return operator.mod(left, right)


def _format(value: Any, *args: Any, **kwargs: Any) -> str:
    if _BIG_WIDTH.search(str(value)):
        raise TemplateTooLarge("template uses a format width over 4 digits")
    return do_format(value, *args, **kwargs)


def _bounded_width(fn: Callable[..., str], position: int, name: str) -> Callable[..., str]:
    def bounded(*args: Any, **kwargs: Any) -> str:
        width = kwargs.get(name, args[position] if len(args) > position else None)
        if isinstance(width, int) and width > MAX_OUTPUT:
            raise TemplateTooLarge(f"template pads to over {MAX_OUTPUT} characters")
        if isinstance(width, str) and len(width) * (str(args[0]).count("\n") + 1) > MAX_OUTPUT:
            raise TemplateTooLarge(f"template pads to over {MAX_OUTPUT} characters")
        return fn(*args, **kwargs)
    bounded.__name__ = fn.__name__
    return bounded


class _Env(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "%"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.binop_table.update({"*": _mul, "**": _pow, "%": _mod})

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is not None and _BIG_WIDTH.search(str(getattr(value, "__self__", ""))):
            raise TemplateTooLarge("template uses a format width over 4 digits")
        return wrapped

    def getattr(self, obj: Any, attribute: str) -> Any:
        # `steps.update` or `event.items` mean the key, never the dict method of that name.
        if isinstance(obj, Mapping) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        # Only data: mapping keys and plain attributes, never anything private or callable.
        return not attr.startswith("_") and not callable(value) and super().is_safe_attribute(obj, attr, value)


def escape_value(fmt: str | None) -> Callable[[Any], Any]:
    """What an interpolated value becomes in a parameter of format `fmt` (identity for None)."""
    if fmt is None:
        return lambda v: v
    fn = formats()[fmt]

    def esc(value: Any) -> Any:
        if isinstance(value, Trusted):
            return value
        if isinstance(value, str):
            return fn(value)
        if isinstance(value, dict):
            return {k: esc(v) for k, v in value.items()}
        if isinstance(value, list):
            return [esc(v) for v in value]
        return value
    return esc


@lru_cache(maxsize=8)
def environment(fmt: str | None = None) -> _Env:
    """The sandbox; with `fmt`, every `{{ }}` output is escaped for that format (Trusted text kept)."""
    finalize = None
    if fmt is not None:
        esc = formats()[fmt]

        def finalize(value: Any) -> Any:
            if isinstance(value, (Trusted, Placeholder, bool, int, float)) or value is None:
                return value
            return esc(value if isinstance(value, str) else str(value))
    env = _Env(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False, finalize=finalize)
    env.filters.update(duration=_duration, pd_severity=_pd_severity, og_priority=_og_priority,
                       component_status=_component_status, iso=_iso,
                       center=_bounded_width(do_center, 1, "width"), indent=_bounded_width(do_indent, 1, "width"),
                       format=_format)
    env.globals.clear()
    env.globals.update(date_in=_date_in)
    return env


_PLAIN = frozenset({str, int, float, bool, type(None)})
_SEQUENCES = (list, tuple)
_SCALARS = (str, int, float, bool)


def native(value: Any) -> Any:
    """Plain JSON-able data out of an expression result."""
    kind = type(value)
    if kind in _PLAIN:  # the common case, decided without the ABC check below
        return value
    if kind is dict or isinstance(value, Mapping):
        return {str(k): native(v) for k, v in value.items()}
    if isinstance(value, _SEQUENCES):
        return [native(v) for v in value]
    if isinstance(value, _SCALARS):
        return value
    return str(value)


class Placeholder:
    """Stands in for a value only known when the action runs (an earlier step's result), in dry runs."""

    def __init__(self, path: str) -> None:
        self._path = path

    def __getattr__(self, name: str) -> Placeholder:
        if name.startswith("_"):
            raise AttributeError(name)
        return Placeholder(f"{self._path}.{name}")

    def __getitem__(self, key: Any) -> Placeholder:
        return Placeholder(f"{self._path}.{key}")

    def __str__(self) -> str:
        return f"<{self._path}>"

    def __iter__(self) -> Any:
        return iter(())

    def __bool__(self) -> bool:
        return True


class PlaceholderSteps(dict):  # type: ignore[type-arg]
    """`steps` in a dry run: any step's fields render as `<steps.open.result.id>`."""

    def __missing__(self, key: str) -> Placeholder:
        return Placeholder(f"steps.{key}")

    def __getattr__(self, name: str) -> Any:
        return self[name]
