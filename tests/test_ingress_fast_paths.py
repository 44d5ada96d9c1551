"""The ingress's cheaper encodings give exactly what the plain ones gave.

- `loads_json` parses with pydantic-core first and falls back to json.loads: on a generated
  corpus (big integers, NaN and infinities, lone surrogates, deep nesting, invalid text) it
  must return the same value, or refuse with the same exception class, as json.loads alone.
- `fast_dumps` (orjson, else `dumps`) must give every reader the value `dumps` gave.
- The ingest script writes arq's job, the record's size and the TTLs itself: they must be
  what the Python side wrote before.
- The 202 body is written without a JSON encoder: byte for byte `web.json_response`'s.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.base import MAX_JSON_DEPTH, _loads_json_stdlib, loads_json
from hub.ingress.app import accepted
from hub.storage.event_store import (
    ARQ_JOB_EXPIRES_MS,
    ARQ_JOB_PREFIX,
    PROCESS_JOB,
    Store,
    arq_job,
    dumps,
    ev_key,
    fast_dumps,
)

# Text with everything JSON can carry, lone surrogates included (categories "Cs").
TEXT = st.text(st.characters(codec=None, categories=None), max_size=12)
NUMBERS = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**200), max_value=2**200),  # past 64 bits: must stay exact ints
    st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1]),
    st.floats(allow_nan=True, allow_infinity=True),
)
VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), NUMBERS, TEXT),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(TEXT, children, max_size=4)),
    max_leaves=30,
)


def same(a: Any, b: Any) -> bool:
    """Equal in type and value (NaN equals NaN, -0.0 differs from 0.0, 1 differs from 1.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def outcome(fn: Any, data: bytes | str) -> tuple[str, Any]:
    try:
        return "ok", fn(data)
    except Exception as e:  # the class is what must agree
        return "error", type(e)


def assert_agrees(data: bytes | str) -> None:
    fast, reference = outcome(loads_json, data), outcome(_loads_json_stdlib, data)
    assert fast[0] == reference[0], (data, fast, reference)
    if fast[0] == "ok":
        assert same(fast[1], reference[1]), (data, fast, reference)
    else:
        assert fast[1] is reference[1], (data, fast, reference)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(VALUES, st.booleans(), st.sampled_from(["bytes", "str"]))
def test_loads_json_agrees_with_json_loads_on_generated_documents(value: Any, ascii_only: bool, kind: str) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    if kind == "str":
        assert_agrees(text)
    else:
        assert_agrees(text.encode("utf-8", "surrogatepass"))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40))
def test_loads_json_agrees_on_arbitrary_bytes(data: bytes) -> None:
    assert_agrees(data)


@pytest.mark.parametrize("data", [
    b"18446744073709551616", b"-9223372036854775809", b"123456789012345678901234567890",
    b"NaN", b"-Infinity", b"1e400", b"1e-400", b"-0", b"-0.0", b'{"a": 1, "b": 2, "a": 3}',
    b'"\\ud83d"', b'{"k": "x\\udc00"}', b'"\\ud83d\\ude00"', b"\xef\xbb\xbf{}", '"é"'.encode("utf-16"),
    b'"\xff"', b"[1,]", b"", b"01", b"1.", b"9007199254740993.0", b"5e-324", b"1.7976931348623157e309",
    b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH, b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1),
    b"[" * 250 + b"]" * 250, b"[" * 200_000 + b"]" * 200_000,
])
def test_loads_json_agrees_on_the_edges(data: bytes) -> None:
    assert_agrees(data)


def test_loads_json_keeps_big_integers_exact() -> None:
    # orjson would hand back 1.8446744073709552e+19 here: the reason it is not the parser
    assert loads_json(b'{"n": 18446744073709551616}') == {"n": 2**64}
    assert type(loads_json(b"[18446744073709551616]")[0]) is int


HEADER_TEXT = st.text(st.characters(codec=None, categories=None), max_size=20)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(HEADER_TEXT, HEADER_TEXT, max_size=5),
       st.integers(min_value=-(2**70), max_value=2**70))
