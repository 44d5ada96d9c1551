"""`incident-hub test`: rule test cases, each `expect` field passing and failing, exit codes, JUnit.

Everything here plans offline: no Redis is started (the CLI tests point REDIS_URL at a closed
port to prove it is never needed).
"""

from __future__ import annotations

import asyncio
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from hub.cli.main import main
from hub.core.registry import connector_classes
from hub.operators.rule_cases import load
from hub.operators.rule_tests import CaseResult, run_all
from hub.rules import DEFAULTS_PATH, load_file
from hub.rules.engine import Rules

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_RULES = ROOT / "examples" / "tested-hub.yaml"
EXAMPLES = ROOT / "examples" / "tests"

FIRING = """\
  status: firing
  groupKey: 'g-{name}'
  alerts:
    - status: firing
      fingerprint: {name}
      labels: {{alertname: {name}, severity: {severity}, service: {service}}}
"""


def alert(name: str = "HighErrorRate", severity: str = "critical", service: str = "checkout",
          indent: int = 4) -> str:
    """An Alertmanager payload as YAML, indented for a case's `payload:`."""
    return textwrap.indent(FIRING.format(name=name, severity=severity, service=service), " " * indent)


@pytest.fixture(autouse=True)
def _no_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # a closed port: any use would fail


def rules_with(tmp_path: Path, extra: str = "") -> Rules:
    path = tmp_path / "hub.yaml"
    path.write_text(EXAMPLE_RULES.read_text() + extra)
    return Rules(load_file(path))


def run_text(tmp_path: Path, text: str, rules: Rules | None = None) -> CaseResult:
    """Run the one case of a test file's text; its result."""
    path = tmp_path / "case.yaml"
    path.write_text(text)
    cases, bodies = load(path)
    (result,) = asyncio.run(run_all(cases, bodies, rules or rules_with(tmp_path), set(connector_classes())))
    return result


def case(expect: str, *, at: str = "2024-06-18T10:00:00Z", given: str = "", payload: str | None = None) -> str:
    return (f"cases:\n  - name: the case\n    source: alertmanager\n    at: {at}\n"
            + (f"    given:\n{given}" if given else "")
            + f"    payload:\n{payload or alert()}    expect:\n"
            + textwrap.indent(textwrap.dedent(expect), "      "))


def given_alert(name: str = "HighErrorRate", at: str = "2024-06-18T09:59:00Z", service: str = "checkout",
                source: str = "alertmanager") -> str:
    return f"      - source: {source}\n        at: {at}\n        payload:\n" + alert(name, service=service, indent=10)


# -- the shipped examples ------------------------------------------------------------------------


