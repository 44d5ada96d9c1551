"""Prometheus metrics. One registry per process; web and worker expose their own."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

WEBHOOKS_RECEIVED = Counter("hub_webhooks_received_total", "Webhook requests received", ["source"])
WEBHOOKS_ACCEPTED = Counter("hub_webhooks_accepted_total", "Webhooks recorded and queued (202)",
                            ["source", "result"])
WEBHOOKS_REJECTED = Counter("hub_webhooks_rejected_total", "Webhooks refused", ["source", "reason"])
INGEST_SECONDS = Histogram("hub_ingest_seconds", "Ingress handling time, verify to answer", ["source"],
                           buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1))
QUEUE_DEPTH = Gauge("hub_queue_depth", "Jobs waiting in the arq queue")
PENDING_EVENTS = Gauge("hub_pending_events", "Events not yet in a final state")
DEAD_LETTERS = Gauge("hub_dead_letters", "Actions in the dead-letter list")
EVENTS_FINISHED = Counter("hub_events_finished_total", "Events reaching a final state", ["source", "state"])
PROCESSING_SECONDS = Histogram("hub_event_processing_seconds", "Time from receipt to final state", ["source"],
                               buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800))
ACTIONS = Counter("hub_actions_total", "Action attempts by connector and outcome", ["connector", "outcome"])
ACTION_SECONDS = Histogram("hub_action_seconds", "Outbound call duration", ["connector"])
RETRIES = Counter("hub_action_retries_total", "Action attempts scheduled for retry", ["connector"])
DEAD_LETTERED = Counter("hub_actions_dead_lettered_total", "Actions moved to the dead-letter list", ["connector"])
SWEPT = Counter("hub_sweeper_requeued_total", "Stuck events re-enqueued by the sweeper")
# Bounded fan-out (hub.chunks): alerts dropped past HUB_MAX_ALERTS_PER_EVENT, and runs that
# stopped at their time budget to go on in a fresh job instead of running into the job timeout.
ALERTS_JOINED = Counter("hub_alerts_joined_total", "Alerts that joined an open incident instead of opening one "
                        "(how: group = the sender's notification group, correlation = grouping.by)",
                        ["source", "how"])
INCIDENTS_OPENED = Counter("hub_incidents_opened_total", "Incident episodes opened", ["kind"])
PAGES_SUPPRESSED = Counter("hub_pages_suppressed_total", "Alerts at paging severity that did not page "
                           "because they joined an incident (reason: grouping), waited past their resolve (deferral) "
                           "or came back while their resolve was held (flapping)", ["reason"])
ALERTS_TRUNCATED = Counter("hub_alerts_truncated_total",
                           "Alerts of one delivery dropped past HUB_MAX_ALERTS_PER_EVENT", ["source"])
RUNS_YIELDED = Counter("hub_runs_yielded_total", "Worker runs that used their time budget and continue in a new job")

# Operators (hub.replay, hub.admin) and escalations (the rules engine increments the latter).
REPLAYS = Counter("hub_replays_total", "Events handed back to the workers by a replay", ["mode", "kind"])
PURGED = Counter("hub_dead_letters_purged_total", "Dead letters purged by an operator")
ESCALATIONS_FIRED = Counter("hub_escalations_fired_total", "Escalations fired (not acknowledged in time)")
# Maintenance windows (hub.worker.quiet): alerts held back, and held alerts evaluated again at a window's end.
ALERTS_SUPPRESSED = Counter("hub_alerts_suppressed_total", "Alerts held back by a maintenance window", ["source"])
ALERTS_RELEASED = Counter("hub_alerts_released_total",
                          "Alerts still firing when their maintenance window ended, evaluated again")
STORM_SUMMARIES = Counter("hub_storm_summaries_total",
                          "Storm summaries recorded (incident.storm_summary): one per summary_interval while "
                          "alerts keep joining an incident faster than storm_threshold a minute")
ALERTS_SUMMARISED = Counter("hub_alerts_summarised_total",
                            "Alerts that joined a storming incident, told in a storm summary instead of one by one")
FLAPPING_RELEASED = Counter("hub_flapping_released_total",
                            "Held resolves of flapping alerts released (no firing for the window): resolved then")
HEARTBEATS_MISSED = Counter("hub_heartbeats_missed_total", "Heartbeats that went silent for interval + grace",
                            ["heartbeat"])
QUEUE_LAG = Gauge("hub_queue_lag_seconds", "Age of the oldest job that is due in the arq queue (0 when none)")


def queue_lag(oldest_due: list[tuple[bytes, float]], now_s: float) -> float:
    """Seconds the oldest due job has waited (arq scores jobs by due time in ms); 0 when none is due."""
    if not oldest_due:
        return 0.0
    return max(0.0, now_s - oldest_due[0][1] / 1000)


def render() -> tuple[bytes, str]:
    return generate_latest(), CONTENT_TYPE_LATEST
