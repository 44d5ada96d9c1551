"""JSON text as the hub writes it: strict, compact, and by orjson (a tenth of json.dumps's cost).

JSON has no NaN or Infinity, but the payload parser accepts them, as Python's json does, and
keeps them as floats (rules compare them as numbers). Written as `NaN`, a record could not be
read by the admin page (JSON.parse), jq or any other strict reader, and an API the hub calls
would refuse the whole body. So a float that is not finite is written as null, as
JavaScript's JSON.stringify writes it. Non-ASCII text is written as UTF-8, not as \\u escapes:
the same value for every reader.

What orjson refuses (ints past 64 bits, lone surrogates, keys that are not text, nesting past
254 levels) goes to json.dumps, with non-finite floats as null there too.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

_COMPACT = json.JSONEncoder(separators=(",", ":"), default=str)
#: datetimes and dataclasses go to `default=str`, as they do with json.dumps (orjson would
#: write its own ISO form and a dict).
_RECORD_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def dumps(obj: Any) -> str:
    """A record: what json.dumps(obj, default=str) gives every reader, strict and compact."""
    try:
        return orjson.dumps(obj, default=str, option=_RECORD_OPTIONS).decode()
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return _COMPACT.encode(finite(obj))


def dumps_indented(obj: Any) -> str:
    """`dumps`, indented by two spaces (what the CLI prints for people and jq)."""
    try:
        return orjson.dumps(obj, default=str, option=_RECORD_OPTIONS | orjson.OPT_INDENT_2).decode()
    except TypeError:
        return json.dumps(finite(obj), indent=2, default=str)


def dumps_body(obj: Any) -> str:
    """An outbound request's JSON body (the worker session's `json_serialize`): what json.dumps
    sent, strict. A type JSON cannot hold raises TypeError, as with json.dumps."""
    try:
        return orjson.dumps(obj).decode()
    except TypeError:
        return json.dumps(finite(obj))


def finite(value: Any) -> Any:
    """`value` with every non-finite float replaced by None (the rare path)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value
