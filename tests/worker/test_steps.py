"""Steps: when an opening action must not go out any more (its incident resolved meanwhile)."""

from __future__ import annotations

from hub.rules.engine import PlannedStep
from hub.worker.steps import StepRunner

T0 = 1_700_000_000_000


def page() -> PlannedStep:
    return PlannedStep(id="alert-page.page", connector="pagerduty", action="trigger", params={},
                       idempotency_key="k", workflow="alert-page")


def incident(resolved_at: int | None, declared_at: int = T0) -> dict:
    return {"key": "k", "declared_at": declared_at, "resolved_at": resolved_at}


def test_a_page_not_sent_yet_is_dropped_when_its_incident_resolved_after_the_event() -> None:
    """A run that ended early (its worker killed before the call) and ran again after the
    recovery was worked: sending the page now would open one nothing resolves."""
    event = {"received_at": T0 + 1000}
    pending = {"state": "pending", "attempts": []}
    why = StepRunner.superseded(page(), pending, event, incident(T0 + 5000), force=False)
    assert why == "skipped: the incident was resolved before this could be delivered (it had not been sent)"
    assert StepRunner.superseded(page(), None, event, incident(T0 + 5000), False) == why  # killed before its record
    retrying = {"state": "retrying", "attempts": [{}, {}]}
    why = StepRunner.superseded(page(), retrying, event, incident(T0 + 5000), False)
    assert why is not None and why.endswith("(after 2 failed attempts)")


def test_a_page_still_goes_out_when_nothing_resolved_after_its_event() -> None:
    event = {"received_at": T0 + 1000}
    pending = {"state": "pending", "attempts": []}
    assert StepRunner.superseded(page(), pending, event, incident(None), False) is None  # still open
    assert StepRunner.superseded(page(), pending, event, incident(T0 + 1000), False) is None  # resolved by this event
    assert StepRunner.superseded(page(), pending, event, incident(T0 + 9000, declared_at=T0 + 2000), False) is None
    assert StepRunner.superseded(page(), pending, event, incident(T0 + 5000), force=True) is None


def test_a_dropped_page_that_may_have_gone_out_is_closed_at_its_pager() -> None:
    """A run killed mid-call leaves the page pending: it may have reached PagerDuty, so the
    resolution that overtook it sends a resolve of its dedup key (harmless if it never opened)."""
    params = {"dedup_key": "datadog:1", "routing_key": "R" * 32, "summary": "x"}
    close = StepRunner._page_close(page(), {"state": "pending", "attempts": [], "params": params}, {}, None)
    assert close is not None and close.name == "pagerduty.resolve" and close.id == "alert-page.page:close"
    assert close.params == {"dedup_key": "datadog:1", "routing_key": "R" * 32}
    lost = {"state": "retrying", "attempts": [{"status": None, "ambiguous": True}], "params": params}
    assert StepRunner._page_close(page(), lost, {}, None) is not None
    answered_500 = {"state": "retrying", "attempts": [{"status": 500}], "params": params}
    assert StepRunner._page_close(page(), answered_500, {}, None) is not None


def test_a_page_every_attempt_of_which_was_refused_is_not_closed() -> None:
    params = {"dedup_key": "datadog:1", "routing_key": "R" * 32}
    refused = {"state": "retrying", "attempts": [{"status": 429}, {"status": 429}], "params": params}
    assert StepRunner._page_close(page(), refused, {}, None) is None
    note = PlannedStep(id="x.note", connector="slack", action="notify", params={}, idempotency_key="n", workflow="x")
    assert StepRunner._page_close(note, {"state": "pending", "attempts": [], "params": {}}, {}, None) is None


def test_an_armed_timer_page_is_not_taken_for_one_in_flight() -> None:
    """A deferred or escalation page waits as a pending record: dropping it closes nothing."""
    from hub.rules.engine import TimerSpec

    timer = TimerSpec(after=120.0, every=None, unless=None, group="alert-page", anchor_ms=T0)
    timed = PlannedStep(id="alert-page.page", connector="pagerduty", action="trigger", params={},
                        idempotency_key="k", workflow="alert-page", timer=timer)
    armed = {"state": "pending", "attempts": [], "params": {"dedup_key": "datadog:1"}}
    assert StepRunner._page_close(timed, armed, {}, None) is None
