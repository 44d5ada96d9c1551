"""The templating shortcut for plain lookups renders exactly what Jinja renders.

`render_value` skips Jinja for `{{ a.b }}`, `{{ a.b or c.d }}` and text around such lookups;
each case here (and each generated one) is rendered both ways and must agree, including
failing the same way.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.rules.templating import _MISSING, PlaceholderSteps, _shortcut, render_jinja, render_value


def both(template: str, context: dict[str, Any], fmt: str | None = None) -> tuple[Any, Any]:
    def run(fn: Any) -> Any:
        try:
            return ("ok", fn(template, context, fmt))
        except Exception as e:
            return ("error", type(e).__name__)
    return run(render_value), run(render_jinja)


CONTEXT = {
    "event": {"title": "Disk full", "severity": "SEV2", "services": ["api", "db"], "count": 3, "ratio": 0.5,
              "summary": None, "flag": True, "links": [{"href": "https://x", "text": "x"}], "items": "key, not method"},
    "incident": {"key": "fp-1", "status": None, "severity": "SEV1", "jira_keys": []},
    "service": {"name": "api", "pagerduty_routing_key": None},
    "team": {"name": "core", "pagerduty_routing_key": "R0UT1NG"},
    "occurrence": 2,
}


@pytest.mark.parametrize("template", [
    "{{ event.title }}", "{{ event.services }}", "{{ event.count }}", "{{ event.ratio }}", "{{ event.summary }}",
    "{{ event.flag }}", "{{ event.links }}", "{{ event.items }}", "{{ incident }}", "{{ occurrence }}",
    "{{ service.pagerduty_routing_key or team.pagerduty_routing_key }}", "{{ incident.status or 'open' }}",
    "{{ incident.jira_keys or event.summary }}", "{{ event.missing }}", "{{ nothing.at.all }}",
    "{{ event.title.upper }}", "{{ event.title | upper }}", "{{ date_in(24) }}", "  {{ incident.key }}  ",
    "[{{ incident.severity }}] {{ event.title }}", "{{ event.title }} x{{ event.count }} ({{ event.ratio }})",
    "{{ event.summary }} and {{ event.flag }}", "{{ event.services }} list", "{{ event.missing }} text",
    "{{ event.title }} line\n", "{{ event.title }}\n", "{{- event.title }} x", "{% if true %}y{% endif %}",
    "{# c #}{{ event.title }}",
    "{{ event.title }} {{ incident.status or event.severity }}", "}} {{ event.title }}", "{{ true }}",
    "{{ event.title or nothing.here }}", "{{ event.summary or nothing.here }}",
])
def test_the_shortcut_agrees_with_jinja(template: str) -> None:
    fast, jinja = both(template, CONTEXT)
    assert fast == jinja


@pytest.mark.parametrize("template", [
    "{{ event.title }}", "{{ service.pagerduty_routing_key or team.pagerduty_routing_key }}",
    "[{{ incident.severity }}] {{ event.title }} x{{ event.count }}"])
def test_plain_lookups_take_the_shortcut(template: str) -> None:
    fast = _shortcut(template)
    assert fast is not None and fast(CONTEXT) is not _MISSING


def test_placeholder_steps_go_through_jinja() -> None:
    ctx = {**CONTEXT, "steps": PlaceholderSteps()}
    assert render_value("{{ steps.open.result.id }}", ctx) == render_jinja("{{ steps.open.result.id }}", ctx)


NAMES = st.sampled_from(["a", "b", "title", "key", "items", "x_1"])
VALUES = st.recursive(st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=False, width=32)
                      | st.text(max_size=5), lambda inner: st.lists(inner, max_size=2)
                      | st.dictionaries(NAMES, inner, max_size=3), max_leaves=6)
PATHS = st.lists(NAMES, min_size=1, max_size=3).map(".".join)
EXPRS = st.lists(PATHS, min_size=1, max_size=2).map(" or ".join)
TEMPLATES = st.one_of(
    EXPRS.map(lambda e: "{{ " + e + " }}"),
    st.lists(st.one_of(st.text(alphabet="ab -:[]", max_size=4), EXPRS.map(lambda e: "{{ " + e + " }}")),
             min_size=1, max_size=4).map("".join),
)


@settings(max_examples=300, deadline=None)
@given(template=TEMPLATES, context=st.dictionaries(NAMES, VALUES, max_size=4))
def test_generated_templates_agree_with_jinja(template: str, context: dict[str, Any]) -> None:
    fast, jinja = both(template, context)
    assert fast == jinja


@settings(max_examples=200, deadline=None)
@given(template=TEMPLATES, context=st.dictionaries(NAMES, VALUES, max_size=4),
       fmt=st.sampled_from(["slack_mrkdwn", "jira_wiki", "statuspage_text"]))
def test_generated_templates_agree_with_jinja_when_escaping(template: str, context: dict[str, Any], fmt: str) -> None:
    fast, jinja = both(template, context, fmt)
    assert fast == jinja


@pytest.mark.parametrize("fmt", ["slack_mrkdwn", "jira_wiki"])
def test_escaped_cases_agree_with_jinja(fmt: str) -> None:
    ctx = {**CONTEXT, "event": {**CONTEXT["event"], "title": "<!here> [~x] & {html} \\ -1"}}
    for template in ("{{ event.title }}", "[{{ incident.severity }}] {{ event.title }} x{{ event.count }}",
                     "{{ event.summary or event.title }}", "{{ event.services }} {{ event.title }}"):
        fast, jinja = both(template, ctx, fmt)
        assert fast == jinja and fast[0] == "ok"
