"""A job's take, first try and end on as few round trips as the hub's own work allows.

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

The same script also begins the job's try as arq's `run_job` begins it, in its first
transaction: it reads the job, counts the try (INCRBY of the retry key) and sets the retry
key's expiry. `run_job` then queues exactly that transaction, and the worker's client answers
it from the script's result (`hub.storage.lane.answered_ahead`) instead of sending it: one
round trip fewer per job, and the take and the try are one atomic step. This needs the lane
client (whose pipelines know to look) and no abort support (arq's transaction then has one
command more); without either, the script only takes the job.

For an event's own job (`process_event` of the event whose id is the job id), the script also
starts the event's run as the job would first do (`hub.storage.event_store.START_RUN_LUA`:
the run counted, the record read), and the job takes that record instead of starting the run
again (`RunningJob.started_run`): one more round trip saved.

When every slot is busy it waits up to one poll delay for a slot to free (`_slot_frees`)
rather than leave the rest of the jobs it read for the next poll.

A job can also end itself (`RunningJob.into`): arq's finishing writes for a job that finished (its
in-progress, retry and job keys deleted, the job taken off the queue and the abort set) are
queued into the job's own last atomic write, and arq's separate finishing transaction is then
skipped. The event worker does this when it writes an event's final state: one round trip
fewer per event, and the event's end and its job's end are one atomic write.
"""

from __future__ import annotations

import asyncio
import logging
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from arq import Worker
from arq.constants import abort_jobs_ss, in_progress_key_prefix, job_key_prefix, retry_key_prefix
from arq.utils import timestamp_ms

from hub.storage.event_store import PROCESS_JOB, START_RUN_LUA, ev_key
from hub.storage.keys import is_event_id
from hub.storage.lane import Answered, LaneClient, answered_ahead

if TYPE_CHECKING:
    from hub.storage.batch import Batch

log = logging.getLogger("hub.worker.job_claim")

# KEYS: the job's in-progress key, the queue, the job's key, its retry key, and for an event's
# job its record. ARGV: job id, now (ms), in-progress timeout (ms), the retry key's expiry (s)
# or '' to only take the job, the event job's function or ''. Returns false when the job was
# not taken; else {score}; {score, job, try} with its try begun; {score, job, try, record}
# with its event's run started too.
_TAKE = START_RUN_LUA + """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[2]) then return false end
redis.call('PSETEX', KEYS[1], ARGV[3], '1')
if ARGV[4] == '' then return {score} end
local job = redis.call('GET', KEYS[3])
local try = redis.call('INCRBY', KEYS[4], 1)
redis.call('EXPIRE', KEYS[4], ARGV[4])
if ARGV[5] == '' or not job then return {score, job, try} end
local ok, data = pcall(cjson.decode, job)
if not (ok and type(data) == 'table' and data['f'] == ARGV[5] and type(data['a']) == 'table'
        and data['a'][1] == ARGV[1]) then
  return {score, job, try}
end
return {score, job, try, start_run(KEYS[5])}
"""
#: The retry key's expiry (s) in arq's first transaction of a run (the same from 0.26 to 0.28).
RUN_RETRY_EXPIRY_S = 88400

#: What `start_jobs` below uses of arq's Worker (arq 0.26 to 0.28).
_ARQ_PARTS = ("sem", "job_counter", "max_jobs", "tasks", "queue_name", "in_progress_timeout_s", "loop", "poll_delay_s",
              "_release_sem_dec_counter_on_complete", "run_job")