def test_fast_dumps_gives_readers_what_dumps_gave(headers: dict[str, str], number: int) -> None:
    for obj in (headers, {"at": number, "type": "received", "delivery_id": "d\u00e9", "size": 10}):
        assert same(json.loads(fast_dumps(obj)), json.loads(dumps(obj)))


def test_fast_dumps_falls_back_for_what_orjson_refuses() -> None:
    undecodable = "GitHub-Hookshot/\udcff"  # a header byte that was not UTF-8, kept by aiohttp
    assert fast_dumps({"User-Agent": undecodable}) == dumps({"User-Agent": undecodable}).encode()
    assert fast_dumps({"n": 2**64}) == b'{"n":18446744073709551616}'


async def test_lua_cjson_reads_the_ingress_json(redis: Any) -> None:
    """What the ingress writes with orjson (raw UTF-8) decodes the same in Lua's cjson."""
    obj = {"User-Agent": "caf\u00e9 \u2603 \U0001f600", "X-Quote": 'a"b\\c\n', "size": 10272}
    roundtrip = await redis.eval("return cjson.encode(cjson.decode(ARGV[1]))", 0, fast_dumps(obj))
    assert json.loads(roundtrip) == obj


async def test_the_ingest_script_writes_what_python_wrote(redis: Any, store: Store) -> None:
    body = b'{"x": 1}' * 3
    result = await store.ingest("github", "d-1", body, {"User-Agent": "caf\u00e9"}, "application/json", "v")
    assert not result.duplicate
    rec = await store.get(result.event_id)
    assert rec is not None
    assert rec["size"] == len(body) and rec["body"] == body and rec["headers"] == {"User-Agent": "caf\u00e9"}
    assert rec["received_at"] == rec["updated_at"]
    job_key = ARQ_JOB_PREFIX + result.event_id
    assert await redis.get(job_key) == arq_job(PROCESS_JOB, [result.event_id], rec["received_at"])
    assert 0 < await redis.pttl(job_key) <= ARQ_JOB_EXPIRES_MS
    assert 0 < await redis.ttl(ev_key(result.event_id)) <= store.retention
    dedup_ttl = [await redis.ttl(k) for k in await redis.keys("hub:dedup:github:*")]
    assert dedup_ttl and all(0 < t <= store.dedup_window for t in dedup_ttl)
    [entry] = await store.timeline(result.event_id)
    assert entry == {"at": rec["received_at"], "type": "received", "source": "github", "delivery_id": "d-1",
                     "size": len(body), "verified": "v"}
    again = await store.ingest("github", "d-1", body, {}, "application/json", "v")
    assert again.duplicate and again.event_id == result.event_id


@pytest.mark.parametrize("event_id", ["ev_0193a1b2c3d4e5f6a7b8", 'ev_"odd\\', "ev_\u00e9"])
@pytest.mark.parametrize("duplicate", [False, True])
def test_the_202_is_what_json_response_wrote(event_id: str, duplicate: bool) -> None:
    ours = accepted(event_id, duplicate)
    plain = web.json_response({"event_id": event_id, "status": "duplicate" if duplicate else "accepted"},
                              status=202)
    assert (ours.status, ours.body, dict(ours.headers)) == (plain.status, plain.body, dict(plain.headers))


async def test_ingest_loads_its_script_again_after_a_script_flush(redis: Any, store: Store) -> None:
    """The ingress sends EVALSHA itself: a Redis that lost its scripts (a restart) still records."""
    first = await store.ingest("github", "d-flush-1", b"{}", {}, "application/json", "v")
    await redis.script_flush()
    second = await store.ingest("github", "d-flush-2", b"{}", {}, "application/json", "v")
    third = await store.ingest("github", "d-flush-2", b"{}", {}, "application/json", "v")
    assert not first.duplicate and not second.duplicate and third.duplicate
    assert third.event_id == second.event_id and await store.get(second.event_id) is not None
