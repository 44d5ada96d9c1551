"""A hub worker run inside the benchmark's own event loop (fanout and storm benches)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator

from hub.core.settings import Settings

#: The PagerDuty routing key the benches page with: drawn per run (32 characters, as PagerDuty's
#: are), so no key-shaped literal sits in the repository; the fakes accept any.
ROUTING_KEY = secrets.token_hex(16)
#: The admin token and the inbound sources' webhook token of a run, drawn the same way (the
#: benches ingest through the store, so no sender presents them; they only set the sources up).
ADMIN_TOKEN = secrets.token_urlsafe(24)
WEBHOOK_TOKEN = secrets.token_urlsafe(24)


@contextlib.asynccontextmanager
async def running_worker(settings: Settings) -> AsyncIterator[None]:
    """One worker consuming the queue for the duration of the block, then stopped and closed
    (cancelled until it has really ended: arq's loop may swallow the first cancellation)."""
    from hub.worker.app import close_worker, make_worker

    worker = make_worker(settings, handle_signals=False)
    task = asyncio.create_task(worker.async_run())
    try:
        yield
    finally:
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=1)
        with contextlib.suppress(BaseException):
            await task
        await close_worker(worker)
