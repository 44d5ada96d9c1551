"""Turns: jobs of one worker process that find an incident busy wait in line for it.

Events of one incident run one at a time under its Redis lock (`IncidentStore.enter`). A job
that found the lock busy used to be deferred (`LOCK_RETRY_S`) and come back at a later poll
of arq, so in a storm that joins one incident the lock sat idle between holders: 151
recoveries of one incident took ~2.3 s for ~0.6 s of work, most of them deferred 3 to 7 times.
Now a job that finds it busy waits here, in line, for up to `max_wait`, and is woken the
moment a job of this process lets the incident go (`release`); a holder in another process
is not heard, so a waiter also looks again every `poll` seconds. The Redis lock stays the
only guarantee (other processes, killed workers); this only removes the idle gaps.

Waiting holds a job slot, so the line is short (`max_waiting` per incident): the jobs past
it are deferred as before, and a hot incident cannot take every slot from the others.
"""

from __future__ import annotations

import asyncio
from collections import deque

#: Jobs of one process that may wait in line for one incident (of HUB_WORKER_CONCURRENCY slots).
MAX_WAITING = 12
#: Longest a job waits in line before it is deferred like any busy job.
MAX_WAIT_S = 2.0
#: A waiter looks again this often even unwoken (the holder may be another process).
POLL_S = 0.25


class Turns:
    """Per-process lines for incident keys (not a lock: the Redis lock is)."""

    def __init__(self, max_waiting: int = MAX_WAITING, max_wait: float = MAX_WAIT_S, poll: float = POLL_S) -> None:
        self.max_waiting = max_waiting
        self.max_wait = max_wait
        self.poll = poll
        self._lines: dict[str, deque[asyncio.Future[None]]] = {}

    @staticmethod
    def key(lock_keys: list[str]) -> str | None:
        """The line a run stands in: its one busy incident; none when it needs several."""
        return lock_keys[0] if len(lock_keys) == 1 else None

    def waiting(self, key: str) -> int:
        return len(self._lines.get(key, ()))

    async def wait(self, key: str, timeout: float) -> bool:
        """Wait to be woken for `key` (at most `timeout`, and `poll`); False when the line is full."""
        line = self._lines.setdefault(key, deque())
        if len(line) >= self.max_waiting:
            return False
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        line.append(fut)
        try:
            async with asyncio.timeout(max(0.0, min(timeout, self.poll))):
                await fut
        except TimeoutError:
            pass
        finally:
            if not fut.done():
                fut.cancel()
            if fut in line:
                line.remove(fut)
            if not line:
                self._lines.pop(key, None)
        return True

    def release(self, keys: list[str]) -> None:
        """The incidents `keys` are free again: wake the first waiter of each."""
        for key in keys:
            line = self._lines.get(key)
            while line:
                fut = line.popleft()
                if not fut.done():
                    fut.set_result(None)
                    break
