"""Secrets are scrubbed by kind as well as by value, from everything recorded (hub.scrub).

End to end: a Jira that answers 400 echoing the request headers (Authorization: Basic
base64(email:token)) leaves neither the token nor its base64 form in the dead letter,
`/admin/events/{id}`, `/admin/dead-letters` or anywhere in Redis, also for a token shorter
than six characters.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.core.scrub import scrub
from tests.conftest import FIXTURES
from tests.fakes import jira as fake_jira
from tests.test_workflows_e2e import Hub, Upstreams


@pytest.mark.parametrize(("text", "gone"), [
    ("Authorization: Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
    ('{"authorization": "Bearer ey.abc.def"}', "ey.abc.def"),
    ("'Authorization': 'Token t0k'", "t0k"),            # any scheme, any length
    ("authorization=GenieKey 1f2e3d", "1f2e3d"),
    ("Authorization: OAuth sp-key", "sp-key"),
    ("Authorization: x", ": x"),                        # no scheme at all
    ("request had OAuth abcdefgh12345678 attached", "abcdefgh12345678"),
    ('"X-Api-Key": "k1"', "k1"), ("x-api-key=k2&y=1", "k2"), ('"routing_key":"R0UT"', "R0UT"),
    ("password: hunter2", "hunter2"), ("GET https://bob:s3cr3t@host.example/x failed", "bob:s3cr3t"),
    ("GET https://tok@host.example/x failed", "tok@"),
])
def test_credentials_are_scrubbed_by_kind(text: str, gone: str) -> None:
    out = scrub(text, [])
    assert gone not in out and "***" in out


def test_secrets_of_any_length_and_their_encodings_are_scrubbed() -> None:
    pair = "me@example.com:ab1"
    text = f"token ab1 in {base64.b64encode(pair.encode()).decode()} and me%40example.com%3Aab1"
    out = scrub(text, ["ab1", pair])
    assert "ab1" not in out and base64.b64encode(pair.encode()).decode() not in out
    for prose in ("nothing secret here: the token is invalid", "Basic authentication with passwords is deprecated",
                  "Bearer token expired; OAuth consumer unknown"):
        assert scrub(prose, []) == prose


async def _redis_dump(redis: Any) -> str:
    """Every value in Redis, as text."""
    parts = []
    async for key in redis.scan_iter(count=500):
        kind = (await redis.type(key)).decode()
        if kind == "string":
            parts.append(await redis.get(key))
        elif kind == "hash":
            parts += [k + b"=" + v for k, v in (await redis.hgetall(key)).items()]
        elif kind == "list":
            parts += await redis.lrange(key, 0, -1)
        elif kind == "set":
            parts += list(await redis.smembers(key))
        elif kind == "zset":
            parts += [m for m, _ in await redis.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            parts += [json.dumps({k.decode(): v.decode() for k, v in f.items()}).encode()
                      for _, f in await redis.xrange(key)]
        parts.append(key)
    return b"\n".join(p if isinstance(p, bytes) else str(p).encode() for p in parts).decode("utf-8", "replace")


@pytest.fixture
async def echoing_jira(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Upstreams]:
    for name in ("SLACK", "PAGERDUTY", "STATUSPAGE", "JIRA", "INCIDENTIO", "OPSGENIE"):
        monkeypatch.setenv(f"{name}_RATE_LIMIT", "0")
    ups = Upstreams()
    ups.jira = fake_jira.FakeJira(token=request.param)
    ups.jira.echo_headers_status = 400
    await ups.start()
    yield ups
    await ups.close()


@pytest.mark.parametrize("echoing_jira", ["jira-api-token-0123456789abcdef", "Zq9!x"], indirect=True)
async def test_an_echoed_basic_auth_header_is_not_stored(redis_url, redis, echoing_jira) -> None:
    token = echoing_jira.jira.auth.split()[1]
    token_value = base64.b64decode(token).decode().split(":", 1)[1]
    settings = echoing_jira.settings(redis_url, jira_api_token=token_value)
    forms = [token_value, token, token.rstrip("=")]
    async with Hub(settings, redis) as hub:
        done = await hub.send("incidentio", (FIXTURES / "incidentio_followup_created.json").read_bytes())
        assert await hub.done_actions(done["id"]) == [("jira.create_issue", "dead")]
        (call,) = echoing_jira.jira.calls("/rest/api/2/issue", "POST")
        assert call.headers["Authorization"] == f"Basic {token}"  # it was sent, and echoed back
        (dead,) = (await hub.actions(done["id"])).values()
        assert dead["last_response"] and "Basic ***" in dead["last_response"]
        assert dead["error"].startswith("HTTP 400")
        client = hub._client
        assert client is not None
        auth = {"Authorization": f"Bearer {settings.hub_admin_token[0]}"}
        shown = [await (await client.get(f"/admin/events/{done['id']}", headers=auth)).text(),
                 await (await client.get("/admin/dead-letters", headers=auth)).text()]
        assert all("Basic ***" in s for s in shown)
        stored = await _redis_dump(redis)
    for text in [*shown, stored, json.dumps(dead)]:
        for form in forms:
            assert form not in text


def _scrub_every_pattern(text: str) -> str:
    """`scrub` by kind as it was: every pattern run on every text (the reference)."""
    from hub.core import scrub as s

    text = s._AUTH_HEADER.sub(lambda m: m["name"] + (m["scheme"] or "") + s.MASK, text)
    text = s._SCHEME_CRED.sub(lambda m: m["scheme"] + " " + s.MASK, text)
    text = s._KEY_FIELD.sub(lambda m: m["name"] + (m["cred"] if m["cred"] == s.MASK else s.MASK), text)
    return s._URL_USERINFO.sub(lambda m: m["scheme"] + s.MASK + "@", text)


_NAMES = ["Authorization", "AUTHORIZATION", "Bearer", "basic", "Token", "GenieKey", "OAuth", "Digest", "ApiKey",
          "SSWS", "Splunk", "api_key", "X-Api-Key", "routing_key", "password", "passwd", "secret", "client-secret",
          "https", "dedup_key", "x", "caf\u00e9", "AUTHORİZATION", "paſſword", "apı_key", "to\u212aen", "\u0130D"]
_SEPS = [" ", ": ", "=", '": "', "://", "", "\n"]
_CREDS = ["abc123+/=", "dXNlcjpwYXNz", "user:pw@host", "x", "Bearer abc123+/=", "t0k3n-value", ""]


@settings(max_examples=800, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_NAMES), st.sampled_from(_SEPS), st.sampled_from(_CREDS)).map("".join),
                max_size=5).map(" ".join))
def test_scrub_by_kind_is_what_running_every_pattern_gives(text: str) -> None:
    """Patterns are skipped where the words they need are absent: never a different result
    (non-ASCII text, where case folding goes past ASCII, runs every pattern)."""
    assert scrub(text) == _scrub_every_pattern(text)
