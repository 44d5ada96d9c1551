"""Claims: which event owns an action identity (`hub:claims:*`, see `hub.storage.incidents`).

The first event that plans an identity owns it; a later event of the same incident skips
it (one page per incident episode, one ticket per follow-up). The planner only reads
claims; taking and giving them back happens here, on the worker's batches.
"""

from __future__ import annotations

from typing import Any

from hub.rules.engine import PlannedStep
from hub.storage.batch import Batch
from hub.storage.event_store import Store
from hub.storage.incidents import Claim, IncidentStore


class Claims:
    def __init__(self, store: Store, incidents: IncidentStore) -> None:
        self.store = store
        self.incidents = incidents

    def claim_into(self, p: Batch, event_id: str, steps: list[PlannedStep]) -> list[Claim]:
        """Queue a claim of each step's identity for `event_id`; handles to the owners."""
        return [self.incidents.claim_into(p, step.subject, step.id, event_id) for step in steps]

    async def claim(self, event_id: str, steps: list[PlannedStep], *, note: bool = False) -> list[PlannedStep]:
        """Keep the steps this event owns; note the ones another event of the incident already has."""
        if not steps:
            return []
        p = Batch()
        claims = self.claim_into(p, event_id, steps)
        await p.execute(self.store.redis)
        return await self.kept(event_id, steps, claims, note=note)

    async def kept(self, event_id: str, steps: list[PlannedStep], claims: list[Claim], *, note: bool
                   ) -> list[PlannedStep]:
        """Of `steps`, those `claims` (run) say this event owns; with `note`, the others on its timeline."""
        kept, owned = [], {}
        for step, claim in zip(steps, claims, strict=True):
            owner = claim.value
            if owner == event_id:
                kept.append(step)
            else:
                owned[step.id] = owner
        if owned and note:
            await self.store.add_timeline(event_id, {"type": "already_done", "actions": owned})
        return kept

    def unclaim_not_configured(self, event_id: str, steps: list[PlannedStep], results: list[dict[str, Any]],
                               pending: Batch) -> None:
        """Give back the identities of actions skipped because their connector (or target) is not
        configured: once it is, a resend or the incident's next event performs them.

        Only this run's claims (`steps` are the ones this event owns), and not delayed steps (a
        timer's group is armed once per incident). Deleting is safe without a compare: a claim
        is only ever set if absent, and only its owner deletes it.
        """
        by_id = {r["id"]: r for r in results}
        released = [s for s in steps if s.timer is None and (by_id.get(s.id) or {}).get("state") == "skipped"
                    and by_id[s.id].get("not_configured")]
        if not released:
            return
        for step in released:
            self.incidents.unclaim_into(pending, step.subject, step.id)
        self.store.add_timeline_into(pending, event_id, {
            "type": "not_claimed", "actions": [s.id for s in released],
            "reason": "skipped as not configured: a later event or a resend of the same one performs it"})
