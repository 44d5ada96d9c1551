"""The built-in rules with `grouping: per_alert` for the alert-group sources (issue 12).

Tests about one alert's own work (its fingerprint as incident key and dedup key, chunk
mechanics per alert) run with these rules: the built-in ones make a sender's group one incident.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

DEFAULTS = Path(__file__).parent.parent / "hub" / "rules" / "defaults.yaml"


def per_alert_rules() -> Path:
    text = DEFAULTS.read_text()
    assert "\n  sources: {}\n" in text
    text = text.replace("\n  sources: {}\n", "\n  sources: {alertmanager: {grouping: per_alert}, "
                                             "grafana: {grouping: per_alert}}\n")
    path = Path(tempfile.mkdtemp(prefix="hub-per-alert-")) / "hub.yaml"
    path.write_text(text)
    return path


PER_ALERT_RULES = per_alert_rules()
