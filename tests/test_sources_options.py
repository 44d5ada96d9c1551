"""Shared pieces of the inbound sources: severity maps, catalog options, lenient parsing, the registry."""

from __future__ import annotations

import pytest

from connectors import _options
from connectors._lenient import bounded, parse_time, short_hash
from connectors._severity import ALERT_LABEL_MAP, PRIORITY_MAP, SEV4, map_severity, severity_by_rank
from hub.core.events import Severity
from hub.core.registry import sources


def test_every_contract_source_is_registered() -> None:
    assert set(sources()) >= {"datadog", "grafana", "alertmanager", "incidentio", "github", "pagerduty"}
    assert not any(name.startswith("_") for name in sources())


@pytest.mark.parametrize(("value", "expected"), [
    ("SEV1", Severity.SEV1), ("sev2", Severity.SEV2), ("Sev 3", Severity.SEV3), ("SEV-4", Severity.SEV4),
    (1, Severity.SEV1), ("4", Severity.SEV4), ("SEV5", None), ("critical", None), (True, None), (None, None),
])
def test_parse_severity(value: object, expected: Severity | None) -> None:
    assert _options.parse_severity(value) == expected


@pytest.mark.parametrize(("value", "expected"), [
    ("critical", Severity.SEV1), ("error", Severity.SEV2), ("high", Severity.SEV2), ("major", Severity.SEV2),
    ("warning", Severity.SEV3), ("minor", Severity.SEV3), ("info", Severity.SEV4), ("", Severity.SEV4),
    (None, Severity.SEV4), ("WARNING", Severity.SEV3),
])
def test_alert_label_defaults(value: str | None, expected: Severity) -> None:
    assert map_severity(value, {}, ALERT_LABEL_MAP, SEV4) == expected


def test_catalog_map_wins_exact_then_case_insensitive_then_builtin_then_default() -> None:
    opts = {"severity_map": {"Warning": "SEV2", "page": "SEV1", "bad": "urgent"}, "default_severity": "SEV3"}
    assert map_severity("Warning", opts, ALERT_LABEL_MAP, SEV4) == Severity.SEV2
    assert map_severity("warning", opts, ALERT_LABEL_MAP, SEV4) == Severity.SEV2
    assert map_severity("PAGE", opts, ALERT_LABEL_MAP, SEV4) == Severity.SEV1
    assert map_severity("critical", opts, ALERT_LABEL_MAP, SEV4) == Severity.SEV1  # built-in still applies
    assert map_severity("bad", opts, ALERT_LABEL_MAP, SEV4) == Severity.SEV3  # invalid override → default
    assert map_severity("nonsense", opts, ALERT_LABEL_MAP, SEV4) == Severity.SEV3
    assert map_severity("P9", {}, PRIORITY_MAP, SEV4) == Severity.SEV4


@pytest.mark.parametrize(("rank", "top", "expected"), [
    (3, 3, Severity.SEV1), (2, 3, Severity.SEV2), (1, 3, Severity.SEV3), (0, 3, Severity.SEV4),
    (-5, 3, Severity.SEV4), (9, 3, Severity.SEV1), (None, 3, None),
])
def test_severity_by_rank(rank: int | None, top: int, expected: Severity | None) -> None:
    assert severity_by_rank(rank, top) == expected


def test_option_readers_fall_back_on_bad_values() -> None:
    opts = {"a": "  x ", "b": ["p", " q ", ""], "c": 5, "d": "7", "e": True, "f": {"no": 1}}
    assert _options.text(opts, "a", "d") == "x" and _options.text(opts, "f", "d") == "d"
    assert _options.text_list(opts, "b", ()) == ("p", "q") and _options.text_list(opts, "a", ()) == ("x",)
    assert _options.text_list(opts, "c", ("z",)) == ("z",)
    assert _options.integer(opts, "c", 0) == 5 and _options.integer(opts, "d", 0) == 7
    assert _options.integer(opts, "e", 1) == 1


@pytest.mark.parametrize("name", ["datadog", "grafana", "alertmanager", "incidentio", "pagerduty"])
def test_each_source_checks_its_options(name: str) -> None:
    src = sources()[name]
    assert src.check_options({}) == [] and src.check_options(None) == []
    assert src.check_options({"severity_map": {"x": "SEV1"}, "default_severity": "SEV4"}) == []
    problems = src.check_options({"severity_map": {"x": "SEV9"}, "default_severity": "high", "typo": 1})
    assert len(problems) == 3
    assert src.check_options(["not", "a", "mapping"]) == ["options must be a mapping, not list"]


def test_source_specific_option_checks() -> None:
    assert sources()["grafana"].check_options({"service_labels": ["service", 3]}) == [
        "service_labels must be a string or a list of strings"]
    assert sources()["incidentio"].check_options({"severity_top_rank": "three"}) == [
        "severity_top_rank must be an integer"]
    assert sources()["datadog"].check_options({"service_tag": "component", "environment_tag": "env"}) == []


@pytest.mark.parametrize(("value", "iso"), [
    ("2024-06-17T08:12:41.512Z", "2024-06-17T08:12:41.512000+00:00"),
    ("2024-06-17T08:12:41.512345678Z", "2024-06-17T08:12:41.512345+00:00"),  # Go's nanoseconds
    ("2024-06-17T10:12:41+02:00", "2024-06-17T10:12:41+02:00"),
    ("2024-06-17T08:12:41", "2024-06-17T08:12:41+00:00"),  # naive means UTC
    ("1718612045000", "2024-06-17T08:14:05+00:00"), ("1718612045", "2024-06-17T08:14:05+00:00"),
    (1718612045000, "2024-06-17T08:14:05+00:00"),
    ("0001-01-01T00:00:00Z", None), ("", None), (None, None), ("yesterday", None), (10**30, None), ([], None),
])
def test_parse_time(value: object, iso: str | None) -> None:
    parsed = parse_time(value)
    assert (parsed.isoformat() if parsed else None) == iso


def test_hashes_and_bounded_fingerprints() -> None:
    assert short_hash("ab", "c") != short_hash("a", "bc")  # parts are length-prefixed
    assert len(short_hash("x")) == 32
    assert bounded("datadog:1:host:a") == "datadog:1:host:a"
    long = "datadog:1:" + "host:a," * 100
    assert bounded(long).startswith("datadog:sha256:") and len(bounded(long)) < 80
    assert bounded(long) == bounded(long)
