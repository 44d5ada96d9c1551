"""`validate` warns about workflows and steps that can never run (and keeps loading the file)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hub.rules import DEFAULTS_PATH, load_file, load_text

ROOT = Path(__file__).resolve().parent.parent


def warnings(text: str) -> list[tuple[int, str]]:
    return [(w.line, w.message) for w in load_text(text).warnings]


def test_an_if_that_asks_for_a_kind_the_on_never_delivers() -> None:
    found = warnings("""\
workflows:
  - name: page-on-alert
    on: [alert.firing]
    if: {kind: incident.declared}
    do: [{id: a, action: slack.notify}]
""")
    assert found == [(4, "workflow 'page-on-alert' never runs: its `if` asks for an event kind its `on` does not "
                         "list (alert.firing)")]


def test_kinds_inside_all_any_and_not_are_reasoned_about() -> None:
    dead = """\
workflows:
  - name: w
    on: [alert.*]
    if: {all: [{kind: alert.firing}, {any: [{kind: deploy.failed}, {kind: incident.declared}]}]}
    do: [{id: a, action: slack.notify}]
  - name: v
    on: [alert.firing]
    if: {not: {kind: alert.*}}
    do: [{id: a, action: slack.notify}]
"""
    assert [line for line, _ in warnings(dead)] == [4, 8]
    alive = """\
workflows:
  - name: w
    on: [alert.*, incident.resolved]
    if: {any: [{kind: incident.resolved}, {changed: resolved}]}
    do: [{id: a, action: slack.notify}]
  - name: v
    on: [alert.firing]
    if: {not: {kind: alert.resolved}, severity: SEV1}
    do: [{id: a, action: slack.notify}]
"""
    assert warnings(alive) == []


def test_a_step_whose_if_asks_for_a_kind_its_workflow_never_runs_on() -> None:
    found = warnings("""\
workflows:
  - name: w
    on: [alert.firing, alert.resolved]
    if: {kind: alert.firing}
    do:
      - {id: ok, action: slack.notify, if: {kind: alert.*}}
      - {id: dead, action: slack.notify, if: {kind: alert.resolved}}
""")
    assert found == [(7, "step 'dead' never runs: its `if` asks for an event kind workflow 'w' never runs on "
                         "(alert.firing)")]


def test_a_step_shadowed_by_an_earlier_one_with_the_same_identity() -> None:
    found = warnings("""\
workflows:
  - name: w
    on: [alert.firing]
    do:
      - {id: first, identity: page, action: slack.notify}
      - {id: second, identity: page, action: jira.create_issue}
""")
    assert found == [(6, "step 'second' never runs: step 'first' before it has the same identity 'page' and no "
                         "`if`, and an identity runs once")]


def test_an_earlier_step_with_an_if_does_not_shadow() -> None:
    """The built-in pattern: one page per incident, through whichever pager applies."""
    assert warnings("""\
workflows:
  - name: w
    on: [alert.firing]
    do:
      - {id: first, identity: page, action: slack.notify, if: {pager: pagerduty}}
      - {id: second, identity: page, action: jira.create_issue}
""") == []


def test_a_step_shadowed_across_workflows_only_when_the_earlier_always_runs_first() -> None:
    text = """\
workflows:
  - name: a
    on: [alert.*]
    {if_a}
    do: [{{id: page, identity: page, action: slack.notify}}]
  - name: b
    on: [alert.firing]
    do: [{{id: page, identity: page, action: jira.create_issue}}]
"""
    assert warnings(text.format(if_a="")) == [
        (8, "step 'page' never runs: step 'page' of workflow 'a', which runs on every event this one does, has the "
            "same identity 'page' and no `if`, and an identity runs once")]
    assert warnings(text.format(if_a="if: {severity: SEV1}")) == []
    narrower = text.format(if_a="").replace("on: [alert.*]", "on: [alert.resolved]")
    assert warnings(narrower) == []


def test_the_built_in_rules_have_no_warnings_even_read_as_a_file(tmp_path: Path) -> None:
    assert load_file(DEFAULTS_PATH).warnings == []
    path = tmp_path / "hub.yaml"
    path.write_text(DEFAULTS_PATH.read_text())
    out = subprocess.run([sys.executable, "-m", "hub", "validate", str(path)], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert out.returncode == 0 and "warning" not in out.stdout, out.stdout


def test_validate_prints_the_warning_with_its_line_and_still_exits_0(tmp_path: Path) -> None:
    path = tmp_path / "hub.yaml"
    path.write_text("workflows:\n  - name: w\n    on: [deploy.failed]\n    if: {kind: alert.firing}\n"
                    "    do: [{id: a, action: slack.notify}]\n")
    out = subprocess.run([sys.executable, "-m", "hub", "validate", str(path)], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert out.returncode == 0
    assert f"{path}:4:" in out.stdout and "warning: workflow 'w' never runs" in out.stdout
    assert "1 warning" in out.stdout
