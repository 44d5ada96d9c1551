"""arq leases every job for the longest function timeout + 10 s: no function of the hub's may
time out later than HUB_JOB_TIMEOUT, or a crashed worker's event waits that much longer."""

from __future__ import annotations

from hub.worker.app import close_worker, make_worker
from tests.conftest import make_settings


async def test_a_crashed_jobs_lease_is_the_job_timeout_plus_arqs_ten_seconds(redis_url) -> None:
    worker = make_worker(make_settings(redis_url, hub_job_timeout=2), handle_signals=False)
    try:
        assert worker.in_progress_timeout_s == 12
        assert all((f.timeout_s or 2) <= 2 for f in worker.functions.values())
    finally:
        await close_worker(worker)
