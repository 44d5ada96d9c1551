"""Loading and validating rules files: every error with its line, column and a hint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hub.cli.commands.validate import schema_text
from hub.rules import DEFAULTS_PATH, RulesError, load_file, load_text

ROOT = Path(__file__).parent.parent
BROKEN = Path(__file__).parent / "data" / "rules" / "broken"

#: file → (line, column, words the message must contain, words the hint must contain)
EXPECTED: dict[str, tuple[int, int, str, str]] = {
    "syntax.yaml": (6, 22, "YAML syntax", "quoting"),
    "duplicate_key.yaml": (7, 5, "duplicate key 'name'", "line 2"),
    "unknown_key.yaml": (5, 9, "unknown key 'acton'", "did you mean 'action'?"),
    "unknown_action.yaml": (6, 17, "slack has no action 'notiffy'", "did you mean 'slack.notify'?"),
    "unknown_connector.yaml": (6, 17, "unknown connector 'pagerdutty'", "did you mean 'pagerduty'?"),
    "bad_severity.yaml": (5, 17, "'SEV5' is not allowed here", "'SEV1', 'SEV2', 'SEV3' or 'SEV4'"),
    "bad_duration.yaml": (6, 16, "not a duration: '5 minutes'", ""),
    "unknown_kind.yaml": (3, 24, "unknown event kind 'incident.declard'", "did you mean 'incident.declared'?"),
    "unknown_team.yaml": (5, 13, "unknown team 'paymnets'", "did you mean 'payments'?"),
    "template_syntax.yaml": (8, 17, "template syntax", "{{ event.title }}"),
    "template_variable.yaml": (7, 17, "unknown template variable 'evnt'", "did you mean 'event'?"),
    "template_field.yaml": (8, 20, "unknown variable incident.severty; did you mean incident.severity?",
                            "incident has: "),
    "step_reference.yaml": (8, 17, "steps.open is not an earlier step", "none here"),
    "reads_delayed_step.yaml": (11, 22, "steps.later is not an earlier step", "not delayed"),
    "missing_on.yaml": (5, 5, "missing required key 'on'", ""),
    "bad_guard.yaml": (7, 17, "unknown guard 'acked'", ""),
    "source_option.yaml": (7, 18, "grafana option: severity_map['warning']: 'SEV9'", ""),
    "group_timing.yaml": (9, 13, "a step inside a group cannot", "put the timing on the group"),
    "duplicate_step_id.yaml": (6, 9, "step id 'slack-notify' is used twice", "its own `id`"),
    "not_a_mapping.yaml": (1, 1, "must be a mapping at the top level", "catalog:"),
    "bad_record.yaml": (7, 33, "'statuspage_id' is not allowed here", "did you mean 'statuspage_incident_id'?"),
}


def test_every_broken_file_has_an_expectation() -> None:
    assert sorted(p.name for p in BROKEN.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_broken_file_reports_the_right_place(name: str) -> None:
    line, column, message, hint = EXPECTED[name]
    with pytest.raises(RulesError) as e:
        load_file(BROKEN / name)
    (problem,) = [p for p in e.value.problems if p.severity == "error"]
    assert (problem.line, problem.column) == (line, column), problem
    assert message in problem.message
    assert hint in problem.hint
    assert f"{BROKEN / name}:{line}:{column}: error: " in e.value.report()


def test_template_fields_are_checked_against_what_each_step_can_see() -> None:
    """Nested fields, list items, earlier steps' views and `exists:` paths; free-form data is not checked."""
    text = """\
version: 1
workflows:
  - name: wf
    on: [incident.declared]
    do:
      - id: open
        action: slack.notify
        with:
          text: "{{ team.escalation[0].nme }} {{ event.attributes.anything.goes }} {{ event.labels.env }}"
      - id: after
        if: {exists: incident.statuspage_incidnet_id}
        action: slack.notify
        with:
          text: "{{ steps.open.reslt.id }} {{ steps.open.result.whatever }} {{ services[0].team }}"
          summary: "{% for s in services %}{{ s.nme }}{% endfor %}{{ deploy.sha[:12] }}"
        record: {jira_key: "{{ result.key }} {{ params.x }}"}
"""
    with pytest.raises(RulesError) as e:
        load_text(text, "t.yaml")
    got = sorted((p.line, p.message) for p in e.value.problems if p.severity == "error")
    assert got == [
        (9, "unknown variable team.escalation.0.nme; did you mean team.escalation.0.name?"),
        (11, "unknown variable incident.statuspage_incidnet_id; did you mean incident.statuspage_incident_id?"),
        (14, "unknown variable steps.open.reslt; did you mean steps.open.result?"),
    ]


