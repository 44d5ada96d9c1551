"""Hostile payload text end to end: signed webhook → worker → what each fake upstream received.

An incident name, a GitHub ref, a follow-up description carrying Slack mentions, disguised
links, Jira wiki markup, HTML and terminal escapes reach Slack, Jira and Statuspage only as
text (hub.escape), and `incident-hub events show` prints no control character.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import uuid
from typing import Any

import pytest

from hub.cli.main import main
from tests.conftest import FIXTURES, GITHUB_SECRET, fixture_request, wait_for
from tests.test_workflows_e2e import INCIDENT_KEY, RULES, Hub, incident_payload

HOSTILE_NAME = ("<!channel> <!here> <!everyone> <@U123> <https://evil.example|click> & "
                "[~accountid:5b10a2844c20165700ede21g] [click|https://evil] !https://evil/pixel.png! "
                "{html}<img src=x onerror=alert(1)>{html} <b>bold</b> \x1b]52;c;aGk=\x07")
SLACK_ACTIVE = re.compile(r"<[!@#]|<(?!https?://)[a-z]+:|<https://evil")


def slack_texts(body: dict[str, Any]) -> list[str]:
    out = [body["text"]]
    for block in body.get("blocks", []):
        if "text" in block:
            out.append(block["text"]["text"])
        out += [e["text"] for e in block.get("elements", [])]
    return out


def assert_slack_inert(body: dict[str, Any]) -> None:
    for text in slack_texts(body):
        assert not SLACK_ACTIVE.search(text), text
        assert not re.search(r"&(?!amp;|lt;|gt;)", text), text


async def test_hostile_incident_name_reaches_slack_and_statuspage_as_text(redis_url, redis, upstreams) -> None:
    data = incident_payload("incident_created_v2", severity="Critical")
    incident = data["public_incident.incident_created_v2"]
    incident["name"] = HOSTILE_NAME
    incident["summary"] = "<!here> <b>ongoing</b> [~accountid:x]"
    incident["permalink"] = "javascript:alert(document.cookie)"
    # public.yaml opts the affected service in to the status page
    async with Hub(upstreams.settings(redis_url, hub_config=RULES / "public.yaml"), redis) as hub:
        created = await hub.send("incidentio", data)
    assert created["state"] == "done"
    (message,) = [r.json() for r in upstreams.slack.requests]
    assert_slack_inert(message)
    assert "&lt;!channel&gt;" in message["text"] and "&amp;" in message["text"]
    assert not any("javascript:" in t and "<" in t.split("javascript:")[0][-1:] for t in slack_texts(message))
    # The public page gets the catalog's wording only: none of the payload's text, markup or not.
    (sp_create,) = upstreams.statuspage.calls(method="POST")
    sent = sp_create.json()["incident"]
    for field in ("name", "body"):
        assert "<" not in sent[field] and ">" not in sent[field] and "\x1b" not in sent[field], sent[field]
        assert "bold" not in sent[field] and "ongoing" not in sent[field] and "accountid" not in sent[field]
    assert "Checkout" in sent["name"] + sent["body"]


async def test_escalation_keeps_the_operators_mention_but_not_the_payloads(redis_url, redis, upstreams,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """tests/data/rules/escalation.yaml: `{{ team.manager.slack }} {{ incident.title }} …` after 2 s."""
    monkeypatch.setenv("PD_KEY_L2", "L2KEY00000000000000000000000000A")
    upstreams.seed_incident()
    data = incident_payload("incident_created_v2", severity="Critical")
    data["public_incident.incident_created_v2"]["name"] = "<!channel> db down <@U999>"
    async with Hub(upstreams.settings(redis_url, hub_config=RULES / "escalation.yaml"), redis) as hub:
        await hub.send("incidentio", data)

        async def escalated() -> Any:
            return upstreams.slack.requests and not await hub.incidents.timers(INCIDENT_KEY)
        await wait_for(escalated, timeout=10)
    (notice,) = [r.json() for r in upstreams.slack.requests]
    assert notice["text"] == ("<@U024BE7LH> INC-1482: &lt;!channel&gt; db down &lt;@U999&gt; not acknowledged: "
                              "paging payments secondary")


async def test_hostile_github_ref_reaches_slack_as_text(redis_url, redis, upstreams) -> None:
    body, headers = fixture_request("github_deployment_status_failure.json")
    data = json.loads(body)
    data["deployment"]["ref"] = "<!channel>-<https://evil.example|release>"
    data["deployment_status"]["description"] = "<@U123> & <javascript:alert(1)|logs>"
    data["deployment"]["creator"]["login"] = "<!here>"
    raw = json.dumps(data).encode()
    headers = {**headers, "X-GitHub-Delivery": str(uuid.uuid4()),
               "X-Hub-Signature-256": "sha256=" + hmac.new(GITHUB_SECRET.encode(), raw, hashlib.sha256).hexdigest()}
    async with Hub(upstreams.settings(redis_url), redis) as hub:
        deploy = await hub.send("github", raw, headers=headers)
    assert await hub.done_actions(deploy["id"]) == [("slack.notify", "succeeded")]
    (message,) = [r.json() for r in upstreams.slack.requests]
    assert_slack_inert(message)
    assert "&lt;!channel&gt;" in message["text"]


async def test_hostile_followup_reaches_jira_as_text(redis_url, redis, upstreams) -> None:
    data = json.loads((FIXTURES / "incidentio_followup_created.json").read_text())
    followup = data["public_incident.follow_up_created_v2"]
    followup["title"] = "Fix [~accountid:abc] {html}x{html}"
    followup["description"] = ("[~accountid:5b10a2844c20165700ede21g] please [click|https://evil] "
                               "!https://evil/pixel.png! {html}<script>x</script>{html} {noformat}\\[x]")
    async with Hub(upstreams.settings(redis_url), redis) as hub:
        done = await hub.send("incidentio", data)
    assert await hub.done_actions(done["id"]) == [("jira.create_issue", "succeeded")]
    (issue_key,) = upstreams.jira.created
    fields = upstreams.jira.issues[issue_key]["fields"]
    description = fields["description"]
    # every markup character from the payload is backslash-escaped; the hub's own text is not
    for construct in (r"\[~accountid", r"\[click", r"!https", r"\{html", r"\{noformat"):
        assert not re.search(r"(?<!\\)" + construct, description), construct
    assert "\\\\" not in description  # a payload backslash cannot undo an escape
    assert "\\[\\~accountid:5b10a2844c20165700ede21g\\]" in description
    assert "Follow-up of" in description
    # the summary is a plain-text field: sent as written
    assert fields["summary"] == "Fix [~accountid:abc] {html}x{html}"


def test_events_show_prints_no_control_characters(redis_url, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from tests.test_admin import action, seed_event
    from tests.test_cli_ops import in_store

    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.delenv("HUB_ADMIN_TOKEN", raising=False)
    hostile = "HTTP 400: \x1b]52;c;aGVsbG8=\x07 \x1b[2J \x9b31m [bold]x[/bold] \u202eevil"
    eid = in_store(redis_url, lambda s: seed_event(s.redis, state="dead",
                                                    actions=[action(state="dead", error=hostile)]))
    assert main(["events", "show", eid]) == 0
    out = capsys.readouterr().out
    assert "HTTP 400" in out and "[bold]x[/bold]" in out
    assert not any((ord(c) < 32 and c not in "\n\t") or 0x7F <= ord(c) <= 0x9F or c == "\u202e" for c in out)
