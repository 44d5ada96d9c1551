"""A tiny, safe templating for step parameters: `{{ event.title }}`, `{{ incident.key }}`, filters.

This module renders a template (plain lookups directly, the rest through the Jinja sandbox
of `hub.rules.sandbox`, which also holds the filters and the size limits) and reads what a
template refers to, for `validate`. A string that is exactly one `{{ expression }}` keeps
the expression's type (a list of component ids stays a list); any other string renders to
text. Unknown names fail loudly at render time (StrictUndefined), and `incident-hub
validate` checks names and step references before anything runs.

Escaping: a parameter a connector declares as markup (`Connector.markup`, e.g. a chat's
`text`) is rendered with that format's escape (hub.escape) applied to every interpolated
value, so payload text cannot become markup there; the operator's literal text around the
`{{ }}` stays as written, and so do values from the catalog (`Trusted`: service and team
entries written in hub.yaml, e.g. a manager's `<@U…>` mention).

Bounds: a template cannot build huge values (`hub.rules.sandbox`), and a rendered text
longer than MAX_OUTPUT characters fails (TemplateTooLarge) instead of filling memory.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from jinja2 import TemplateSyntaxError, nodes

from hub.core.escape import formats
from hub.rules.sandbox import (
    HUB_FILTERS,
    MAX_OUTPUT,
    OG_PRIORITY,
    PD_SEVERITY,
    Placeholder,
    PlaceholderSteps,
    TemplateTooLarge,
    Trusted,
    environment,
    escape_value,
    native,
    trusted,
)

__all__ = ["HUB_FILTERS", "MAX_OUTPUT", "OG_PRIORITY", "PD_SEVERITY", "ROOTS", "Placeholder", "PlaceholderSteps",
           "TemplateProblem", "TemplateTooLarge", "Trusted", "attribute_paths", "environment", "is_template",
           "outcome_reads", "parse", "references", "render_jinja", "render_params", "render_value", "strings",
           "trusted"]

#: The names a template may use (the render context's top level).
ROOTS = ("event", "incident", "service", "services", "team", "steps", "deploy", "deploys", "now", "occurrence",
         "workflow")

_SINGLE = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\}\}).)*)\}\}\s*$", re.DOTALL)

class TemplateProblem(ValueError):
    """A template that cannot parse or names something that does not exist."""


@lru_cache(maxsize=4096)
def _compile_expression(expr: str) -> Any:
    return environment().compile_expression(expr, undefined_to_none=False)


@lru_cache(maxsize=4096)
def _compile_template(text: str, fmt: str | None = None) -> Any:
    return environment(fmt).from_string(text)


def is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def render_value(value: Any, context: Mapping[str, Any], fmt: str | None = None) -> Any:
    """Render every string inside `value` (dicts and lists recursively).

    `fmt` (a hub.escape format name): escape every interpolated value for that format.
    """
    if isinstance(value, str):
        if not is_template(value):
            return value
        fast = _shortcut(value)
        if fast is not None:
            got = fast(context, fmt)
            if got is not _MISSING:
                return got
        return render_jinja(value, context, fmt)
    if isinstance(value, dict):
        return {k: render_value(v, context, fmt) for k, v in value.items()}
    if isinstance(value, list):
        return [render_value(v, context, fmt) for v in value]
    return value


def render_params(template: Mapping[str, Any], context: Mapping[str, Any],
                  markup: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A step's `with:` rendered, each parameter escaped for its declared format (`markup`)."""
    markup = markup or {}
    return {k: render_value(v, context, markup.get(k)) for k, v in template.items()}


def render_jinja(value: str, context: Mapping[str, Any], fmt: str | None = None) -> Any:
    """One template string through Jinja (what `render_value` does when no shortcut applies)."""
    m = _SINGLE.match(value)
    if m and "{%" not in value:
        return native(escape_value(fmt)(_compile_expression(m["expr"].strip())(**context)))
    out: list[str] = []
    size = 0
    for chunk in _compile_template(value, fmt).generate(**context):
        size += len(chunk)
        if size > MAX_OUTPUT:
            raise TemplateTooLarge(f"template renders over {MAX_OUTPUT} characters")
        out.append(chunk)
    return "".join(out)


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

        def single(context: Mapping[str, Any], fmt: str | None = None) -> Any:
            value = _lookup(paths, context)
            return _MISSING if value is _MISSING else escape_value(fmt)(native(value))
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

    def joined(context: Mapping[str, Any], fmt: str | None = None) -> Any:
        esc = formats()[fmt] if fmt else None
        out = []
        for piece in pieces:
            if isinstance(piece, str):
                out.append(piece)
                continue
            value = _lookup(piece, context)
            if type(value) not in (str, int, float, Trusted):
                return _MISSING  # None, booleans, lists, _MISSING: Jinja's own rendering
            text = str(value)
            out.append(esc(text) if esc and type(value) is str else text)
        text = "".join(out)
        if len(text) > MAX_OUTPUT:
            raise TemplateTooLarge(f"template renders over {MAX_OUTPUT} characters")
        return text
    return joined


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


#: What a step may read of another step without needing it to have succeeded.
OUTCOME_FIELDS = frozenset({"state", "error"})


def outcome_reads(text: str) -> set[str]:
    """Step ids the template reads only as `steps.<id>.state` / `.error` (never its result).

    Such a step may have failed or not run at all: the template reports what happened (e.g.
    "could not page …"), so it waits for the step to finish but is not failed with it.
    """
    return set(_outcome_reads(text))


def _step_of(node: nodes.Node) -> str | None:
    if isinstance(node, nodes.Getattr) and isinstance(node.node, nodes.Name) and node.node.name == "steps":
        return node.attr
    if isinstance(node, nodes.Getitem) and isinstance(node.node, nodes.Name) and node.node.name == "steps" \
            and isinstance(node.arg, nodes.Const):
        return str(node.arg.value)
    return None


@lru_cache(maxsize=4096)
def _outcome_reads(text: str) -> frozenset[str]:
    tree = parse(text)
    total: dict[str, int] = {}
    for node in [*tree.find_all(nodes.Getattr), *tree.find_all(nodes.Getitem)]:
        sid = _step_of(node)
        if sid is not None:
            total[sid] = total.get(sid, 0) + 1
    outcome: dict[str, int] = {}
    for node in [*tree.find_all(nodes.Getattr), *tree.find_all(nodes.Getitem)]:
        field = node.attr if isinstance(node, nodes.Getattr) else \
            (node.arg.value if isinstance(node.arg, nodes.Const) else None)
        sid = _step_of(node.node)
        if sid is not None and field in OUTCOME_FIELDS:
            outcome[sid] = outcome.get(sid, 0) + 1
    return frozenset(sid for sid, n in outcome.items() if n == total.get(sid))


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


