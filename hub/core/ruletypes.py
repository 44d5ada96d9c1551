"""Building blocks of the rules file's schema that connectors use for the keys they add.

Kept in the core (not `hub.rules.model`) so a connector module can declare its catalog keys
without importing the rules package, which discovers the connectors when it loads.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


class Strict(BaseModel):
    """A rules-file mapping: unknown keys are errors (typos are reported, not ignored)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _to_list(value: Any) -> Any:
    return [value] if isinstance(value, str | int | float) and not isinstance(value, bool) else value


#: A list of texts; one text alone is a list of one.
StrList = Annotated[list[str], BeforeValidator(_to_list)]

SecretRef = Annotated[str, Field(description="`env:NAME` reads the variable NAME (environment or .env; unset: an error "
                                             "at start), `env:NAME?` may be unset (the fallback is recorded); "
                                             "a literal value works but puts a secret in the file")]
