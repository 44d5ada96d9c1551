"""Reading `hub.yaml`: YAML with positions → HubConfig, every problem with line, column and a hint.

Three passes, all collected rather than stopping at the first: YAML syntax (and duplicate
keys, which YAML silently accepts), the pydantic schema, then the checks that relate one
place of the file to another (`hub.rules.checks`).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from hub.rules.checks import check
from hub.rules.model import HubConfig
from hub.rules.problems import Loaded, Path_, Positions, Problem, dotted

__all__ = ["DEFAULTS_PATH", "Loaded", "Path_", "Positions", "Problem", "RulesError", "load_file", "load_text",
           "parse_yaml"]

class RulesError(Exception):
    """The rules file is invalid; `problems` lists every error."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(self.report())

    def report(self) -> str:
        return "\n".join(p.format(self.source) for p in self.problems if p.severity == "error")


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


class _Builder:
    """Turns a composed YAML node tree into Python values, remembering positions."""

    def __init__(self) -> None:
        self.positions = Positions()
        self.problems: list[Problem] = []
        self._constructor = yaml.constructor.SafeConstructor()

    def build(self, node: yaml.Node, path: Path_ = ()) -> Any:
        self.positions.values[path] = _mark(node)
        if isinstance(node, yaml.MappingNode):
            self._constructor.flatten_mapping(node)
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                # Keys are taken as written: YAML 1.1 would read `on:` as True and `1:` as 1.
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                if not isinstance(key, str):
                    line, col = _mark(key_node)
                    self.problems.append(Problem(line, col, dotted(path), "a mapping key must be a plain value"))
                    continue
                skey = key
                if skey in out:
                    line, col = _mark(key_node)
                    first = self.positions.keys.get((*path, skey), (0, 0))[0]
                    self.problems.append(Problem(line, col, dotted((*path, skey)), f"duplicate key {skey!r}",
                                                 f"it is already set on line {first}; YAML keeps only the last one"))
                self.positions.keys[(*path, skey)] = _mark(key_node)
                out[skey] = self.build(value_node, (*path, skey))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        if isinstance(node, yaml.ScalarNode) and node.style == "|":
            self.positions.literal.add(path)
        return self._constructor.construct_object(node, deep=True)


def parse_yaml(text: str) -> tuple[Any, Positions, list[Problem]]:
    """The document's data, its positions and any syntax problems (data is None if unreadable)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        if e.context_mark and "end of stream" in (e.problem or ""):
            mark = e.context_mark  # an unclosed quote or bracket: point at where it opened
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        msg = " ".join(x for x in (e.context, e.problem) if x)
        return None, Positions(), [Problem(line, col, "", f"YAML syntax: {msg}",
                                           "check the indentation and quoting around this line")]
    except yaml.YAMLError as e:
        return None, Positions(), [Problem(1, 1, "", f"YAML: {e}")]
    if node is None:
        return {}, Positions(), []
    builder = _Builder()
    try:
        data = builder.build(node)
    except yaml.constructor.ConstructorError as e:
        mark = e.problem_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        return None, builder.positions, [Problem(line, col, "", f"YAML: {e.problem}")]
    return data, builder.positions, builder.problems


# -- pydantic errors → problems ----------------------------------------------------------------

def _walk_loc(loc: tuple[Any, ...], data: Any, missing: bool) -> tuple[Path_, str | None]:
    """(the path into the document, the first union-member tag) of a pydantic error location.

    Parts that step into the data are the path; the others are pydantic's labels for union
    members and validators (`function-before[…]`, `SeverityRange`, `[key]`).
    """
    path: list[str | int] = []
    tag = None
    current = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(current, dict) and isinstance(part, str) and (part in current or (last and missing)):
            path.append(part)
            current = current.get(part)
        elif isinstance(current, list) and isinstance(part, int) and part < len(current):
            path.append(part)
            current = current[part]
        elif isinstance(current, dict) and part == "[key]":
            continue
        elif isinstance(part, str) and tag is None and (("[" in part or "(" in part) or part[:1].isupper()):
            tag = part
        elif isinstance(part, str) and isinstance(current, dict) and tag is not None and part in current:
            path.append(part)
            current = current[part]
        elif isinstance(part, str) and isinstance(current, dict):
            path.append(part)  # an unknown key (extra_forbidden) or a missing one
            current = None
    return tuple(path), tag


def _value_at(data: Any, path: Path_) -> Any:
    current = data
    for part in path:
        if isinstance(current, dict):
            current = current.get(part)  # type: ignore[call-overload]
        elif isinstance(current, list) and isinstance(part, int) and part < len(current):
            current = current[part]
        else:
            return None
    return current


def _pick_member(errors: list[dict[str, Any]], value: Any) -> list[dict[str, Any]]:
    """Of a union's per-member errors, the ones for the member the value was meant to be."""
    deepest = max(len(e["_path"]) for e in errors)
    deep = [e for e in errors if len(e["_path"]) == deepest]
    if len({e["_tag"] for e in deep}) <= 1:
        return deep

    def fits(tag: str | None) -> bool:
        t = tag or ""
        if isinstance(value, dict):
            return t.startswith("dict[") or t[:1].isupper()
        if isinstance(value, list):
            return t.startswith("list[")
        return not (t.startswith(("dict[", "list[")) or t[:1].isupper())

    chosen = [e for e in deep if fits(e["_tag"])]
    return chosen or deep[:1]


