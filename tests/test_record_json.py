"""The JSON text of records and of outbound bodies (`hub.core.strict_json`): orjson, with
json.dumps as the fallback.

Both must give every reader the value json.dumps gave, except that a non-finite float (NaN,
±Infinity: the payload parser accepts them) is written as null, so that strict readers (the
admin page's JSON.parse, jq, the APIs the hub calls) can read every record and body.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from hub.core.events import Severity
from hub.core.strict_json import dumps, dumps_body, dumps_indented
from tests.test_ingress_fast_paths import VALUES, same


def _no_constants(name: str) -> Any:
    raise ValueError(f"not JSON: {name}")


def strict_loads(text: str | bytes) -> Any:
    """json.loads as a strict reader: NaN and Infinity are refused."""
    return json.loads(text, parse_constant=_no_constants)


def finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(VALUES)
def test_a_record_reads_back_as_json_dumps_wrote_it_with_non_finite_numbers_as_null(value: Any) -> None:
    expected = json.loads(json.dumps(finite(value)))
    assert same(strict_loads(dumps(value)), expected)
    assert same(strict_loads(dumps({"n": 2**64, "v": value})), {"n": 2**64, "v": expected})  # the fallback


@dataclasses.dataclass
class _Point:
    x: int


@pytest.mark.parametrize("value", [
    datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.UTC), datetime.date(2026, 12, 1), {1, 2}, b"raw",
    _Point(1), uuid.UUID("12345678-1234-5678-1234-567812345678"), Severity.SEV1, {1: "int key"},
    {Severity.SEV2: "enum key"}, ("a", 1), {"nested": [{"at": datetime.datetime(2026, 1, 1)}]},
])
def test_what_only_default_str_handles_is_written_as_json_dumps_wrote_it(value: Any) -> None:
    assert json.loads(dumps(value)) == json.loads(json.dumps(value, default=str))


def test_a_record_is_compact_text() -> None:
    assert dumps({"a": [1, "é"], "b": None}) == '{"a":[1,"é"],"b":null}'


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(VALUES)
def test_an_outbound_body_is_strict_json_with_the_values_json_dumps_sent(value: Any) -> None:
    try:
        expected = json.loads(json.dumps(finite(value)))
    except (TypeError, ValueError):  # what json.dumps cannot send, neither can the body
        with pytest.raises((TypeError, ValueError)):
            dumps_body(value)
        return
    assert same(strict_loads(dumps_body(value)), expected)


def test_an_outbound_body_keeps_big_integers_exact() -> None:
    assert strict_loads(dumps_body({"n": 2**70, "v": 1.5})) == {"n": 2**70, "v": 1.5}
    assert dumps_body({"v": float("nan"), "w": [float("-inf")]}) == '{"v":null,"w":[null]}'


@pytest.mark.parametrize("value", [{"v": float("nan"), "t": ["é", 1]}, {"n": 2**70, "v": float("inf")}])
def test_the_indented_form_is_strict_json_indented_as_json_dumps_indents(value: Any) -> None:
    text = dumps_indented(value)
    assert strict_loads(text) == json.loads(json.dumps(finite(value)))
    assert text.splitlines()[1].startswith('  "')  # two spaces, one key per line
