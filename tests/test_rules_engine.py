"""The planning layer on its own: conditions, identities, templating and incident state (no Redis)."""

from __future__ import annotations

import fnmatch
from typing import Any

import pytest
from jinja2.exceptions import SecurityError, UndefinedError

from hub.core.events import Kind, Link, NormalisedEvent, Severity
from hub.rules import Rules, World, load_rules, load_text
from hub.rules.conditions import Facts, kind_matches, matches
from hub.rules.model import Condition
from hub.rules.templating import render_value
from hub.storage.incidents import advance

T0 = 1_718_611_200_000  # the hub's clock for these tests (ms)


def incident(kind: str = Kind.INCIDENT_DECLARED, severity: str | None = "SEV1", **kw: Any) -> NormalisedEvent:
    return NormalisedEvent(kind=kind, source="incidentio", fingerprint="incidentio:01ABC",
                           severity=Severity(severity) if severity else None, title="INC-7: Checkout down",
                           summary="5xx everywhere", status=kw.pop("status", "Investigating"),
                           links=[Link(href="https://app.incident.io/x/incidents/7", text="incident.io")],
                           attributes={"incident_id": "01ABC", "status_category": "live", **kw.pop("attributes", {})},
                           **kw)


def alert(kind: str = Kind.ALERT_FIRING, severity: str = "SEV2", fp: str = "a1b2c3") -> NormalisedEvent:
    return NormalisedEvent(kind=kind, source="grafana", fingerprint=fp, severity=Severity(severity),
                           title="HighCPU on web-01", services=["checkout"], labels={"env": "prod", "team": "sre"})


def world(**kw: Any) -> World:
    base: dict[str, Any] = {"event_id": "ev_1", "received_ms": T0, "now_ms": T0, "configured": {"pagerduty"}}
    base.update(kw)
    return World(**base)


@pytest.fixture(scope="module")
def defaults() -> Rules:
    return load_rules(None)


def names(planned: list[Any]) -> list[str]:
    return [f"{p.workflow}/{p.step_id}" for p in planned]


def test_sev1_declared_pages_announces_and_arms_timers(defaults: Rules) -> None:
    """No Statuspage incident: the service did not opt in to the public page."""
    planned = defaults.plan([incident()], world())
    assert names(planned) == [
        "page-on-call/page", "page-on-call/announce", "page-on-call/reminder", "page-on-call/escalate-notify",
        "page-on-call/escalate-note", "page-on-call/escalate-again-notify", "page-on-call/escalate-again-note"]
    page = planned[0]
    assert page.name == "pagerduty.trigger" and page.id == page.idempotency_key == "incidentio:01ABC#1:page"
    assert page.params == {"summary": "[SEV1] INC-7: Checkout down", "severity": "SEV1", "source": "incident-hub",
                           "dedup_key": "incidentio:01ABC",
                           "links": [{"href": "https://app.incident.io/x/incidents/7", "text": "incident.io"}],
                           "custom_details": {"incident": "incidentio:01ABC", "services": [],
                                              "summary": "5xx everywhere"}}
    timed = {p.step_id: p for p in planned if p.timer}
    assert {k: p.delay for k, p in timed.items()} == {
        "reminder": 900.0, "escalate-notify": 300.0, "escalate-note": 300.0, "escalate-again-notify": 600.0,
        "escalate-again-note": 600.0}
    assert timed["reminder"].id == "incidentio:01ABC#1:page-on-call:reminder#1"
    assert timed["escalate-note"].timer_id == "timer:incidentio:01ABC#1:page-on-call:escalate"
    assert timed["escalate-note"].unless == ("acknowledged", "resolved")


PUBLIC = load_text("catalog:\n  services:\n    checkout-api:\n      aliases: [checkout]\n"
                   "      display_name: Checkout\n      statuspage_components: [cmp1]\n"
                   "    search: {statuspage: true}\n    billing: {}\n")


@pytest.mark.parametrize(("service", "opens"), [("checkout", True), ("search", True), ("billing", False),
                                                ("not-in-catalog", False)])
