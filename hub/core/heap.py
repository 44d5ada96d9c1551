"""Keep the collector off what start-up loaded.

A web or worker process holds a large heap of long-lived objects once it has started
(81,000 from its imports alone; then the catalog, compiled rules and templates, pydantic
schemas). Python's full collection walks all of them: about 50 ms each on this machine's
kind, and at 10,000 webhooks/s it ran about once a second (12 in 11 s), so about one request
in twenty waited for one (ingress p99 40 ms against a 3 ms median). Freezing them after
start-up leaves only what the process made since to the full collections (0.4 ms each; p99
4 ms, `bench/README.md`).

What a frozen object costs: if it later becomes cyclic garbage (a replaced rules set after
SIGHUP), it is not reclaimed. That is a few objects per reload, not per request.
"""

from __future__ import annotations

import gc


def settle() -> None:
    """Collect start-up's garbage, then move every surviving object out of the collector's view."""
    gc.collect()
    gc.freeze()
