"""Keep the collector off what start-up loaded.

A web or worker process holds well over 100,000 long-lived objects once it has started
(modules, the catalog, compiled rules and templates, pydantic schemas). Python's full
collection walks all of them: about 50 ms each on this machine's kind, and under load it
runs about once a second, so one request or event in a hundred waited for it (ingress p99
40 ms against a 3 ms median, `bench/README.md`). Freezing them after start-up leaves only
what the process made since to the full collections (0.4 ms).

What a frozen object costs: if it later becomes cyclic garbage (a replaced rules set after
SIGHUP), it is not reclaimed. That is a few objects per reload, not per request.
"""

from __future__ import annotations

import gc


def settle() -> None:
    """Collect start-up's garbage, then move every surviving object out of the collector's view."""
    gc.collect()
    gc.freeze()
