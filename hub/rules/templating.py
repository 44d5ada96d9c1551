"""A tiny, safe templating for step parameters: `{{ event.title }}`, `{{ incident.key }}`, filters.

Jinja's immutable sandbox: templates read the context and call a few filters; they cannot
reach Python internals, mutate anything, import or evaluate code. A string that is exactly
one `{{ expression }}` keeps the expression's type (a list of component ids stays a list);
any other string renders to text. Unknown names fail loudly at render time (StrictUndefined),
and `incident-hub validate` checks names and step references before anything runs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

#: The names a template may use (the render context's top level).
ROOTS = ("event", "incident", "service", "services", "team", "steps", "deploy", "deploys", "now", "occurrence",
         "workflow")

_SINGLE = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\}\}).)*)\}\}\s*$", re.DOTALL)

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
    """Statuspage `components` from a list of component ids: {id: status}."""
    return {str(i): status for i in (ids or [])}


def _iso(ms: Any) -> str:
    """Epoch milliseconds as ISO 8601 (UTC)."""
    if ms in (None, ""):
        return ""
    return datetime.fromtimestamp(float(ms) / 1000, UTC).isoformat(timespec="seconds")


def _date_in(hours: Any, base_ms: Any = None) -> str:
    """The date `hours` from now (or from `base_ms`), as YYYY-MM-DD (Jira's duedate)."""
    base = datetime.fromtimestamp(float(base_ms) / 1000, UTC) if base_ms else datetime.now(UTC)
    return (base + timedelta(hours=float(hours))).date().isoformat()


class _Env(ImmutableSandboxedEnvironment):
    def getattr(self, obj: Any, attribute: str) -> Any:
        # `steps.update` or `event.items` mean the key, never the dict method of that name.
        if isinstance(obj, Mapping) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        # Only data: mapping keys and plain attributes, never anything private or callable.
        return not attr.startswith("_") and not callable(value) and super().is_safe_attribute(obj, attr, value)


@lru_cache(maxsize=1)
def environment() -> _Env:
    env = _Env(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)
    env.filters.update(duration=_duration, pd_severity=_pd_severity, og_priority=_og_priority,
                       component_status=_component_status, iso=_iso)
    env.globals.clear()
    env.globals.update(date_in=_date_in)
    return env


class TemplateProblem(ValueError):
    """A template that cannot parse or names something that does not exist."""


@lru_cache(maxsize=4096)
def _compile_expression(expr: str) -> Any:
    return environment().compile_expression(expr, undefined_to_none=False)


@lru_cache(maxsize=4096)
def _compile_template(text: str) -> Any:
    return environment().from_string(text)


def is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def render_value(value: Any, context: Mapping[str, Any]) -> Any:
    """Render every string inside `value` (dicts and lists recursively)."""
    if isinstance(value, str):
        if not is_template(value):
            return value
        fast = _shortcut(value)
        if fast is not None:
            got = fast(context)
            if got is not _MISSING:
                return got
        return render_jinja(value, context)
    if isinstance(value, dict):
        return {k: render_value(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [render_value(v, context) for v in value]
    return value


def render_jinja(value: str, context: Mapping[str, Any]) -> Any:
    """One template string through Jinja (what `render_value` does when no shortcut applies)."""
    m = _SINGLE.match(value)
    if m and "{%" not in value:
        return _native(_compile_expression(m["expr"].strip())(**context))
    return _compile_template(value).render(**context)


# -- the shortcut for plain lookups ------------------------------------------------------------
# Most parameters are `{{ incident.key }}`, `{{ a.b or c.d }}` or text around such lookups.
# Jinja builds a render context for each one, which made templating a quarter of the worker's
# time. These are evaluated here directly when every name along the way is a key of a plain
# mapping (exactly what Jinja's sandbox would read); anything else (a missing key, an
# attribute, a filter, a global, a value that is not text or a number) goes to Jinja, which
# also raises the errors. tests/test_templating_shortcut.py holds the two to the same output.

_MISSING = object()
_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_KEYWORDS = frozenset({"and", "or", "not", "in", "is", "if", "else", "true", "false", "none", "True", "False", "None"})
_TEXT_PART = re.compile(r"\{\{(?P<expr>(?:(?!\}\}).)*)\}\}", re.DOTALL)
Paths = tuple[tuple[str, ...], ...]


def _paths(expr: str) -> Paths | None:
    """`a.b or c.d` as ((a, b), (c, d)); None for anything else."""
    out = []
    for alt in expr.strip().split(" or "):
        alt = alt.strip()
        if not _PATH.fullmatch(alt):
            return None
        parts = tuple(alt.split("."))
        if any(p in _KEYWORDS for p in parts):
            return None
        out.append(parts)
    return tuple(out)


def _lookup(paths: Paths, context: Mapping[str, Any]) -> Any:
    """Jinja's `a.b or c.d` over mappings, or _MISSING when Jinja must decide."""
    value: Any = _MISSING
    for path in paths:
        value = context
        for name in path:
            if type(value) is not dict or name not in value:
                return _MISSING
            value = value[name]
        if value:
            return value
    return value


@lru_cache(maxsize=4096)
def _shortcut(text: str) -> Any:
    """A function rendering `text` without Jinja (or _MISSING), or None when it cannot."""
    if "{%" in text or "{#" in text:
        return None
    m = _SINGLE.match(text)
    if m:
        paths = _paths(m["expr"])
        if paths is None:
            return None

        def single(context: Mapping[str, Any]) -> Any:
            value = _lookup(paths, context)
            return _MISSING if value is _MISSING else _native(value)
        return single
    if text.endswith("\n") or "{{-" in text or "-}}" in text:
        return None  # Jinja's newline and whitespace rules
    pieces: list[str | Paths] = []
    at = 0
    for part in _TEXT_PART.finditer(text):
        paths = _paths(part["expr"])
        if paths is None:
            return None
        pieces += [text[at:part.start()], paths]
        at = part.end()
    pieces.append(text[at:])
    if any(isinstance(p, str) and ("{{" in p or "}}" in p) for p in pieces):
        return None

    def joined(context: Mapping[str, Any]) -> Any:
        out = []
        for piece in pieces:
            if isinstance(piece, str):
                out.append(piece)
                continue
            value = _lookup(piece, context)
            if type(value) not in (str, int, float):
                return _MISSING  # None, booleans, lists, _MISSING: Jinja's own rendering
            out.append(str(value))
        return "".join(out)
    return joined


def _native(value: Any) -> Any:
    """Plain JSON-able data out of an expression result."""
    if isinstance(value, Mapping):
        return {str(k): _native(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_native(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


# -- static checks ---------------------------------------------------------------------------


def parse(text: str) -> nodes.Template:
    """The template's syntax tree; TemplateProblem on a syntax error."""
    try:
        return environment().parse(text)
    except TemplateSyntaxError as e:
        raise TemplateProblem(f"template syntax: {e.message}") from None


def references(text: str) -> tuple[set[str], set[str]]:
    """(top-level names, step ids read through `steps.<id>` / `steps['<id>']`) of a template."""
    names, steps = _references(text)
    return set(names), set(steps)


@lru_cache(maxsize=4096)
def _references(text: str) -> tuple[frozenset[str], frozenset[str]]:
    """Parsed once per distinct template: planning asks for the same few on every event."""
    tree = parse(text)
    names = {n.name for n in tree.find_all(nodes.Name) if n.ctx == "load"}
    assigned = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    steps: set[str] = set()
    for node in tree.find_all(nodes.Getattr):
        if isinstance(node.node, nodes.Name) and node.node.name == "steps":
            steps.add(node.attr)
    for node in tree.find_all(nodes.Getitem):
        if isinstance(node.node, nodes.Name) and node.node.name == "steps" and isinstance(node.arg, nodes.Const):
            steps.add(str(node.arg.value))
    filters = {f.name for f in tree.find_all(nodes.Filter)}
    unknown_filters = filters - set(environment().filters)
    if unknown_filters:
        raise TemplateProblem(f"unknown filter {sorted(unknown_filters)[0]!r}")
    return frozenset(names - assigned - set(environment().globals)), frozenset(steps)


def attribute_paths(text: str) -> list[tuple[tuple[str | int | None, ...], int]]:
    """Every lookup chain rooted at a context name (`incident.severity`, `team.escalation[0].name`),
    with its line in the template. An index or key that is not a constant is None."""
    tree = parse(text)
    assigned = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    out: list[tuple[tuple[str | int | None, ...], int]] = []

    def visit(node: nodes.Node) -> None:
        if isinstance(node, nodes.Getattr | nodes.Getitem):
            parts: list[str | int | None] = []
            inner: nodes.Node = node
            while isinstance(inner, nodes.Getattr | nodes.Getitem):
                if isinstance(inner, nodes.Getattr):
                    parts.append(inner.attr)
                else:
                    arg = inner.arg
                    parts.append(arg.value if isinstance(arg, nodes.Const) and isinstance(arg.value, str | int)
                                 else None)
                    visit(arg)
                inner = inner.node
            if isinstance(inner, nodes.Name) and inner.ctx == "load" and inner.name not in assigned:
                out.append(((inner.name, *reversed(parts)), node.lineno))
            elif not isinstance(inner, nodes.Name):
                visit(inner)
            return
        for child in node.iter_child_nodes():
            visit(child)

    visit(tree)
    return out


def strings(value: Any) -> list[str]:
    """Every template string inside a parameter value."""
    if isinstance(value, str):
        return [value] if is_template(value) else []
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


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
