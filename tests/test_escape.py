"""Outbound text is escaped for where it lands (hub.escape), and templates cannot build huge values.

Unit cases and fuzzers per format here; the end-to-end cases (payload → fake upstream) are in
tests/test_escape_e2e.py.
"""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.jira import BACKSLASH_STANDIN, JIRA_SPECIAL, jira_wiki
from connectors.slack import build_message, slack_link, slack_mrkdwn
from connectors.statuspage import statuspage_text
from hub.core.escape import terminal
from hub.rules.engine import markup_for
from hub.rules.templating import TemplateTooLarge, Trusted, render_params, render_value

HOSTILE = ["<!channel>", "<!here>", "<!everyone>", "<@U123>", "<#C123>", "<https://evil.example|click>",
           "<javascript:alert(1)|x>", "a & b", "[~accountid:5b10a2844c20165700ede21g]", "[click|https://evil]",
           "!https://evil/pixel.png!", "{html}<img src=x onerror=alert(1)>{html}", "{noformat}x{noformat}",
           "<b>bold</b>", "\x1b]52;c;aGk=\x07", "\x1b[2J", "\\[~x]"]


# -- Slack ----------------------------------------------------------------------------------------

def _slack_inert(text: str) -> bool:
    """No Slack control sequence: no raw < or >, every & starts an entity the escape made."""
    return "<" not in text and ">" not in text and not re.search(r"&(?!amp;|lt;|gt;)", text)


@pytest.mark.parametrize("text", HOSTILE)
def test_slack_mrkdwn_leaves_nothing_active(text: str) -> None:
    out = slack_mrkdwn(text)
    assert _slack_inert(out)
    assert out.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&") == text


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="<>&!@#|^:/.acehnrtU1 ;", max_size=40))
def test_slack_fuzz_escaped_text_is_inert(text: str) -> None:
    assert _slack_inert(slack_mrkdwn(text))


def test_slack_links_only_for_http_urls() -> None:
    assert slack_link("https://ok.example/a?b=1&c=2", "see") == "<https://ok.example/a?b=1&amp;c=2|see>"
    assert slack_link("javascript:alert(1)", "incident.io") == "incident.io"
    assert slack_link("data:text/html,x", None) == "data:text/html,x"
    assert slack_link("https://x.example/a|b>c", "<!here>") == "<https://x.example/a%7Cb%3Ec|&lt;!here&gt;>"


@settings(max_examples=300, deadline=None)
@given(href=st.text(alphabet="hts:/<>|&!@ajvcrip.xe", max_size=30), text=st.text(alphabet="<>|&!@ab", max_size=10))
def test_slack_link_fuzz_one_link_at_most(href: str, text: str) -> None:
    out = slack_link(href, text or None)
    if out.startswith("<"):
        inner = out[1:-1]
        assert out.endswith(">") and _slack_inert(inner)
        url = inner.partition("|")[0]
        assert url.startswith(("http://", "https://", "HTTP", "Http", "hTTP")) or url[:5].lower() in ("http:", "https")
        assert "|" not in url
    else:
        assert _slack_inert(out)


def test_slack_message_escapes_data_params() -> None:
    msg = build_message({"text": "t", "severity": "<!here>", "ids": {"<@U1>": "<!channel>"},
                         "links": [{"href": "javascript:x", "text": "<!everyone>"}, {"href": "https://a.example/"}]})
    texts = [msg["text"]] + [e["text"] for b in msg["blocks"] for e in ([b["text"]] if "text" in b else b["elements"])]
    assert all("<!" not in t and "<@" not in t and "<javascript" not in t for t in texts)
    assert "<https://a.example/|https://a.example/>" in texts


# -- Jira -------------------------------------------------------------------------------------------

def _jira_inert(out: str) -> bool:
    """Outside plain URLs, every special character is escaped and no backslash escapes a backslash."""
    rest = re.sub(r"https?://[A-Za-z0-9._~:/?#@$&'()*+,;=%-]+", "", out.replace("\\\\", "\x00"))
    if "\x00" in rest:
        return False
    i = 0
    while i < len(rest):
        c = rest[i]
        if c == "\\":
            if i + 1 >= len(rest) or rest[i + 1] not in JIRA_SPECIAL:
                return False
            i += 2
            continue
        if c in "[]{}!|":
            return False
        i += 1
    return True


@pytest.mark.parametrize("text", HOSTILE)
def test_jira_wiki_leaves_nothing_active(text: str) -> None:
    out = jira_wiki(text)
    assert _jira_inert(out)
    undone = re.sub(r"\\(.)", r"\1", out)
    assert undone == text.replace("\\", BACKSLASH_STANDIN)