def test_statuspage_is_opt_in_per_service_and_says_only_public_wording(service: str, opens: bool) -> None:
    rules = Rules(PUBLIC)
    for ev in (incident(services=[service]), alert(severity="SEV1")):
        ev.services = [service]
        ev.summary = "connection refused to pg-orders-primary:5432"
        opened = [p for p in rules.plan([ev], world()) if p.name == "statuspage.open"]
        assert bool(opened) == opens, ev.kind
        if opened:
            params = opened[0].params
            public = {"checkout": "Checkout", "search": "search"}[service]
            assert params["name"] == f"Degraded performance of {public}"
            assert params["body"] == f"We are investigating degraded performance of {public}."
            assert "pg-orders" not in str(params) and ev.title not in str(params)


def test_sev2_has_longer_timers_and_no_statuspage(defaults: Rules) -> None:
    planned = defaults.plan([incident(severity="SEV2")], world())
    assert "statuspage-open/open" not in names(planned)
    assert {p.step_id: p.delay for p in planned if p.timer}["escalate-notify"] == 900.0
    assert {p.step_id: p.delay for p in planned if p.timer}["reminder"] == 1800.0


@pytest.mark.parametrize("severity", ["SEV3", "SEV4"])
def test_minor_incidents_only_tell_slack(defaults: Rules, severity: str) -> None:
    planned = defaults.plan([incident(severity=severity)], world())
    assert [(p.name, p.workflow) for p in planned] == [("slack.notify", "announce-minor")]


def test_opsgenie_pages_when_only_opsgenie_is_configured(defaults: Rules) -> None:
    planned = defaults.plan([incident(severity="SEV2")], world(configured={"opsgenie", "slack"}))
    assert [p.name for p in planned][:2] == ["opsgenie.create", "slack.notify"]
    assert planned[0].params["alias"] == "incidentio:01ABC" and planned[0].id == "incidentio:01ABC#1:page"


def test_alert_threshold_and_fingerprint_dedup(defaults: Rules) -> None:
    assert defaults.plan([alert(severity="SEV3")], world()) == []
    planned = defaults.plan([alert(severity="SEV2")], world())
    assert [p.name for p in planned] == ["pagerduty.trigger", "incidentio.create_incident"]
    assert planned[0].params["dedup_key"] == "a1b2c3" and planned[0].params["severity"] == "SEV2"
    assert planned[1].params == {"name": "HighCPU on web-01", "summary": "HighCPU on web-01", "severity": "SEV2",
                                 "visibility": "public"}


def test_a_firing_after_a_resolve_is_a_new_episode_with_new_identities(defaults: Rules) -> None:
    first = advance(None, alert(), "a1b2c3", T0)
    resolved = advance(first, alert(Kind.ALERT_RESOLVED), "a1b2c3", T0 + 60_000)
    assert resolved["episode"] == 1 and resolved["resolved_at"] == T0 + 60_000
    w = world(received_ms=T0 + 120_000, incidents={"a1b2c3": resolved}, keys=["a1b2c3"])
    planned = defaults.plan([alert()], w)
    assert planned[0].id == "a1b2c3#2:page" and w.episodes == {"a1b2c3": 2}
    resolve_plan = defaults.plan([alert(Kind.ALERT_RESOLVED)],
                                 world(incidents={"a1b2c3": {**first, "page_dedup_key": "a1b2c3"}}, keys=["a1b2c3"]))
    assert [(p.name, p.params["dedup_key"], p.id) for p in resolve_plan] == [
        ("pagerduty.resolve", "a1b2c3", "a1b2c3#1:alert-resolved:resolve-page")]


def test_status_change_updates_statuspage_per_event(defaults: Rules) -> None:
    before = {**advance(None, incident(), "incidentio:01ABC", T0), "statuspage_incident_id": "sp1"}
    ev = incident(Kind.INCIDENT_STATUS_CHANGED, status="Monitoring", attributes={"message": "Fix rolled out"})
    planned = defaults.plan([ev], world(event_id="ev_2", incidents={"incidentio:01ABC": before},
                                        keys=["incidentio:01ABC"]))
    update = next(p for p in planned if p.name == "statuspage.update")
    assert update.params == {"key": "incidentio:01ABC", "status": "monitoring",  # public wording, not the message
                             "body": "A fix for our service is in place and we are monitoring the results."}
    assert update.id == "ev_2.0:incident-changed:statuspage-update"  # per: event
    unchanged = defaults.plan([incident(Kind.INCIDENT_UPDATED)], world(incidents={"incidentio:01ABC": before},
                                                                         keys=["incidentio:01ABC"]))
    assert "statuspage.update" not in [p.name for p in unchanged]