def test_a_typo_inside_a_block_template_is_reported_on_its_own_line() -> None:
    text = """\
version: 1
workflows:
  - name: wf
    on: [incident.declared]
    do:
      - action: slack.notify
        with:
          text: |
            Incident {{ incident.title }}
            Severity {{ incident.severty }}
"""
    with pytest.raises(RulesError) as e:
        load_text(text, "t.yaml")
    (problem,) = e.value.problems
    assert problem.line == 10 and "incident.severty" in problem.message


def test_all_errors_are_reported_not_just_the_first() -> None:
    text = """\
catalog:
  services:
    api: {team: nobody}
workflows:
  - name: a
    on: alert.fire
    do:
      - action: slack.nottify
        with: {text: "{{ evnt.title }}"}
"""
    with pytest.raises(RulesError) as e:
        load_text(text, "hub.yaml")
    assert [(p.line, p.message.split(" '")[0]) for p in e.value.problems] == [
        (3, "unknown team"), (6, "unknown event kind"), (8, "slack has no action"), (9, "unknown template variable")]


def test_defaults_are_valid_and_shipped_as_the_example() -> None:
    loaded = load_file(None)
    assert loaded.source == "<built-in defaults>" and loaded.warnings == []
    names = [w.name for w in loaded.config.workflows]
    assert names == ["page-on-call", "announce-minor", "statuspage-open", "incident-changed", "incident-resolved",
                     "followup-jira", "alert-page", "alert-resolved", "storm-summary", "slack-channel",
                     "slack-incident", "slack-dm",
                     "recent-deploy", "deploy-failed"]
    assert (ROOT / "examples" / "hub.yaml").read_text() == DEFAULTS_PATH.read_text()


def test_published_schema_is_current() -> None:
    assert (ROOT / "docs" / "hub.schema.json").read_text() == schema_text(), \
        "regenerate: incident-hub validate --schema > docs/hub.schema.json"


def test_schema_describes_the_language() -> None:
    schema = json.loads(schema_text())
    step = schema["$defs"]["Step"]["properties"]
    assert {"action", "with", "do", "if", "after", "every", "unless", "identity", "record"} <= set(step)
    assert schema["$defs"]["Workflow"]["required"] == ["name", "on", "do"]
    assert schema["$defs"]["Step"]["additionalProperties"] is False


def test_catalog_only_file_keeps_the_default_workflows(tmp_path: Path) -> None:
    path = tmp_path / "hub.yaml"
    path.write_text("catalog:\n  services:\n    api: {aliases: [API]}\n")
    loaded = load_file(path)
    assert list(loaded.config.catalog.services) == ["api"]
    assert [w.name for w in loaded.config.workflows] == [w.name for w in load_file(None).config.workflows]
    path.write_text("catalog: {}\nworkflows: []\n")
    assert load_file(path).config.workflows == []


def test_on_is_a_key_not_yaml_true() -> None:
    """YAML 1.1 reads a bare `on` as true; the loader takes keys as written."""
    loaded = load_text("workflows:\n  - name: a\n    on: incident.declared\n    do: [{action: slack.notify}]\n")
    assert loaded.config.workflows[0].on == ["incident.declared"]


def test_an_unset_reference_is_an_error_and_an_optional_one_a_warning(monkeypatch: pytest.MonkeyPatch,
                                                                       tmp_path: Path) -> None:
    """`env:NAME` unset is an error naming the variable and the line (the worker would page with
    the global key instead); `env:NAME?` opts out, and a literal secret is a warning."""
    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.delenv("PD_UNSET_FOR_TEST", raising=False)
    with pytest.raises(RulesError) as e:
        load_text("catalog:\n  services:\n    a: {pagerduty_routing_key: env:PD_UNSET_FOR_TEST}\n")
    (problem,) = e.value.problems
    assert (problem.line, problem.severity) == (3, "error") and "PD_UNSET_FOR_TEST" in problem.message
    loaded = load_text("catalog:\n  services:\n    a: {pagerduty_routing_key: 'env:PD_UNSET_FOR_TEST?'}\n"
                       "    b: {pagerduty_routing_key: 0123456789abcdef0123456789abcdef}\n  teams: {}\n")
    assert [(w.line, w.severity) for w in loaded.warnings] == [(3, "warning"), (4, "warning")]
    assert "PD_UNSET_FOR_TEST" in loaded.warnings[0].message
    assert loaded.warnings[1].message == "a secret is written in the file"
    with pytest.raises(RulesError) as e:
        load_text("catalog:\n  services:\n    a: {slack_webhook: 'env:not-a-name'}\n")
    assert e.value.problems[0].message == "'env:not-a-name' is not a valid environment reference"


