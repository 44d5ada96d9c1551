"""What a connector module declares beyond its code: its variables, the incident fields its
results fill, the keys it adds to the rules file, and what a page of a pager says.

The registry (`hub.core.registry`) and the hub read these; `connectors.base` re-exports them,
so a connector imports everything from there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from hub.core import envref


@dataclass(frozen=True)
class Setting:
    """One environment variable a connector reads; the hub's settings model gets a field for it.

    The settings attribute is the variable's name in lower case (`JIRA_URL` → `settings.jira_url`).
    """

    env: str
    default: str | None = None
    #: Kept out of repr and logs.
    secret: bool = False
    #: A comma-separated rotation list (old and new accepted until the old is removed): a tuple.
    rotating: bool = False
    #: Raises ValueError for a bad entry (of a rotation list): refused at start, naming the variable.
    check: Callable[[str], object] | None = None

    @property
    def attr(self) -> str:
        return self.env.lower()


@dataclass(frozen=True)
class CatalogField:
    """A key a connector adds to the rules file: `name: annotation` on each place in `on`.

    Places: `catalog` (the catalog itself), `service`, `team`, `level` (a team's escalation
    level), `contact` (a team's manager) and `condition` (a workflow condition, true when
    the view value at `condition_path` is truthy as asked). `field` is a pydantic `Field(...)`
    with the default and the description the schema shows (None: default None).
    """

    name: str
    annotation: Any
    field: Any = None
    on: tuple[str, ...] = ("service", "team")
    #: An `env:NAME` reference to a secret: templates see the variable's value, `validate`
    #: checks the variable is set, and an unset `env:NAME?` is reported when it falls back.
    secret_ref: bool = False
    #: The value (a text, or a model of texts) holds templates that may read only these names.
    templates_read: tuple[str, ...] | None = None
    condition_path: str | None = None


@dataclass(frozen=True)
class Record:
    """How an incident field a step may `record:` is written (`incident.<field>`).

    `append_to`: the value is appended (once) to this list field instead of set, e.g. a ticket
    key into the incident's list of tickets.
    """

    append_to: str | None = None
    #: The field holds the id of an incident of this inbound source (whose incidents are keyed
    #: `<source>:<id>`): that source's incident events set it too, and reports count the two
    #: records (the alert-born incident and the one it opened there) as one incident.
    links_source: str | None = None


@dataclass
class CatalogView:
    """What a connector's `catalog_view` may use besides the entry: the environment, the
    catalog, the entry's name, and a renderer for templates of `templates_read` keys."""

    env: Mapping[str, str]
    catalog: Any = None
    name: str | None = None
    in_catalog: bool = False
    public_name: str = ""
    render: Callable[[str, Mapping[str, Any]], Any] | None = None

    def value(self, f: CatalogField, value: Any) -> Any:
        """A key's value as templates see it: references resolved, models as plain data."""
        if f.secret_ref:
            return envref.resolve(value, self.env)
        if isinstance(value, list):
            return [v.model_dump(exclude_none=True) if isinstance(v, BaseModel) else v for v in value]
        if isinstance(value, BaseModel):
            return value.model_dump()
        return value


@dataclass(frozen=True)
class PageFacts:
    """A page, whichever pager sent it: what another pager needs to send the same alert."""

    title: Any = None
    #: The dedup key / alias: the fallback page uses the same, so a later replay is one alert.
    key: Any = None
    #: The page's longer text, if any.
    detail: Any = None
    severity: Any = None
    #: The failed page's action id.
    action_id: str = ""