def test_resolved_plans_cleanup_and_a_postmortem_unless_cancelled(defaults: Rules) -> None:
    before = {**advance(None, incident(), "incidentio:01ABC", T0), "statuspage_incident_id": "sp1",
              "page_dedup_key": "incidentio:01ABC"}
    ev = incident(Kind.INCIDENT_RESOLVED, status="Closed",
                  attributes={"status_category": "closed", "postmortem_expected": True})
    w = world(received_ms=T0 + 3_723_000, incidents={"incidentio:01ABC": before}, keys=["incidentio:01ABC"])
    planned = defaults.plan([ev], w)
    assert [p.name for p in planned] == ["hub.cancel_timers", "statuspage.resolve", "pagerduty.resolve",
                                         "slack.notify", "jira.create_issue"]
    assert planned[3].params["text"] == ":white_check_mark: Resolved after 1h 02m: INC-7: Checkout down"
    jira = planned[4].params
    assert jira["key"] == "postmortem:incidentio:01ABC#1" and jira["due_in"] == "48h"
    declined = incident(Kind.INCIDENT_RESOLVED, attributes={"status_category": "declined",
                                                            "postmortem_expected": False})
    assert "jira.create_issue" not in [p.name for p in defaults.plan([declined], w)]


def test_followup_identity_is_the_followup(defaults: Rules) -> None:
    ev = NormalisedEvent(kind=Kind.FOLLOWUP_CREATED, source="incidentio", fingerprint="incidentio:followup:F1",
                         title="Add a circuit breaker", attributes={"incident_id": "01ABC"})
    (p,) = defaults.plan([ev], world())
    assert p.name == "jira.create_issue" and p.id == "incidentio:followup:F1:followup-jira:create-issue"
    assert p.incident_key == "incidentio:01ABC"


def test_recent_production_deploy_is_linked(defaults: Rules) -> None:
    deploy = {"service": "checkout", "environment": "production", "sha": "f95f852bd8fca8fcc58a", "ref": "main",
              "author": "octo", "url": "https://gh/d/1", "state": "succeeded", "repository": "acme/checkout",
              "at": T0 - 20 * 60_000}
    ev = incident(services=["checkout"])
    planned = defaults.plan([ev], world(deploys=[deploy], configured=set()))
    notes = [p for p in planned if p.workflow == "recent-deploy"]
    assert [p.name for p in notes] == ["incidentio.add_note", "slack.notify"]
    assert notes[0].params["message"] == ("Deployed shortly before this incident: acme/checkout@main (f95f852bd8fc) "
                                          "by octo, succeeded: https://gh/d/1")
    stale = {**deploy, "at": T0 - 2 * 3600_000}
    staging = {**deploy, "environment": "staging"}
    for other in (stale, staging):
        assert not [p for p in defaults.plan([ev], world(deploys=[other])) if p.workflow == "recent-deploy"]


def test_catalog_routes_by_alias_and_reads_secrets_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PD_KEY_TEST", "secret-routing-key")
    rules = Rules(load_text("""
catalog:
  services:
    checkout-api: {aliases: [checkout], team: payments, pagerduty_routing_key: env:PD_KEY_TEST,
                   statuspage_components: [c1, c2]}
  teams:
    payments: {escalation: [{name: l2}]}
"""))
    planned = rules.plan([alert()], world())
    assert planned[0].params["routing_key"] == "secret-routing-key"
    assert planned[0].params["component"] == "checkout-api" and planned[0].params["group"] == "payments"
    sev1 = rules.plan([incident(services=["Checkout"])], world())
    assert next(p for p in sev1 if p.name == "statuspage.open").params["component_ids"] == ["c1", "c2"]


# -- conditions --------------------------------------------------------------------------------


def facts(ev: NormalisedEvent, incident_state: dict[str, Any] | None = None, before: dict[str, Any] | None = None,
          **kw: Any) -> Facts:
    base: dict[str, Any] = dict(event=ev, incident=incident_state, before=before, services=list(ev.services),
                                teams=[], pager="pagerduty", configured=set(), deploys=[], now_ms=T0, values={})
    base.update(kw)
    return Facts(**base)