def test_references_resolve_from_dotenv_like_the_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A team key kept in `.env` (which the settings read) is set for hub.yaml too."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PD_KEY_DOTENV_TEST", raising=False)
    (tmp_path / ".env").write_text("PD_KEY_DOTENV_TEST=team-key-from-dotenv-0123\n")
    loaded = load_text("catalog:\n  services:\n    a: {pagerduty_routing_key: env:PD_KEY_DOTENV_TEST}\n")
    assert loaded.warnings == []
    from hub.rules import Rules, World

    assert Rules(loaded).service_view("a", World())["pagerduty_routing_key"] == "team-key-from-dotenv-0123"


def test_the_process_environment_overrides_dotenv_and_unset_stays_unset(monkeypatch: pytest.MonkeyPatch,
                                                                       tmp_path: Path) -> None:
    """The environment view reads lazily, with the settings' precedence: process over `.env`."""
    from hub.core import envref

    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("ENVREF_BOTH=from-dotenv\nENVREF_FILE_ONLY=file-value\n")
    monkeypatch.setenv("ENVREF_BOTH", "from-process")
    monkeypatch.delenv("ENVREF_FILE_ONLY", raising=False)
    monkeypatch.delenv("ENVREF_NOWHERE", raising=False)
    env = envref.environment()
    assert env["ENVREF_BOTH"] == "from-process" and env.get("ENVREF_FILE_ONLY") == "file-value"
    assert envref.lookup("ENVREF_NOWHERE", env) is None and "ENVREF_NOWHERE" not in env
    assert {"ENVREF_BOTH", "ENVREF_FILE_ONLY"} <= set(env)


def test_validate_exits_non_zero_naming_the_variable_and_line(tmp_path: Path) -> None:
    (tmp_path / "hub.yaml").write_text("version: 1\ncatalog:\n  teams:\n    payments:\n"
                                       "      pagerduty_routing_key: env:PD_KEY_NOT_SET_ANYWHERE\n")
    out = subprocess.run([sys.executable, "-m", "hub", "validate", "hub.yaml"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60, env={k: v for k, v in __import__("os").environ.items()
                                                     if k != "PD_KEY_NOT_SET_ANYWHERE"})
    assert out.returncode != 0
    assert "hub.yaml:5:" in out.stdout + out.stderr and "PD_KEY_NOT_SET_ANYWHERE" in out.stdout + out.stderr


def test_unreadable_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RulesError) as e:
        load_file(tmp_path / "missing.yaml")
    assert "cannot read the rules file" in e.value.problems[0].message


def _cli(*args: str, env_config: str | None = None) -> subprocess.CompletedProcess[str]:
    import os

    env = {**os.environ}
    env.pop("HUB_CONFIG", None)
    if env_config:
        env["HUB_CONFIG"] = env_config
    return subprocess.run([sys.executable, "-m", "hub", *args], capture_output=True, text=True, env=env,
                          cwd=str(ROOT), timeout=60)


def test_validate_cli_errors_and_exit_code() -> None:
    out = _cli("validate", str(BROKEN / "unknown_kind.yaml"))
    assert out.returncode == 1
    assert out.stdout.splitlines() == [
        f"{BROKEN / 'unknown_kind.yaml'}:3:24: error: unknown event kind 'incident.declard' (at workflows[0].on[1])",
        "    hint: did you mean 'incident.declared'?",
        f"{BROKEN / 'unknown_kind.yaml'}: 1 error"]


def test_validate_cli_ok_summary_and_json(tmp_path: Path) -> None:
    out = _cli("validate")
    assert out.returncode == 0
    assert out.stdout.strip() == ("ok: <built-in defaults>: 14 workflows (14 enabled, 43 actions, 3 timers), "
                                  "0 services, 0 teams")
    path = tmp_path / "hub.yaml"
    path.write_text((BROKEN / "bad_guard.yaml").read_text())
    data = json.loads(_cli("validate", "--json", env_config=str(path)).stdout)
    assert data["ok"] is False and data["file"] == str(path)
    assert [(e["line"], e["column"]) for e in data["errors"]] == [(7, 17)]


