"""What a step's templates can read: the shape of the render context, for `validate`.

`hub.rules.engine.Rules.context` builds the context an action's templates render against;
this module describes the same shape statically, so `validate` can tell `incident.severty`
from `incident.severity` before anything runs (StrictUndefined would only fail the page
when it is sent). A field named here as `ANY` holds source-specific or free-form data
(labels, attributes, results): anything below it is accepted.
"""

from __future__ import annotations

import typing
from functools import lru_cache
from typing import Any

from hub.core.events import NormalisedEvent

#: Anything below is accepted (free-form data).
ANY: None = None
#: The value is a list; its items have the schema inside.
Schema = dict[str, Any]


def _keys(*names: str, **nested: Any) -> Schema:
    return {**dict.fromkeys(names, ANY), **nested}


LINK = _keys("href", "text")
DEPLOY = _keys("service", "environment", "sha", "ref", "author", "url", "repository", "state", "title",
               "fingerprint", "event_id", "at")


def _event() -> Schema:
    fields = {name: ANY for name in NormalisedEvent.model_fields}
    fields["links"] = [LINK]
    return {**fields, "id": ANY, "index": ANY, "received_at": ANY}


def _incident() -> Schema:
    from hub.rules.engine import incident_view
    from hub.rules.model import Recordable

    fields = dict.fromkeys(incident_view(None), ANY)
    fields.update(dict.fromkeys(typing.get_args(Recordable), ANY))
    fields.update(dict.fromkeys(("updated_at", "severity_history", "kind", "group"), ANY))
    from hub.core.registry import recorded_fields

    # recorded as another name of the incident, or appended to a list field
    for name in ("alias", *(n for n, how in recorded_fields().items() if how.append_to)):
        fields.pop(name, None)
    fields.update(links=[LINK], deploys=[DEPLOY])
    return fields


STEP_VIEW = _keys("state", "result", "params", "error")


def _service() -> Schema:
    """`Rules.service_view`'s keys (asked, so a field added there is known here)."""
    from hub.rules.engine import Rules, World
    from hub.rules.model import HubConfig

    return {**dict.fromkeys(Rules(HubConfig()).service_view(None, World()), ANY), **_model_lists("service")}


def _model_lists(place: str) -> Schema:
    """The connectors' keys at `place` that hold a list of mappings (e.g. responders): their item keys."""
    from pydantic import BaseModel

    from hub.core.registry import connector_classes

    out: Schema = {}
    for cls in connector_classes().values():
        for f in cls.catalog_fields:
            args = typing.get_args(f.annotation)
            if (place in f.on and typing.get_origin(f.annotation) is list and args and isinstance(args[0], type)
                    and issubclass(args[0], BaseModel)):
                out[f.name] = [_keys(*args[0].model_fields)]
    return out


def _team() -> Schema:
    from hub.rules.engine import Rules
    from hub.rules.model import HubConfig

    view = Rules(HubConfig()).team_view(None)
    # a level's keys: those of the view of a team with one empty level
    level = Rules(HubConfig.model_validate({"catalog": {"teams": {"t": {"escalation": [{}]}}}})).team_view("t")
    level = level["escalation"][0]
    return {**dict.fromkeys(view, ANY), **_model_lists("team"),
            "manager": dict.fromkeys(view["manager"], ANY),
            "escalation": [{**dict.fromkeys(level, ANY), **_model_lists("level")}]}


@lru_cache(maxsize=1)
def schema() -> Schema:
    """The roots every step's `with` templates see (`steps` is checked by step id elsewhere)."""
    service = _service()
    return {"event": _event(), "incident": _incident(), "service": service, "services": [service], "team": _team(),
            "steps": ANY, "deploy": DEPLOY, "deploys": [DEPLOY], "now": ANY, "occurrence": ANY, "workflow": ANY,
            "result": ANY, "params": ANY}


def lookup(path: tuple[str | int | None, ...], root: Any) -> tuple[int, Any] | None:
    """Check a path (`None` = an index not known statically) against the schema.

    Returns None when every part is known (or lies under `ANY`), else (index of the first
    unknown part, the mapping it was looked up in).
    """
    node = root
    for i, part in enumerate(path):
        if node is ANY:
            return None
        if isinstance(node, list):
            if isinstance(part, int) or part is None or (isinstance(part, str) and part.isdigit()):
                node = node[0]
                continue
            if part in ("length",):  # not a key; Jinja would fail on it, but leave that to rendering
                return None
            return i, {}
        if not isinstance(part, str) or part not in node:
            if part is None:
                return None  # a computed key into a mapping: cannot tell statically
            return i, node
        node = node[part]
    return None