@pytest.mark.parametrize(("cond", "expected"), [
    ({"severity": {"at_least": "SEV2"}}, True),
    ({"severity": {"at_least": "SEV1"}}, False),
    ({"severity": {"at_most": "SEV2", "at_least": "SEV2"}}, True),
    ({"severity": {"at_most": "SEV3"}}, False),  # at most SEV3: SEV3 or SEV4
    ({"severity": {"at_most": "SEV2"}}, True),
    ({"severity": ["SEV1", "SEV2"]}, True),
    ({"source": ["datadog", "grafana"]}, True),
    ({"service": "CHECKOUT"}, True),
    ({"labels": {"env": "pro*"}}, True),
    ({"labels": {"env": ["staging", "dev"]}}, False),
    ({"labels": {"missing": "*"}}, False),
    ({"kind": "alert.*"}, True),
    ({"any": [{"source": "datadog"}, {"labels": {"team": "sre"}}]}, True),
    ({"not": {"severity": "SEV2"}}, False),
    ({"all": [{"severity": "SEV2"}, {"environment": "production"}]}, False),
])
def test_condition(cond: dict[str, Any], expected: bool) -> None:
    assert matches(Condition.model_validate(cond), facts(alert())) is expected


def test_changed_compares_with_the_incident_before_the_event() -> None:
    before = advance(None, incident(), "k", T0)
    after = advance(before, incident(Kind.INCIDENT_UPDATED, severity="SEV2"), "k", T0 + 1)
    cond = Condition.model_validate({"changed": ["severity"]})
    assert matches(cond, facts(incident(), after, before))
    assert not matches(Condition.model_validate({"changed": "status"}), facts(incident(), after, before))
    assert not matches(cond, facts(incident(), after, None))  # a new incident changed nothing


def test_exists_and_guards() -> None:
    state = {"acknowledged_at": T0, "resolved_at": None}
    f = facts(incident(), state, values={"incident": {"statuspage_incident_id": "sp1"}, "team": {"escalation": []}})
    assert matches(Condition.model_validate({"exists": "incident.statuspage_incident_id"}), f)
    assert not matches(Condition.model_validate({"exists": "team.escalation.0.pagerduty_routing_key"}), f)
    from hub.rules.model import Step

    step = Step.model_validate({"action": "slack.notify", "after": "5m", "unless": ["acknowledged", "resolved"]})
    assert step.unless is not None and matches(step.unless, f)
    assert not matches(step.unless, facts(incident(), {"acknowledged_at": None}))


# -- templating --------------------------------------------------------------------------------


def test_single_expressions_keep_their_type_and_text_renders() -> None:
    ctx = {"event": {"links": [{"href": "u"}], "title": "T", "n": 3}, "incident": {"duration_s": 3723}}
    assert render_value("{{ event.links }}", ctx) == [{"href": "u"}]
    assert render_value({"a": ["{{ event.n }}", "x {{ event.title }}"]}, ctx) == {"a": [3, "x T"]}
    assert render_value("{{ incident.duration_s | duration }}", ctx) == "1h 02m"
    assert render_value("{{ 'SEV1' | pd_severity }} {{ 'SEV3' | og_priority }}", ctx) == "critical P3"
    assert render_value("{{ ['c1'] | component_status('partial_outage') }}", ctx) == {"c1": "partial_outage"}
    assert render_value("{{ event.missing | default('none') }}", ctx) == "none"
    with pytest.raises(UndefinedError):
        render_value("{{ event.missing }}", ctx)


@pytest.mark.parametrize("template", [
    "{{ event.__class__ }}", "{{ ''.__class__.__mro__ }}", "{{ event.items() }}",
    "{{ cycler.__init__.__globals__ }}", "{{ lipsum.__globals__ }}", "{{ event.title.upper() }}",
    "{{ event.title.__len__() }}", "{{ event.title.format.__globals__ }}",
])
def test_templates_cannot_reach_python(template: str) -> None:
    with pytest.raises((SecurityError, UndefinedError)):
        render_value(template, {"event": {"title": "x"}})


def test_mapping_keys_win_over_dict_methods() -> None:
    assert render_value("{{ steps.update.result.id }}", {"steps": {"update": {"result": {"id": 7}}}}) == 7
    assert render_value("{{ event.items }}", {"event": {"items": [1, 2]}}) == [1, 2]


