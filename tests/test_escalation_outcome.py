"""The built-in escalation says what its page did: "paged X" only after the page to X succeeded.

The built-in defaults, with the first escalation due after 1 s at SEV1 (the rest pushed out of
the way), a team whose second level's key is `env:PD_KEY_L2_OUTCOME?`. Three outcomes: the key
is unset (no page), PagerDuty refuses the page (dead), the page succeeds. A team with no second
level at all reads "no second-level target configured". The Slack notice and
the incident.io note are rendered from the page step's recorded outcome.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from hub.rules import DEFAULTS_PATH
from hub.rules.loader import parse_yaml
from tests.conftest import wait_for
from tests.fakes.base import Fault
from tests.test_workflows_e2e import (
    INCIDENT_KEY,
    ROUTING_KEY,
    Hub,
    incident_payload,
)

L2_KEY = "L2OUTCOMEKEY00000000000000000000"
TITLE = "INC-1482: Checkout API returning 5xx errors"


def fast_defaults(tmp_path: Path) -> Path:
    """The built-in rules with a catalog, the first escalation after 1 s and nothing else timed soon."""
    data = parse_yaml(DEFAULTS_PATH.read_text())[0]  # keys as written (`on` is not YAML 1.1's true)
    data["catalog"].update(
        services={"checkout-api": {"aliases": ["Payments"], "team": "payments"}},
        teams={"payments": {"manager": {"name": "Dana", "slack": "<@U024BE7LH>"},
                            "escalation": [{"name": "payments secondary",
                                            "pagerduty_routing_key": "env:PD_KEY_L2_OUTCOME?"}]}},
        sources={"incidentio": {"services_field": "Affected Team"}})
    (page_on_call,) = [w for w in data["workflows"] if w["name"] == "page-on-call"]
    for step in page_on_call["do"]:
        if step["id"] == "escalate":
            step["after"] = {"SEV1": "1s", "SEV2": "1h"}
        elif "after" in step:
            step["after"] = {"SEV1": "1h", "SEV2": "1h"}
            if "every" in step:
                step["every"] = {"SEV1": "1h", "SEV2": "1h"}
    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize(("outcome", "said"), [
    ("unset", "not paged: payments secondary has no pager target set"),
    ("refused", "could not page payments secondary: "),
    ("paged", "paged payments secondary"),
])
async def test_escalation_text_comes_from_the_page_outcome(redis, redis_url, upstreams, tmp_path,
                                                           monkeypatch, outcome: str, said: str) -> None:
    if outcome == "unset":
        monkeypatch.delenv("PD_KEY_L2_OUTCOME", raising=False)
    else:
        monkeypatch.setenv("PD_KEY_L2_OUTCOME", L2_KEY)
    upstreams.seed_incident()
    settings = upstreams.settings(redis_url, hub_config=fast_defaults(tmp_path))
    async with Hub(settings, redis) as hub:
        declared = await hub.send("incidentio", incident_payload("incident_created_v2", severity="Critical"))
        if outcome == "refused":  # the first page went through; the escalation's is refused
            upstreams.pagerduty.faults.append(Fault(status=400, body='{"status":"invalid event"}'))

        async def escalated() -> Any:
            actions = await hub.actions(declared["id"])
            recs = {a["id"].rsplit(":", 1)[-1]: a for a in actions.values() if a.get("timer")
                    and "escalate-again" not in a["id"]}
            done = recs.get("escalate-note", {}).get("state") == "succeeded"
            return recs if done and not any(k.endswith(":escalate") for k in await hub.incidents.timers(
                INCIDENT_KEY)) else None
        recs = await wait_for(escalated, timeout=15)

    notices = [r.json()["text"] for r in upstreams.slack.requests if "acknowledged" in r.json()["text"]]
    (notice,) = notices
    (note,) = upstreams.incidentio.timeline.values()
    pages = [r.json()["routing_key"] for r in upstreams.pagerduty.calls("/v2/enqueue")]
    assert said in notice and said in note["description"], (notice, note["description"])
    if outcome == "paged":
        assert pages == [ROUTING_KEY, L2_KEY] and recs["escalate-page"]["state"] == "succeeded"
    else:  # nothing may claim a page that did not happen
        for text in (notice, note["description"]):
            assert "paged" not in text.replace("not paged", "") and "paging" not in text
        assert pages == ([ROUTING_KEY] if outcome == "unset" else [ROUTING_KEY, L2_KEY])
    if outcome == "refused":
        assert recs["escalate-page"]["state"] == "dead"
    assert notice.startswith(":red_circle: *SEV1* :warning: <@U024BE7LH> " + TITLE) or TITLE in notice