def _model_at(path: Path_) -> type[BaseModel] | None:
    """The schema model that describes the mapping at `path` (for did-you-mean hints)."""
    current: Any = HubConfig
    for part in path:
        model = _as_model(current)
        if model is not None and isinstance(part, str):
            by_alias = {(f.alias or n): f for n, f in model.model_fields.items()}
            fld = by_alias.get(part) or model.model_fields.get(part)
            if fld is None:
                return None
            current = fld.annotation
            continue
        current = _element(current, part)
        if current is None:
            return None
    return _as_model(current)


def _as_model(tp: Any) -> type[BaseModel] | None:
    """The model inside Optional/Union/Annotated, if any."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    origin = get_origin(tp)
    if origin is Annotated:
        return _as_model(get_args(tp)[0])
    if origin in (Union, UnionType):
        for arg in get_args(tp):
            found = _as_model(arg)
            if found is not None:
                return found
    return None


def _element(tp: Any, part: str | int) -> Any:
    """The item type of a list (int part) or the value type of a dict (str part)."""
    origin = get_origin(tp)
    if origin is Annotated:
        return _element(get_args(tp)[0], part)
    if origin in (Union, UnionType):
        for arg in get_args(tp):
            found = _element(arg, part)
            if found is not None:
                return found
        return None
    if origin is list and isinstance(part, int):
        return get_args(tp)[0]
    if origin is dict and isinstance(part, str):
        return get_args(tp)[1]
    return None


def _known_fields(path: Path_) -> list[str]:
    model = _model_at(path)
    if model is None:
        return []
    return [f.alias or name for name, f in model.model_fields.items()]


_HINTS = {
    "enum": "severities are SEV1, SEV2, SEV3, SEV4",
    "literal_error": "",
    "missing": "",
    "float_parsing": "durations look like 30s, 5m, 1h or 2d",
    "value_error": "",
    "list_type": "write a YAML list (- item) or a single value",
    "dict_type": "this must be a mapping (key: value)",
    "model_type": "this must be a mapping (key: value)",
    "string_type": "quote the value",
}


def _pydantic_problems(e: ValidationError, data: Any, positions: Positions) -> list[Problem]:
    errors = []
    for err in e.errors(include_url=False):
        path, tag = _walk_loc(err["loc"], data, err["type"] == "missing")
        errors.append({**err, "_path": path, "_tag": tag})
    # A union reports one error per member: group by the place, keep the member that fits.
    groups: dict[Path_, list[dict[str, Any]]] = {}
    for err in errors:
        place = err["_path"]
        if err["_tag"] is not None:
            place = tuple(_walk_loc(err["loc"][:list(err["loc"]).index(err["_tag"])], data, False)[0])
        groups.setdefault(place, []).append(err)
    problems: list[Problem] = []
    seen: set[tuple[Path_, str]] = set()
    for place, errs in groups.items():
        for err in _pick_member(errs, _value_at(data, place)) if len(errs) > 1 else errs:
            problems.append(_problem(err, positions))
    out = []
    for p in sorted(problems, key=lambda p: (p.line, p.column)):
        if (p.path, p.message) not in seen:
            seen.add((p.path, p.message))
            out.append(p)
    return out


def _problem(err: dict[str, Any], positions: Positions) -> Problem:
    path: Path_ = err["_path"]
    kind = err["type"]
    msg = err["msg"].removeprefix("Value error, ")
    hint = _HINTS.get(kind, "")
    if kind == "extra_forbidden":
        name = str(path[-1])
        known = _known_fields(path[:-1])
        close = difflib.get_close_matches(name, known, n=1)
        msg = f"unknown key {name!r}"
        hint = f"did you mean {close[0]!r}?" if close else (f"known keys: {', '.join(known)}" if known else "")
        line, col = positions.find(path, key=True)
    elif kind == "missing":
        msg = f"missing required key {str(path[-1])!r}"
        line, col = positions.find(path[:-1])
    else:
        line, col = positions.find(path)
        if kind in ("enum", "literal_error") and "expected" in err.get("ctx", {}):
            expected = err["ctx"]["expected"]
            msg = f"{err.get('input')!r} is not allowed here"
            options = [o.strip().strip("'") for o in expected.replace(" or ", ", ").split(",")]
            close = difflib.get_close_matches(str(err.get("input")), options, n=1)
            hint = f"did you mean {close[0]!r}? (expected {expected})" if close else f"expected {expected}"
    return Problem(line, col, dotted(path), msg, hint)


def load_text(text: str, source: str = "hub.yaml") -> Loaded:
    """Parse and check a rules document; raise RulesError listing every error."""
    data, positions, problems = parse_yaml(text)
    if data is None:
        raise RulesError(source, problems)
    if not isinstance(data, dict):
        raise RulesError(source, [*problems, Problem(1, 1, "", "the rules file must be a mapping at the top level",
                                                     "start with `catalog:` and `workflows:`")])
    try:
        config = HubConfig.model_validate(data)
    except ValidationError as e:
        raise RulesError(source, problems + _pydantic_problems(e, data, positions)) from None
    inherited = "workflows" not in data
    if inherited and source != DEFAULTS_SOURCE:  # a catalog-only file keeps the built-in workflows
        config.workflows = [w.model_copy(deep=True) for w in load_file(None).config.workflows]
    found = check(config, data, positions, workflows=not inherited)
    errors = problems + [p for p in found if p.severity == "error"]
    if errors:
        raise RulesError(source, sorted(errors, key=lambda p: (p.line, p.column)))
    return Loaded(config, positions, [p for p in found if p.severity != "error"], source)


DEFAULTS_PATH = Path(__file__).with_name("defaults.yaml")
DEFAULTS_SOURCE = "<built-in defaults>"


def load_file(path: Path | None) -> Loaded:
    """The rules at `path`, or the built-in defaults when `path` is None."""
    target = path or DEFAULTS_PATH
    try:
        text = target.read_text(encoding="utf-8")
    except OSError as e:
        raise RulesError(str(target), [Problem(1, 1, "", f"cannot read the rules file: {e.strerror or e}",
                                               "set HUB_CONFIG to an existing file, or unset it for the defaults")]
                         ) from None
    except UnicodeDecodeError:
        raise RulesError(str(target), [Problem(1, 1, "", "the rules file is not UTF-8 text")]) from None
    return load_text(text, str(path) if path else DEFAULTS_SOURCE)