def test_dry_run_shows_earlier_results_as_placeholders() -> None:
    rules = Rules(load_text("""
workflows:
  - name: open-and-tell
    on: incident.declared
    do:
      - id: open
        action: statuspage.open
        with: {key: "{{ incident.key }}", name: "{{ incident.title }}"}
      - id: tell
        action: slack.notify
        with: {text: "status page {{ steps.open.result.statuspage_incident_id }}"}
"""))
    open_, tell = rules.plan([incident()], world())
    assert tell.needs == ("open",)
    assert tell.params["text"] == "status page <steps.open.result.statuspage_incident_id>"
    assert tell.render({"open": {"result": {"statuspage_incident_id": "sp9"}, "state": "succeeded"}}) == {
        "text": "status page sp9"}
    assert open_.params == {"key": "incidentio:01ABC", "name": "INC-7: Checkout down"}


# -- incident state --------------------------------------------------------------------------


def test_advance_tracks_ack_resolve_and_severity_history() -> None:
    s1 = advance(None, incident(status="Triage", attributes={"status_category": "triage"}), "k", T0)
    assert s1["episode"] == 1 and s1["acknowledged_at"] is None and s1["severity_history"] == [[T0, "SEV1"]]
    s2 = advance(s1, incident(Kind.INCIDENT_STATUS_CHANGED, severity="SEV2",
                              attributes={"status_category": "live"}), "k", T0 + 5)
    assert s2["acknowledged_at"] == T0 + 5 and s2["acknowledged_by"] == "incidentio"
    assert s2["severity_history"] == [[T0, "SEV1"], [T0 + 5, "SEV2"]]
    ack = NormalisedEvent(kind=Kind.PAGE_ACKNOWLEDGED, source="pagerduty", fingerprint="k")
    assert advance(None, ack, "k", T0) == {}  # a page the hub does not know: no incident
    s3 = advance(s2, incident(Kind.INCIDENT_RESOLVED, attributes={"status_category": "closed",
                                                                  "resolution": "resolved"}), "k", T0 + 9)
    assert s3["resolved_at"] == T0 + 9 and s3["episode"] == 1
    reopened = advance(s3, incident(Kind.INCIDENT_UPDATED), "k", T0 + 20)
    assert reopened["episode"] == 2 and reopened["resolved_at"] is None and reopened["declared_at"] == T0 + 20


def test_an_edit_that_closes_the_incident_resolves_it_once(defaults: Rules) -> None:
    before = {**advance(None, incident(), "incidentio:01ABC", T0), "page_dedup_key": "incidentio:01ABC"}
    closed = incident(Kind.INCIDENT_UPDATED, status="Closed", attributes={"status_category": "closed"})
    w = world(incidents={"incidentio:01ABC": before}, keys=["incidentio:01ABC"])
    planned = defaults.plan([closed], w)
    assert [p.name for p in planned] == ["hub.cancel_timers", "pagerduty.resolve", "slack.notify",
                                         "jira.create_issue"]
    assert planned[1].id == "incidentio:01ABC#1:incident-resolved:resolve-page"
    # the status update that follows plans the same identities (claimed by the first: not run twice)
    after = advance(before, closed, "incidentio:01ABC", T0 + 5)
    resolved = incident(Kind.INCIDENT_RESOLVED, status="Closed", attributes={"status_category": "closed"})
    again = defaults.plan([resolved], world(incidents={"incidentio:01ABC": after}, keys=["incidentio:01ABC"]))
    assert [p.id for p in again] == [p.id for p in planned]


def test_a_step_read_only_for_its_outcome_is_watched_not_needed() -> None:
    """`steps.X.state` / `.error` only: wait for X, run whatever its outcome; reading its result needs success."""
    from hub.rules import templating

    text = "{% if steps['page'].state == 'succeeded' %}paged{% else %}not: {{ steps['page'].error }}{% endif %}"
    assert templating.outcome_reads(text) == {"page"}
    assert templating.outcome_reads("{{ steps.page.state }} {{ steps.page.result.id }}") == set()
    assert templating.outcome_reads("{{ steps.open.result.id }}") == set()


@pytest.mark.parametrize("pattern", ["alert.firing", "alert.*", "*", "incident.?eclared", "alert.[fr]*", "incident",
                                     "alert.firing.x", "ALERT.firing", "[", "alert.firin"])
@pytest.mark.parametrize("kind", ["alert.firing", "alert.resolved", "incident.declared", "deploy.finished", ""])
def test_a_kind_matches_a_pattern_exactly_as_fnmatch_says(pattern: str, kind: str) -> None:
    assert kind_matches(kind, [pattern]) is fnmatch.fnmatchcase(kind, pattern)
