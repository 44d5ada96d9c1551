"""Taking a queued job in one round trip instead of arq's four.

arq marks a job it starts as in progress with an optimistic transaction: WATCH the job's
in-progress key, EXISTS it, ZSCORE the job in the queue, then MULTI / PSETEX / EXEC. Four
round trips per job through redis-py's pipeline machinery: after the worker's own writes,
the largest Redis cost of an event (`bench/worker.py`).

`ClaimingWorker` makes the same decision in one script, atomically (a script runs alone,
so no WATCH is needed): the job is taken only if no worker has it in progress, it is still
in the queue, and it is due; then its in-progress key is set for arq's in-progress timeout,
exactly as arq sets it. Everything after that (running, retrying, finishing the job) is
arq's own. If arq's worker no longer has the attributes this relies on, arq's own
`start_jobs` runs.

When every slot is busy it waits up to one poll delay for a slot to free (`_slot_frees`)
rather than leave the rest of the jobs it read for the next poll.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from arq import Worker
from arq.constants import in_progress_key_prefix
from arq.utils import timestamp_ms

log = logging.getLogger("hub.worker.job_claim")

# KEYS: the job's in-progress key, the queue. ARGV: job id, now (ms), in-progress timeout (ms).
# Returns the job's score when it was taken, else false.
_TAKE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[2]) then return false end
redis.call('PSETEX', KEYS[1], ARGV[3], '1')
return score
"""

#: What `start_jobs` below uses of arq's Worker (arq 0.26 to 0.28).
_ARQ_PARTS = ("sem", "job_counter", "max_jobs", "tasks", "queue_name", "in_progress_timeout_s", "loop", "poll_delay_s",
              "_release_sem_dec_counter_on_complete", "run_job")


class ClaimingWorker(Worker):
    """An arq Worker that takes each job with one script (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._take: Any = None
        self._own_start = all(hasattr(self, part) for part in _ARQ_PARTS)
        if not self._own_start:
            log.warning("this arq's Worker lacks what the one-script job start needs; using arq's own")

    def _picking(self) -> bool:
        """False once a graceful shutdown began (arq's `handle_sig_wait_for_completion`)."""
        return bool(getattr(self, "allow_pick_jobs", True))

    async def _slot_frees(self) -> bool:
        """Every slot is busy and we hold arq's spare permit: wait up to one poll delay for a
        job to finish (its permit), and keep one permit. arq instead gives the spare back and
        waits for its next poll, and the slots of jobs that finish meanwhile sit idle (its own
        four round trips per start used to hide that). Waiting no longer than a poll delay
        keeps the poll loop's other duties (cron jobs, health) on time."""
        try:
            async with asyncio.timeout(self.poll_delay_s):
                await self.sem.acquire()
        except TimeoutError:
            return False
        self.sem.release()
        return self.job_counter < self.max_jobs

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        if not self._own_start:
            return await super().start_jobs(job_ids)
        if self._take is None:
            self._take = self.pool.register_script(_TAKE)
        timeout_ms = int(self.in_progress_timeout_s * 1000)
        for raw in job_ids:
            if not self._picking():
                return None
            await self.sem.acquire()
            if (self.job_counter >= self.max_jobs and not await self._slot_frees()) or not self._picking():
                self.sem.release()  # no slot in time, or told to stop taking jobs while it waited
                return None
            self.job_counter += 1
            job_id = raw.decode()
            try:
                score = await self._take(keys=[in_progress_key_prefix + job_id, self.queue_name],
                                         args=[job_id, timestamp_ms(), timeout_ms])
            except BaseException:  # Redis away: the slot is free again; the poll loop fails as arq's would
                self.job_counter -= 1
                self.sem.release()
                raise
            if not score:  # running elsewhere, finished and gone, or deferred again meanwhile
                self.job_counter -= 1
                self.sem.release()
                continue
            task = self.loop.create_task(self.run_job(job_id, int(float(score))))
            task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            self.tasks[job_id] = task
        return None
