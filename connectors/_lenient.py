"""Lenient building blocks for inbound payload models.

Senders add fields, drop optional ones, send `null` for empty values and (Datadog templates,
hand-written Alertmanager receivers) numbers where strings are documented or the reverse.
A webhook the hub refuses with a 4xx is usually lost for good (Datadog, Grafana and
Alertmanager only retry 5xx), so models accept every such variant and are strict only about
the few fields the hub cannot work without.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)

T = TypeVar("T")

#: Longest fingerprint kept readable; longer ones are hashed (they become Redis keys and
#: PagerDuty dedup keys, which allow 255 characters).
MAX_FINGERPRINT = 200


class Lenient(BaseModel):
    """Base for payload models: unknown keys ignored, numbers accepted where text is expected."""

    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)


_TEXTUAL = (str, int, float)
_NUMBERS = (int, float)


def _scalar_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, _TEXTUAL):
        return str(value)
    return json.dumps(value, sort_keys=True, default=str)


def _str_map(value: Any) -> dict[str, str]:
    """Values made text (labels are text in every sender, but not in every test tool); not a map → {}."""
    if isinstance(value, Mapping):
        return {str(k): _scalar_text(v) for k, v in value.items()}
    return {}


def _null_to_empty_list(value: Any) -> Any:
    return [] if value is None else value


def _optional_text(value: Any) -> str | None:
    """Numbers, booleans and even lists or objects become text: a field the hub only displays
    is never a reason to refuse a webhook."""
    if value is None or isinstance(value, str):
        return value
    return _scalar_text(value)


def _or_none(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    try:
        return handler(value)
    except ValidationError:
        return None


def _soft_list(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """Keep the items that validate, drop the rest; anything but a list is an empty list."""
    if not isinstance(value, list):
        return []
    kept = []
    for item in value:
        try:
            kept.extend(handler([item]))
        except ValidationError:
            continue
    return kept


def _loose_int(value: Any) -> Any:
    """Whole numbers from ints, floats and digit strings; anything unusable becomes None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


#: An optional integer that never fails validation (a rank or a count the hub can do without).
LooseInt = Annotated[int | None, BeforeValidator(_loose_int)]
# The rule every payload model follows: fields the hub cannot work without are plain
# (required) types and refuse bad input with a 400; every other field uses one of these,
# which degrade a wrong value to "absent" instead.

#: A `dict[str, str]`: `null` or a non-object is {}, values become text.
StrMap = Annotated[dict[str, str], BeforeValidator(_str_map)]
#: Optional text; numbers, booleans and containers become text.
Text = Annotated[str | None, BeforeValidator(_optional_text)]
#: An optional value (usually a nested model) that becomes None when it does not validate.
Opt = Annotated[T | None, WrapValidator(_or_none)]
#: A list that keeps only its valid items (`null` or a non-list is empty).
SoftList = Annotated[list[T], WrapValidator(_soft_list)]


#: `list[T]` where `null` means empty.
NullList = Annotated[list[T], BeforeValidator(_null_to_empty_list)]


def parse_time(value: Any) -> datetime | None:
    """A timestamp from ISO 8601 text or Unix seconds/milliseconds; None when absent or unusable.

    Go's zero time (`0001-01-01T00:00:00Z`, Alertmanager's "no end yet") is None as well.
    """
    if value is None or value == "":
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            value = int(text)
        else:
            try:
                parsed = datetime.fromisoformat(text)
            except ValueError:
                return None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            return None if parsed.year <= 1 else parsed
    if isinstance(value, bool) or not isinstance(value, _NUMBERS):
        return None
    seconds = value / 1000 if value > 100_000_000_000 else value  # Datadog sends milliseconds
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def short_hash(*parts: str, length: int = 32) -> str:
    """A stable hex digest of text parts (unambiguous: parts are length-prefixed)."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8", "surrogatepass")
        h.update(str(len(data)).encode() + b":" + data)
    return h.hexdigest()[:length]


def bounded(fingerprint: str) -> str:
    """Keep a fingerprint readable when short, hash it when it would be too long for a key."""
    if len(fingerprint) <= MAX_FINGERPRINT:
        return fingerprint
    prefix = fingerprint.split(":", 1)[0]
    return f"{prefix}:sha256:{short_hash(fingerprint, length=48)}"


def clip(text: str | None, limit: int = 2000) -> str:
    if not text:
        return ""
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"
