"""One event's trip through the worker: parse → normalise → decide → act → record.

`Processor` is the worker's entry point and puts the pieces together, each with one job:

- `hub.worker.planner`   read-only: normalise, the world, the plan, the steps this event owns;
- `hub.worker.executor`  a run: enter (lock), the commit transaction, finishing; chunk runs;
- `hub.worker.steps`     running the planned steps in order (waits, fallback pager, budget);
- `hub.worker.timers`    delayed steps: arm, cancel, fire;
- `hub.worker.recording` what the hub writes about the incident and the event;
- `hub.worker.claims`    which event owns an action identity.

The executor's behaviour (idempotent runs, pinning, claims, chunks) is described in
`hub.worker.executor`. The same `Planner` plans for dry-run replay and `simulate`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hub.core.events import NormalisedEvent
from hub.rules import Rules
from hub.rules.engine import PlannedStep, World
from hub.storage.batch import Batch
from hub.storage.event_store import Store
from hub.storage.incidents import Entered, IncidentStore
from hub.worker.actions import ActionRunner, PlannedAction
from hub.worker.chunks import Chunks
from hub.worker.claims import Claims
from hub.worker.executor import LOCK_LEASE_S, LOCK_RETRY_S, Chunk, Executor
from hub.worker.planner import PIN_FIELD, Planner, connectors_configured, settings_configured
from hub.worker.recording import LINK_DEPLOYS_S, Recorder, deploy_time
from hub.worker.steps import StepRunner
from hub.worker.timers import Timers

__all__ = ["LINK_DEPLOYS_S", "LOCK_LEASE_S", "LOCK_RETRY_S", "PIN_FIELD", "Chunk",
           "Processor", "deploy_time"]


class Processor(Executor):
    """The executor, with the planner, step runner and timers it is built from.

    `rules` and `budget` may be replaced while the worker runs (a SIGHUP reload; tests).
    """

    def __init__(self, store: Store, rules: Rules, runner: ActionRunner, max_runs: int = 8, *,
                 lock_lease: float = LOCK_LEASE_S, max_per_job: int | None = None,
                 max_per_event: int | None = None, budget: float | None = None) -> None:
        self.runner = runner
        incidents = IncidentStore(store.redis, store.retention)
        planner = Planner(rules, incidents=incidents, configured=self._configured,
                          max_per_event=max_per_event, max_per_job=max_per_job)
        recorder = Recorder(store, incidents, planner, runner)
        claims = Claims(store, incidents)
        timers = Timers(store, incidents, planner, recorder, claims, lock_lease=lock_lease, lock_retry=LOCK_RETRY_S)
        steps = StepRunner(store, incidents, planner, runner, recorder, claims, timers, budget=budget)
        super().__init__(store, incidents, planner, recorder, claims, steps, timers,
                         Chunks(store.redis, store.retention), max_runs=max_runs, lock_lease=lock_lease,
                         max_per_job=max_per_job)

    def _configured(self) -> set[str]:
        """Connectors with their settings (a processor without connectors asks the store's settings)."""
        if not self.runner.connectors:
            return settings_configured(self.store.settings)()
        return connectors_configured(self.runner.connectors)()

    @property
    def rules(self) -> Rules:
        return self.planner.rules

    @rules.setter
    def rules(self, rules: Rules) -> None:
        self.planner.rules = rules

    @property
    def budget(self) -> float | None:
        return self.steps.budget

    @budget.setter
    def budget(self, budget: float | None) -> None:
        self.steps.budget = budget

    @property
    def max_per_event(self) -> int | None:
        return self.planner.max_per_event

    # -- deciding (the planner) ----------------------------------------------------------------

    def normalise(self, rec: dict[str, Any]) -> list[NormalisedEvent]:
        return self.planner.normalise(rec)

    async def plan(self, rec: dict[str, Any]) -> tuple[list[NormalisedEvent], list[PlannedAction]]:
        """Normalise and decide, without side effects (`Planner.plan`)."""
        events, steps = await self.planner.plan(rec)
        return events, list(steps)

    async def keys(self, events: list[NormalisedEvent]) -> list[str | None]:
        return await self.planner.keys(events)

    def configured(self) -> set[str]:
        return self.planner.configured()

    async def world(self, rec: dict[str, Any], events: list[NormalisedEvent],
                    entered: Entered | None = None) -> World:
        return await self.planner.world(rec, events, entered)

    def no_action_reason(self, rec: dict[str, Any], events: list[NormalisedEvent], planned: int) -> str:
        return self.planner.no_action_reason(rec, events, planned)

    # -- acting (steps and timers) ---------------------------------------------------------------

    async def execute(self, rec: dict[str, Any], steps: list[PlannedStep], existing: dict[str, dict[str, Any]],
                      pending: Batch, *, force: bool = False, fire: bool = False,
                      known: Mapping[str, dict[str, Any] | None] | None = None
                      ) -> tuple[list[dict[str, Any]], float | None]:
        return await self.steps.execute(rec, steps, existing, pending, force=force, fire=fire, known=known)

    async def cancel_timers(self, key: str, reason: str, only: list[str] | None = None) -> int:
        return await self.timers.cancel(key, reason, only)

    async def fire_timer(self, spec: dict[str, Any]) -> tuple[str, float | None]:
        """A timer is due: re-check the world, then run its actions. (outcome, seconds to come back)."""
        return await self.timers.fire(spec, self.steps.execute)