class RunningJob:
    """One running job, for its own code (`current_job`).

    `started_run` hands over the event run the take started (once). `into` queues exactly
    what arq's `finish_job` writes for a job that finished and keeps no result; once that
    batch has run, `written` tells the worker, which then skips arq's own finishing
    transaction for the job. If the batch fails, nothing is marked and arq finishes the job
    as usual (its deletes are harmless repeats if the batch did get through).
    """

    __slots__ = ("_started", "_worker", "job_id")

    def __init__(self, worker: ClaimingWorker, job_id: str, started: list[bytes] | None = None) -> None:
        self._worker = worker
        self.job_id = job_id
        self._started = started

    def started_run(self, event_id: str) -> list[bytes] | None:
        """The record (`START_RUN_LUA`'s answer) of the run of `event_id` the take started, or
        None (not this job's event, not started there, or already handed over)."""
        if event_id != self.job_id:
            return None
        started, self._started = self._started, None
        return started

    def into(self, p: Batch) -> None:
        job_id = self.job_id
        for key in (in_progress_key_prefix + job_id, retry_key_prefix + job_id, job_key_prefix + job_id):
            p.delete(key)
        p.zrem(abort_jobs_ss, job_id)
        p.zrem(self._worker.queue_name, job_id)

    def written(self) -> None:
        self._worker._ended.add(self.job_id)


#: The job this task runs, set by `ClaimingWorker.run_job` (tasks the job starts inherit it,
#: so a user checks `job_id` against what it starts or finishes).
current_job: ContextVar[RunningJob | None] = ContextVar("current_job", default=None)


class ClaimingWorker(Worker):
    """An arq Worker that takes each job with one script, and lets a job end itself (see the
    module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._take: Any = None
        self._ended: set[str] = set()  # jobs whose own last write ended them (`RunningJob.written`)
        self._begun: dict[str, Answered] = {}  # jobs whose try the take began, until run_job starts
        self._started: dict[str, list[bytes]] = {}  # event jobs whose run the take started, the same
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
        # the try begun in the take only where run_job's transaction will be answered from it
        begin = RUN_RETRY_EXPIRY_S if isinstance(self.pool, LaneClient) and not self.allow_abort_jobs else ""
        for raw in job_ids:
            if not self._picking():
                return None
            await self.sem.acquire()
            if (self.job_counter >= self.max_jobs and not await self._slot_frees()) or not self._picking():
                self.sem.release()  # no slot in time, or told to stop taking jobs while it waited
                return None
            self.job_counter += 1
            job_id = raw.decode()
            job_key, retry_key = job_key_prefix + job_id, retry_key_prefix + job_id
            keys = [in_progress_key_prefix + job_id, self.queue_name, job_key, retry_key]
            event_job = bool(begin) and is_event_id(job_id)
            if event_job:
                keys.append(ev_key(job_id))
            try:
                taken = await self._take(keys=keys, args=[job_id, timestamp_ms(), timeout_ms, begin,
                                                          PROCESS_JOB if event_job else ""])
            except BaseException:  # Redis away: the slot is free again; the poll loop fails as arq's would
                self.job_counter -= 1
                self.sem.release()
                raise
            if not taken:  # running elsewhere, finished and gone, or deferred again meanwhile
                self.job_counter -= 1
                self.sem.release()
                continue
            if len(taken) >= 3:  # arq's first transaction, as run_job queues it, and its answers
                self._begun[job_id] = Answered(
                    [("GET", job_key), ("INCRBY", retry_key, 1), ("EXPIRE", retry_key, RUN_RETRY_EXPIRY_S)],
                    [taken[1], int(taken[2]), True])
            if len(taken) == 4:
                self._started[job_id] = taken[3]
            task = self.loop.create_task(self.run_job(job_id, int(float(taken[0]))))
            task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            self.tasks[job_id] = task
        return None

    async def run_job(self, job_id: str, score: int) -> None:
        # both in this task's context only: each job sees its own
        answered_ahead.set(self._begun.pop(job_id, None))  # used by run_job's first transaction
        current_job.set(RunningJob(self, job_id, self._started.pop(job_id, None)))
        try:
            await super().run_job(job_id, score)
        finally:
            self._ended.discard(job_id)

    async def finish_job(self, job_id: str, *args: Any, **kwargs: Any) -> None:
        """arq's finishing transaction, unless the job's own last write already ended it. Even
        if the job then failed or was cancelled: its event is final, and the job is off the
        queue, so nothing may run it again."""
        if job_id in self._ended:
            return None
        return await super().finish_job(job_id, *args, **kwargs)