def test_the_examples_pass_through_the_cli_and_the_junit_report_says_so(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "report.xml"
    code = main(["test", "--rules", str(EXAMPLE_RULES), str(EXAMPLES), "--junit-xml", str(report)])
    out = capsys.readouterr().out
    assert code == 0, out
    names = [c["name"] for f in sorted(EXAMPLES.glob("*.yaml")) for c in yaml.safe_load(f.read_text())["cases"]]
    root = ET.parse(report).getroot()
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == (str(len(names)), "0", "0")
    cases = root.findall("./testsuite/testcase")
    assert sorted(c.get("name") for c in cases) == sorted(names)
    assert not root.findall(".//failure") and not root.findall(".//error")
    assert out.count("PASS ") == len(names)
    assert f"{len(names)} cases: {len(names)} passed, 0 failed" in out


def test_the_examples_cover_every_built_in_workflow() -> None:
    cases, bodies = [], {}
    for f in sorted(EXAMPLES.glob("*.yaml")):
        found, payloads = load(f)
        cases += found
        bodies.update(payloads)
    results = asyncio.run(run_all(cases, bodies, Rules(load_file(EXAMPLE_RULES)), set(connector_classes())))
    assert all(r.status == "pass" for r in results), [(r.name, r.failures) for r in results if r.status != "pass"]
    built_in = {wf["name"] for wf in yaml.safe_load(DEFAULTS_PATH.read_text())["workflows"]}
    covered = set().union(*(r.workflows for r in results))
    assert built_in <= covered, f"no example case plans an action of {sorted(built_in - covered)}"


# -- each expect field, passing and failing --------------------------------------------------------


def test_actions_match_a_subset_of_the_parameters(tmp_path: Path) -> None:
    ok = run_text(tmp_path, case("""\
        actions:
          - action: pagerduty.trigger
            with: {severity: SEV1, component: checkout-api, custom_details: {labels: {service: checkout}}}
          - {action: incidentio.create_incident, workflow: alert-page, step: open-incident}
        """))
    assert ok.status == "pass", ok.failures


def test_actions_fail_with_the_differing_parameter_and_the_plan(tmp_path: Path) -> None:
    bad = run_text(tmp_path, case("""\
        actions:
          - {action: pagerduty.trigger, with: {severity: SEV2, routing_key: nope}}
          - {action: opsgenie.create}
        """))
    assert bad.status == "fail"
    first, second = bad.failures
    assert "pagerduty.trigger" in first and "severity: expected 'SEV2', planned 'SEV1'" in first
    assert "routing_key: expected 'nope', not set" in first
    assert second.startswith("expected action opsgenie.create") and "none planned" in second
    assert any(p.startswith("pagerduty.trigger [alert-page/page]") for p in bad.planned)


def test_two_expected_actions_need_two_planned_ones(tmp_path: Path) -> None:
    bad = run_text(tmp_path, case("""\
        actions:
          - {action: pagerduty.trigger}
          - {action: pagerduty.trigger}
        """))
    assert bad.status == "fail" and len(bad.failures) == 1 and "none planned" in bad.failures[0]


def test_not_actions(tmp_path: Path) -> None:
    assert run_text(tmp_path, case("not_actions: [opsgenie.create, slack.notify]\n")).status == "pass"
    bad = run_text(tmp_path, case("not_actions: [opsgenie.create, pagerduty.trigger]\n"))
    assert bad.failures == ["expected no pagerduty.trigger; planned: [alert-page/page]"]


def test_modes_switch_on_a_connector_mode_for_the_case(tmp_path: Path) -> None:
    """`modes: [slack.api]` plans as with a Slack bot token: the living message, not the webhook post."""
    living = "actions:\n  - {action: slack.incident, workflow: slack-incident}\n"
    plain = case(living)
    assert run_text(tmp_path, plain).status == "fail"
    with_mode = plain.replace("    source: alertmanager\n", "    source: alertmanager\n    modes: [slack.api]\n", 1)
    assert run_text(tmp_path, with_mode).status == "pass"


def test_incident_opens(tmp_path: Path) -> None:
    assert run_text(tmp_path, case("incident: opens\n")).status == "pass"
    bad = run_text(tmp_path, case("incident: opens\n", given=given_alert()))
    assert bad.status == "fail" and bad.failures[0].startswith("expected a new incident; joined alertmanager:group:")


def test_incident_joins_a_given_webhook_by_index_or_key(tmp_path: Path) -> None:
    ok = run_text(tmp_path, case("incident: {joins: 1}\nnot_actions: [pagerduty.trigger]\n",
                                 given=given_alert("Other") + given_alert()))
    assert ok.status == "pass", ok.failures
    bad = run_text(tmp_path, case("incident: {joins: 0}\n", given=given_alert("Other") + given_alert()))
    assert bad.status == "fail" and "expected to join the incident of given[0]" in bad.failures[0]
    by_key = run_text(tmp_path, case("incident: {joins: 'nope:1'}\n", given=given_alert()))
    assert by_key.status == "fail" and by_key.failures[0].startswith("expected to join nope:1; joined alertmanager:")


def test_a_given_alert_that_resolved_lets_the_next_firing_page_again(tmp_path: Path) -> None:
    resolved = ("      - source: alertmanager\n        at: 2024-06-18T09:59:30Z\n        payload:\n"
                + alert(indent=10).replace("firing", "resolved"))
    text = case("incident: {joins: 0}\nactions: [{action: pagerduty.trigger}]\n", given=given_alert() + resolved)
    result = run_text(tmp_path, text)
    assert result.status == "pass", result.failures


def test_suppressed_by(tmp_path: Path) -> None:
    sunday = "2024-06-16T02:30:00Z"
    assert run_text(tmp_path, case("suppressed_by: sunday-db-maintenance\nnot_actions: [pagerduty.trigger]\n",
                                   at=sunday)).status == "pass"
    bad = run_text(tmp_path, case("suppressed_by: sunday-db-maintenance\n"))  # a Tuesday
    assert bad.failures == ["expected every event held back by maintenance window 'sunday-db-maintenance'; "
                            "1 of 1 not held by any window"]
    other = run_text(tmp_path, case("suppressed_by: weekly\n", at=sunday))
    assert other.failures == ["expected every event held back by maintenance window 'weekly'; "
                              "held by sunday-db-maintenance"]


def test_timers(tmp_path: Path) -> None:
    declared = ("cases:\n  - name: the case\n    source: incidentio\n    payload:\n"
                "      event_type: public_incident.incident_created_v2\n"
                "      public_incident.incident_created_v2:\n"
                "        {id: X1, name: Down, severity: {name: Major, rank: 2},"
                " incident_status: {category: live, name: Investigating}}\n"
                "    expect:\n      timers:\n")
    ok = run_text(tmp_path, declared + "        - {step: escalate, after: 15m}\n"
                                       "        - {step: escalate-notify}\n"
                                       "        - {step: reminder, after: 30m, every: 30m}\n")
    assert ok.status == "pass", ok.failures
    bad = run_text(tmp_path, declared + "        - {step: escalate, after: 5m}\n        - {step: nope}\n")
    assert bad.failures == ["expected timer escalate after 5m; planned after 15m", "expected timer nope: no such "
                                                                                      "timer planned"]
    none = run_text(tmp_path, case("timers: []\n"))
    assert none.status == "pass"
    some = run_text(tmp_path, declared + "        []\n")
    assert some.status == "fail" and some.failures[0].startswith("expected no timers; planned ")


GROUPING = "\ngrouping:\n  by: [service]\n  window: 5m\n  defer: 2m\n"


def test_deferred(tmp_path: Path) -> None:
    rules = rules_with(tmp_path, GROUPING)
    ok = run_text(tmp_path, case("deferred: true\ntimers: [{step: page, after: 2m}]\n"), rules)
    assert ok.status == "pass", ok.failures
    bad = run_text(tmp_path, case("deferred: false\n"), rules)
    assert bad.failures == ["expected no deferral; deferred: alert-page"]
    plain = run_text(tmp_path, case("deferred: true\n"))  # no grouping.defer in the rules
    assert plain.status == "fail" and plain.failures[0].startswith("expected the alert workflows to be deferred")


def test_correlation_joins_an_alert_of_another_source_within_the_window(tmp_path: Path) -> None:
    rules = rules_with(tmp_path, "\ngrouping:\n  by: [service]\n  window: 5m\n")
    datadog = ("cases:\n  - name: the case\n    source: datadog\n    at: 2024-06-18T10:00:00Z\n    given:\n"
               + given_alert()
               + "    payload: {id: '1', title: '[Triggered] [P1] Errors', alert_id: '9', alert_transition: Triggered,"
                 " alert_priority: P1, date: '1718704800000', tags: 'service:checkout'}\n"
                 "    expect:\n      incident: {joins: 0}\n      not_actions: [pagerduty.trigger]\n")
    ok = run_text(tmp_path, datadog, rules)
    assert ok.status == "pass", ok.failures
    # later than the window after the first alert resolved: an incident of its own
    resolved = ("      - source: alertmanager\n        at: 2024-06-18T09:59:30Z\n        payload:\n"
                + alert(indent=10).replace("firing", "resolved"))
    late = run_text(tmp_path, datadog.replace("    given:\n", "    given:\n").replace(
        "    expect:", "    expect:").replace(given_alert(), given_alert() + resolved).replace(
        "at: 2024-06-18T10:00:00Z", "at: 2024-06-18T10:10:00Z"), rules)
    assert late.status == "fail" and any(f.startswith("expected to join the incident of given[0] (")
                                         and f.endswith("; opened datadog:9") for f in late.failures)
    # without grouping the Datadog alert is an incident of its own, and pages
    alone = run_text(tmp_path, datadog)
    assert alone.status == "fail" and any(f.startswith("expected to join") for f in alone.failures)
    assert any("expected no pagerduty.trigger" in f for f in alone.failures)


def test_a_deploy_opens_a_quiet_period_for_later_alerts(tmp_path: Path) -> None:
    deploy = ("      - source: github\n        at: 2024-06-18T09:59:00Z\n"
              f"        payload: {EXAMPLES / 'payloads' / 'github_deployment.json'}\n"
              "        headers: {X-GitHub-Event: deployment}\n")
    ok = run_text(tmp_path, case("suppressed_by: deploy of checkout-api\n", given=deploy))
    assert ok.status == "pass", ok.failures
    later = run_text(tmp_path, case("suppressed_by: deploy of checkout-api\n", given=deploy,
                                    at="2024-06-18T11:30:00Z"))  # past deploy_quiet_max (1h)
    assert later.status == "fail"


# -- the command: output, exit codes, unusable input ---------------------------------------------


def write(tmp_path: Path, text: str, name: str = "t.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_failing_case_exits_1_with_a_diff_and_a_junit_failure(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, case("actions: [{action: pagerduty.trigger, with: {severity: SEV3}}]\n")
                 + case("not_actions: [opsgenie.create]\n").replace("cases:\n", "").replace("the case", "other"))
    report = tmp_path / "r.xml"
    code = main(["test", "--rules", str(EXAMPLE_RULES), str(path), "--junit-xml", str(report)])
    out = capsys.readouterr().out
    assert code == 1
    assert f"FAIL  {path}::the case" in out and f"PASS  {path}::other" in out
    assert "severity: expected 'SEV3', planned 'SEV1'" in out and "planned:" in out
    assert "2 cases: 1 passed, 1 failed" in out
    root = ET.parse(report).getroot()
    (suite,) = root.findall("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("2", "1", "0")
    failed = suite.find("testcase[@name='the case']")
    assert failed is not None
    failure = failed.find("failure")
    assert failure is not None and "expected action pagerduty.trigger" in failure.get("message", "")
    assert "pagerduty.trigger [alert-page/page]" in (failure.text or "")
    passed = suite.find("testcase[@name='other']")
    assert passed is not None and len(passed) == 0


def test_a_payload_the_source_rejects_is_an_error_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, case("incident: opens\n", payload="      {not: alertmanager}\n"))
    report = tmp_path / "r.xml"
    assert main(["test", "--rules", str(EXAMPLE_RULES), str(path), "--junit-xml", str(report)]) == 2
    out = capsys.readouterr().out
    assert f"ERROR {path}::the case" in out and "the alertmanager payload was rejected" in out
    assert ET.parse(report).getroot().find("./testsuite/testcase/error") is not None


@pytest.mark.parametrize(("text", "message"), [
    ("cases: [\n", "not valid YAML"),
    ("- just a list\n", "a mapping with `cases:`"),
    ("cases:\n  - {name: a, source: nagios, payload: {}, expect: {}}\n", "unknown source 'nagios'"),
    ("cases:\n  - {name: a, source: datadog, payload: missing.json, expect: {}}\n", "payload file 'missing.json'"),
    ("cases:\n  - {name: a, source: datadog, payload: {}, expect: {actons: []}}\n", "expect.actons"),
    ("cases:\n  - {name: a, source: datadog, payload: {a: !!binary aGk=}, expect: {}}\n",
     "the payload cannot be sent as JSON: a bytes value has no JSON form"),
    ("cases:\n  - {name: a, source: datadog, payload: {}, expect: {incident: closes}}\n", "use `opens`"),
    ("cases:\n  - {name: a, source: datadog, payload: {}, modes: [api], expect: {}}\n",
     "a mode is written connector.mode"),
    ("cases:\n  - {name: a, source: datadog, payload: {}, expect: {incident: {joins: 0}}}\n",
     "joins: 0 is not the index of a `given` webhook"),
    ("cases:\n  - {name: a, source: datadog, payload: {}, at: yesterday, expect: {}}\n", "cases.0.at"),
    ("cases:\n  - {name: a, source: datadog, payload: {}, expect: {timers: [{step: x, after: soon}]}}\n",
     "'soon' is not a duration"),
    ("cases:\n  - {name: a, source: datadog, payload: {}, expect: {}}\n"
     "  - {name: a, source: datadog, payload: {}, expect: {}}\n", "case names must be unique"),
])
def test_unusable_input_exits_2_with_a_clear_message_and_no_traceback(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str) -> None:
    path = write(tmp_path, text)
    assert main(["test", "--rules", str(EXAMPLE_RULES), str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert err.startswith(f"incident-hub test: {path}")


def test_a_file_that_is_not_text_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "t.yaml"
    path.write_bytes(b"cases: \xff\xfe\n")
    assert main(["test", "--rules", str(EXAMPLE_RULES), str(path)]) == 2
    assert capsys.readouterr().err == f"incident-hub test: {path}: not UTF-8 text\n"


def test_no_test_files_and_invalid_rules_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["test", "--rules", str(EXAMPLE_RULES), str(tmp_path)]) == 2
    assert "no test files" in capsys.readouterr().err
    assert main(["test", "--rules", str(tmp_path / "missing.yaml"), str(EXAMPLES)]) == 2
    assert "the rules file is invalid" in capsys.readouterr().err


def test_help_describes_the_file_format_and_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["test", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for words in ("--junit-xml", "--rules", "not_actions", "suppressed_by", "exit status", "1 a case failed"):
        assert words in out


def test_control_characters_keep_the_junit_report_well_formed(tmp_path: Path) -> None:
    """What XML cannot carry (a case name with an escape sequence) is replaced, not written raw;
    payload text in the planned parameters is JSON-escaped."""
    text = case("not_actions: [pagerduty.trigger]\n", payload=alert(name='"Disk\\e[31mfull"'))
    path = write(tmp_path, text.replace("name: the case", 'name: "red \\e[31m case \\0"'))
    report = tmp_path / "r.xml"
    assert main(["test", "--rules", str(EXAMPLE_RULES), str(path), "--junit-xml", str(report)]) == 1
    testcase = ET.parse(report).getroot().find("./testsuite/testcase")
    assert testcase is not None and testcase.get("name") == "red \ufffd[31m case \ufffd"
    failure = testcase.find("failure")
    assert failure is not None and "Disk\\u001b[31mfull" in (failure.text or "")


def test_a_storm_summary_without_an_incident_is_of_the_given_alerts_incident(tmp_path: Path) -> None:
    """The group's incident key is the hub's own hash of its groupKey: a case need not spell it."""
    storm = ("    payload: {seq: 1, count: 12, top_labels: [{label: pod, value: api-2, count: 12}]}\n"
             "    expect:\n      actions:\n        - {action: slack.notify, workflow: storm-summary}\n")
    text = (f"cases:\n  - name: the case\n    source: storm\n    at: 2024-06-18T10:05:00Z\n"
            f"    given:\n{given_alert(at='2024-06-18T10:00:00Z')}" + storm)
    ok = run_text(tmp_path, text)
    assert ok.status == "pass", ok.failures
    assert any("HighErrorRate" in line and "12 more alerts joined" in line for line in ok.planned), ok.planned
    alone = text.replace(f"    given:\n{given_alert(at='2024-06-18T10:00:00Z')}", "")
    lone = run_text(tmp_path, alone)
    assert lone.status == "error"  # nothing to be a summary of: the body lacks its incident