def test_simulate_prints_rendered_actions_and_touches_nothing() -> None:
    fixture = str(ROOT / "tests" / "fixtures" / "inbound" / "incidentio_incident_created.json")
    out = _cli("simulate", "incidentio", fixture, "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert [e["kind"] for e in data["events"]] == ["incident.declared"]
    rows = [(a["name"], a["step"], a["delay_s"]) for a in data["actions"]]
    assert rows == [("pagerduty.trigger", "page", 0), ("slack.notify", "announce", 0),
                    ("slack.notify", "reminder", 1800.0), ("slack.notify", "escalate-notify", 900.0),
                    ("incidentio.add_note", "escalate-note", 900.0), ("slack.notify", "escalate-again-notify", 1800.0),
                    ("incidentio.add_note", "escalate-again-note", 1800.0)]
    assert data["actions"][0]["params"]["dedup_key"] == "incidentio:01J0ZKW6305FATZYDS3AR0RGXJ"
    assert data["actions"][2]["timer"] == {"after": {"SEV1": 900.0, "SEV2": 1800.0},
                                           "every": {"SEV1": 900.0, "SEV2": 1800.0}, "unless": ["resolved"]}
    text = _cli("simulate", "incidentio", fixture).stdout.splitlines()
    assert text[1] == ("event  incident.declared        SEV2  incidentio:01J0ZKW6305FATZYDS3AR0RGXJ  INC-1482: "
                       "Checkout API returning 5xx errors")
    assert text[5].startswith("action slack.notify               [page-on-call/announce]")
    assert "after SEV1: 15m, SEV2: 30m, every SEV1: 15m, SEV2: 30m unless resolved" in text[8]


def test_simulate_says_where_each_action_goes_masked_but_distinguishable(tmp_path: Path) -> None:
    import os

    path = tmp_path / "hub.yaml"
    path.write_text("catalog:\n  services:\n    checkout:\n      aliases: [Payments]\n"
                    "      pagerduty_routing_key: env:SIM_PD_CHECKOUT\n      slack_webhook: env:SIM_HOOK_PAY\n"
                    "  sources:\n    incidentio: {services_field: Affected Team}\n")
    env = {"SIM_PD_CHECKOUT": "pd-checkout-key-000000000000AAAA",
           "SIM_HOOK_PAY": "https://hooks.slack.com/services/T0/B0/payments-hook-PPPP",
           "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0/B0/global-hook-GGGG"}
    os.environ.update(env)
    try:
        fixture = str(ROOT / "tests" / "fixtures" / "inbound" / "incidentio_incident_created.json")
        out = _cli("simulate", "incidentio", fixture, "--config", str(path))
        data = json.loads(_cli("simulate", "incidentio", fixture, "--json", "--config", str(path)).stdout)
    finally:
        for name in env:
            del os.environ[name]
    assert out.returncode == 0, out.stderr
    targets = {(a["step"]): a["target"] for a in data["actions"]}
    assert targets["page"].startswith("PagerDuty routing key …AAAA (the step's routing_key")
    assert targets["announce"].startswith("Slack webhook …PPPP (the step's webhook_url")
    assert "→ PagerDuty routing key …AAAA" in out.stdout
    for secret in env.values():
        assert secret not in out.stdout and secret not in json.dumps(data)


def test_simulate_redacts_secrets_and_reports_bad_rules(tmp_path: Path) -> None:
    path = tmp_path / "hub.yaml"
    path.write_text("catalog:\n  services:\n    checkout: {pagerduty_routing_key: env:SIM_PD_KEY}\n")
    import os

    os.environ["SIM_PD_KEY"] = "sim-secret-key-0123456789"
    try:
        fixture = str(ROOT / "tests" / "fixtures" / "inbound" / "datadog_alert_triggered.json")
        out = _cli("simulate", "datadog", fixture, "--json", "--config", str(path))
    finally:
        del os.environ["SIM_PD_KEY"]
    assert out.returncode == 0, out.stderr
    page = json.loads(out.stdout)["actions"][0]
    assert page["name"] == "pagerduty.trigger" and page["params"]["routing_key"] == "***"
    assert "sim-secret-key" not in out.stdout
    bad = _cli("simulate", "datadog", fixture, "--config", str(BROKEN / "unknown_team.yaml"))
    assert bad.returncode == 1 and "unknown team 'paymnets'" in bad.stderr
