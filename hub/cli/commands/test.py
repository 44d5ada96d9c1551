"""`incident-hub test [--rules FILE] PATH...`: run rule test cases; exit 1 on a failure, 2 on unusable input."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

#: Characters of a planned action shown on the terminal.
LINE = 400

EPILOG = """\
A test file is a mapping with `cases:`; each case names a `source`, a `payload` (inline, or a
JSON file relative to the test file), optional `headers`, `at` (ISO time) and `given` (earlier
webhooks, planned first), and what it `expect`s: `actions` (with `with:` a subset of the
parameters), `not_actions`, `incident` (opens | {joins: N or KEY}), `suppressed_by`, `deferred`,
`timers`. Nothing is sent and Redis is not needed. See docs/rules.md, "Testing your rules".

exit status: 0 every case passed; 1 a case failed; 2 a file, payload or the rules could not be used
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("test", help="run rule test cases (YAML): which actions each webhook plans, no side effects",
                       description="Run rule test cases against a rules file: plan each case's webhooks\n"
                                   "(as a worker would, nothing sent) and check what it expects.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="test files, or directories of *.yaml files")
    p.add_argument("--rules", "--config", dest="rules", type=Path, metavar="FILE",
                   help="the rules file (default: HUB_CONFIG, else ./hub.yaml, else the built-in defaults)")
    p.add_argument("--junit-xml", type=Path, metavar="FILE", help="also write a JUnit XML report (for CI)")
    p.add_argument("--configured-from-env", action="store_true",
                   help="treat only the connectors whose settings are set here as configured (default: all "
                        "of them, so results do not depend on the machine; this changes e.g. which pager "
                        "a service without its own target uses)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only failures and the summary")
    p.set_defaults(fn=run)


def run(args: argparse.Namespace) -> int:
    from hub.cli.common import settings_and_rules
    from hub.core.escape import terminal
    from hub.core.registry import connector_classes
    from hub.operators.rule_cases import CaseFileError, collect, load
    from hub.operators.rule_tests import junit_xml, run_all
    from hub.rules.engine import configured_connectors

    loaded = settings_and_rules(args.rules)
    if isinstance(loaded, int):
        return loaded
    settings, rules = loaded
    try:
        cases, bodies = [], {}
        for path in collect(args.paths):
            found, payloads = load(path)
            cases += found
            bodies.update(payloads)
    except CaseFileError as e:
        print(f"incident-hub test: {e}", file=sys.stderr)
        return 2
    configured = configured_connectors(settings) if args.configured_from_env else set(connector_classes())
    results = asyncio.run(run_all(cases, bodies, rules, configured))
    print(f"rules: {rules.source}")
    for r in results:
        if r.status == "pass":
            if not args.quiet:
                print(terminal(f"PASS  {r.file}::{r.name}"))
            continue
        print(terminal(f"{r.status.upper():<5} {r.file}::{r.name}"))
        for f in r.failures:
            print(terminal("    " + f.replace("\n", "\n    ")))
        if r.status == "fail":
            print("    planned:" if r.planned else "    planned: no actions")
            for line in r.planned:  # the JUnit report has them whole
                print(terminal(f"      {line if len(line) <= LINE else line[:LINE - 1] + '…'}"))
            for line in r.held:
                print(terminal(f"      {line}"))
    failed = sum(r.status == "fail" for r in results)
    errors = sum(r.status == "error" for r in results)
    passed = len(results) - failed - errors
    plural = "s" if len(results) != 1 else ""
    print(f"{len(results)} case{plural}: {passed} passed, {failed} failed" + (f", {errors} errors" if errors else ""))
    if args.junit_xml:
        try:
            args.junit_xml.write_bytes(junit_xml(results, rules.source))
        except OSError as e:
            print(f"incident-hub test: cannot write {args.junit_xml}: {e.strerror or e}", file=sys.stderr)
            return 2
    return 2 if errors else 1 if failed else 0
