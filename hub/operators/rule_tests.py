"""Running rule test cases (`incident-hub test`) and the JUnit report of their results.

Each case runs in a fresh in-memory world (`hub.operators.rule_scenario`): its `given`
webhooks in order, then its own; only its own is checked against `expect`. Nothing is sent
and nothing is read from or written to Redis.
"""

from __future__ import annotations

import json
import re
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from connectors.base import BadPayload
from hub.operators.rule_cases import LoadedCase, Webhook
from hub.operators.rule_expect import check, describe
from hub.operators.rule_scenario import Outcome, Scenario
from hub.rules import Rules
from hub.rules.storm_source import SOURCE as STORM_SOURCE

#: Characters XML 1.0 cannot carry (C0 controls but tab, newline, CR; lone surrogates; U+FFFE/F).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")

#: Seconds between a case's `given` webhooks (and before its own) when they name no `at`.
GIVEN_SPACING_S = 1


@dataclass
class CaseResult:
    file: Path
    name: str
    #: "pass", "fail" (an expectation did not hold) or "error" (the case could not be planned).
    status: str
    failures: list[str] = field(default_factory=list)
    #: What the case's own webhook planned, for the failure output.
    planned: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)
    #: The workflows the case's own webhook planned actions of (what a suite covers).
    workflows: set[str] = field(default_factory=set)
    seconds: float = 0.0


def _at_ms(hook: Webhook, default_ms: int) -> int:
    return int(hook.at.timestamp() * 1000) if hook.at is not None else default_ms


def storm_body(body: bytes, given: list[Outcome]) -> bytes:
    """A storm summary's body with its `incident` filled in when the case leaves it out: the
    incident the last `given` webhook opened or joined (a key the hub derives, e.g. a hash of
    a sender's group key, that a test file should not have to spell)."""
    try:
        data = json.loads(body)
    except ValueError:
        return body  # the source rejects it with its own message
    if not isinstance(data, dict) or data.get("incident"):
        return body
    keys = [k for outcome in reversed(given) for k in outcome.keys if k]
    if not keys:
        return body
    return json.dumps({**data, "incident": keys[0]}).encode()


async def run_case(loaded: LoadedCase, bodies: dict[tuple[Path, str, int | None], bytes], rules: Rules,
                   configured: set[str], now_ms: int | None = None) -> CaseResult:
    """Plan the case's webhooks in order and check its own against `expect`."""
    started = time.perf_counter()
    case = loaded.case
    at = _at_ms(case, now_ms if now_ms is not None else int(time.time() * 1000))
    scenario = Scenario(rules, (configured | set(case.modes)) - set(case.unconfigured))
    given: list[Outcome] = []
    result = CaseResult(loaded.file, case.name, "pass")
    step, source = "the case's webhook", case.source
    try:
        for i, hook in enumerate(case.given):
            step, source = f"given[{i}]", hook.source
            default = at - (len(case.given) - i) * GIVEN_SPACING_S * 1000
            given.append(await scenario.deliver(hook.source, bodies[(loaded.file, case.name, i)], hook.headers,
                                                hook.content_type, _at_ms(hook, default)))
        step, source = "the case's webhook", case.source
        body = bodies[(loaded.file, case.name, None)]
        if case.source == STORM_SOURCE:
            body = storm_body(body, given)
        outcome = await scenario.deliver(case.source, body, case.headers, case.content_type, at)
    except BadPayload as e:
        result.status = "error"
        result.failures = [f"{step}: the {source} payload was rejected: {e.detail}"]
    except Exception as e:  # a rules or parser bug: reported on the case, the other cases still run
        result.status = "error"
        result.failures = [f"{step}: planning failed: {type(e).__name__}: {e}"]
    else:
        result.failures = check(case.expect, outcome, given)
        result.status = "fail" if result.failures else "pass"
        result.planned = [describe(s) for s in outcome.planned]
        result.workflows = {s.workflow for s in outcome.planned}
        result.held = [f"{outcome.events[i].kind} {outcome.events[i].fingerprint}: held by {why}"
                       for i, why in sorted(outcome.held.items())]
    result.seconds = time.perf_counter() - started
    return result


async def run_all(cases: list[LoadedCase], bodies: dict[tuple[Path, str, int | None], bytes], rules: Rules,
                  configured: set[str]) -> list[CaseResult]:
    now = int(time.time() * 1000)  # one "now" for every case without `at`
    return [await run_case(c, bodies, rules, configured, now) for c in cases]


def _xml(text: str) -> str:
    """Text an XML report can hold: what a payload may carry that XML cannot is replaced."""
    return _NOT_XML.sub("\ufffd", text)


def junit_xml(results: list[CaseResult], rules_source: str) -> bytes:
    """A JUnit XML report: one <testsuite> per test file, one <testcase> per case."""
    root = ET.Element("testsuites", name="incident-hub test", tests=str(len(results)),
                      failures=str(sum(r.status == "fail" for r in results)),
                      errors=str(sum(r.status == "error" for r in results)),
                      time=f"{sum(r.seconds for r in results):.3f}")
    by_file: dict[Path, list[CaseResult]] = {}
    for r in results:
        by_file.setdefault(r.file, []).append(r)
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    for file, rows in by_file.items():
        suite = ET.SubElement(root, "testsuite", name=str(file), tests=str(len(rows)),
                              failures=str(sum(r.status == "fail" for r in rows)),
                              errors=str(sum(r.status == "error" for r in rows)), skipped="0",
                              time=f"{sum(r.seconds for r in rows):.3f}", timestamp=stamp)
        props = ET.SubElement(suite, "properties")
        ET.SubElement(props, "property", name="rules", value=rules_source)
        for r in rows:
            tc = ET.SubElement(suite, "testcase", classname=file.stem, name=_xml(r.name), file=str(file),
                               time=f"{r.seconds:.3f}")
            if r.status == "pass":
                continue
            tag = "failure" if r.status == "fail" else "error"
            el = ET.SubElement(tc, tag, message=_xml(r.failures[0].splitlines()[0] if r.failures else r.status),
                               type="ExpectationFailed" if tag == "failure" else "PlanningError")
            el.text = _xml("\n".join(r.failures + (["planned:"] + [f"  {p}" for p in r.planned] if r.planned else [])
                                      + r.held))
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)
