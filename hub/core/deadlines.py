"""Deadlines of one length for many concurrent operations, kept by one timer.

`asyncio.timeout` arms and cancels a timer of its own for every use, through two coroutine
calls: ~4 µs each time, measured. The Redis lane (`hub.storage.lane`) bounds every command
of every webhook and event, so that was 4 % of the worker's CPU. Here each bound costs a dict
entry: since every bound has the same length, the oldest open one always expires first, and
a single timer armed for it is enough (when it fires it cancels what is due and re-arms for
the next).

Semantics are `asyncio.timeout`'s: when a bound passes, its task is cancelled and, at the
end of the `with` block, that cancellation becomes `TimeoutError`; a cancellation that came
from elsewhere (the task cancelled, an enclosing timeout) stays a `CancelledError`, and the
task's cancellation count is restored.
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class Deadlines:
    """Bounds of `seconds` each (`bound()`), all enforced by one timer per event loop."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._open: dict[Bound, None] = {}  # in the order they began: the first ends first
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def bound(self) -> Bound:
        """A bound for the current task, from now; use it as `with deadlines.bound(): ...`."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        if task is None:
            raise RuntimeError("a deadline needs to run inside a task")
        return Bound(self, loop, task, loop.time() + self.seconds)

    def _begin(self, bound: Bound) -> None:
        self._open[bound] = None
        if self._timer is None or self._loop is not bound.loop:  # none armed (on this loop)
            self._loop = bound.loop
            self._timer = bound.loop.call_at(bound.at, self._expire)

    def _expire(self) -> None:
        self._timer = None
        loop = self._loop
        assert loop is not None
        now = loop.time()
        for bound in list(self._open):
            if bound.loop is not loop:
                continue  # left over from another loop (not expected): not ours to cancel
            if bound.at > now:
                self._timer = loop.call_at(bound.at, self._expire)
                return
            if not bound.fired:
                bound.fired = True
                bound.task.cancel()


class Bound:
    """One bounded block (see `Deadlines`)."""

    __slots__ = ("_cancelling", "_owner", "at", "fired", "loop", "task")

    def __init__(self, owner: Deadlines, loop: asyncio.AbstractEventLoop, task: asyncio.Task[object],
                 at: float) -> None:
        self._owner = owner
        self.loop = loop
        self.task = task
        self.at = at
        self.fired = False
        self._cancelling = 0

    def __enter__(self) -> Bound:
        self._cancelling = self.task.cancelling()
        self._owner._begin(self)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        del self._owner._open[self]
        # as asyncio.timeout: our cancellation is taken back; it becomes TimeoutError only
        # if nobody else asked to cancel the task meanwhile
        if self.fired and self.task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
            raise TimeoutError from exc