def test_jira_wiki_keeps_plain_urls_and_replaces_backslashes() -> None:
    assert jira_wiki("see https://app.incident.io/incidents/42 now") == "see https://app.incident.io/incidents/42 now"
    assert jira_wiki("\\[") == BACKSLASH_STANDIN + "\\["


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=JIRA_SPECIAL + "\\hts:/.ax~ \n", max_size=40))
def test_jira_fuzz_escaped_text_is_inert(text: str) -> None:
    assert _jira_inert(jira_wiki(text))


# -- Statuspage and terminals -----------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="<>!/&bchanel=\"' \x1b\x07", max_size=40))
def test_statuspage_fuzz_no_tags(text: str) -> None:
    out = statuspage_text(text)
    assert "<" not in out and ">" not in out and "\x1b" not in out


def test_statuspage_drops_tags_and_channel_mentions() -> None:
    assert statuspage_text("<!channel> DB <b>down</b> & 1 < 2") == " DB down & 1 \u2039 2"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=0x3000), max_size=40))
def test_terminal_fuzz_no_control_characters(text: str) -> None:
    out = terminal(text)
    assert not any((ord(c) < 32 and c not in "\n\t") or 0x7F <= ord(c) <= 0x9F for c in out)
    assert "\u202e" not in out


# -- templates: interpolated values escaped, the operator's text kept ---------------------------------

CTX = {"event": {"title": "<!channel> [~accountid:x] & {html}", "n": -3},
       "team": {"manager": {"slack": Trusted("<@U024BE7LH>")}}}


@pytest.mark.parametrize("template", [
    "{{ event.title }}", "<!here> {{ event.title }}", "{{ team.manager.slack }} {{ event.title }} {{ event.n }}",
    "{% if team.manager.slack %}{{ team.manager.slack }} {% endif %}{{ event.title }}",
    "{{ event.title | upper }}", "{{ event.title ~ '!' }}"])
def test_slack_params_escape_values_but_not_the_operators_text(template: str) -> None:
    plain = render_value(template, CTX)
    out = render_value(template, CTX, "slack_mrkdwn")
    assert "<!CHANNEL>" in plain.upper() and "<!CHANNEL>" not in out.upper()
    assert out.startswith("<!here> ") == template.startswith("<!here> ")
    assert ("<@U024BE7LH>" in out) == ("team.manager.slack }}" in template)


def test_params_are_escaped_per_declared_format() -> None:
    assert markup_for("slack", "notify")["text"] == "slack_mrkdwn"
    assert markup_for("jira", "create_issue") == {"description": "jira_wiki"}
    params = render_params({"text": "{{ event.title }}", "webhook_url": "{{ event.title }}",
                            "links": [{"href": "{{ event.title }}"}]}, CTX, markup_for("slack", "notify"))
    assert params["text"].startswith("&lt;!channel&gt;")
    assert params["webhook_url"] == CTX["event"]["title"]  # not markup: the connector decides
    jira = render_params({"description": "h2. Why\n{{ event.title }}"}, CTX, markup_for("jira", "create_issue"))
    assert jira["description"].startswith("h2. Why\n") and "[~" not in jira["description"]


# -- templates cannot build huge values ----------------------------------------------------------------

@pytest.mark.parametrize("template", [
    "{{ 'a' * 10**9 }}", "x{{ 'a' * 10**9 }}", "{{ [1] * 10**9 }}", "{{ 10 ** 10 ** 10 }}",
    "{{ '%999999999d' % 1 }}", "{{ '%999999999d' | format(1) }}", "{{ '{:>999999999}'.format(1) }}",
    "{{ 'a' | center(10**9) }}", "{{ 'a' | indent(10**9) }}",
    "{% for c in event.title %}{{ event.title * 2000 }}{% endfor %}"])
def test_huge_templates_fail_fast(template: str) -> None:
    started = time.monotonic()
    with pytest.raises(TemplateTooLarge):
        render_value(template, CTX)
    assert time.monotonic() - started < 5  # a generous bound: unbounded, the first case takes ~17 s and 1 GB


def test_ordinary_arithmetic_still_works() -> None:
    assert render_value("{{ 'ab' * 3 }} {{ 2 ** 10 }} {{ '%05d' % 7 }} {{ '{:>4}'.format(1) }}", CTX) == \
        "ababab 1024 00007    1"
