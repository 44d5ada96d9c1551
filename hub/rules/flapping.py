"""`flapping:` in hub.yaml: an alert that keeps firing and resolving pages once, not each time (issue 12).

```yaml
flapping:
  window: 30m      # firings that opened an episode are counted over this long
  threshold: 4     # this many within the window: flapping
```

The state it drives is `hub.storage.flapping` (pure, in the incident record); the release of
a held resolve is `hub.worker.flapping`.
"""

from __future__ import annotations

from pydantic import Field

from hub.core.ruletypes import Strict
from hub.rules.grouping import Seconds
from hub.storage.flapping import FlapPolicy


class Flapping(Strict):
    """An alert key that fired `threshold` times within `window` is flapping: one page stays open."""

    window: Seconds = Field(1800.0, gt=0, description="firings that opened an episode are counted over this "
                                                      "window; a held resolution is released after it")
    threshold: int = Field(4, ge=2, le=100, description="firings within the window that make an alert flapping "
                                                        "(its resolve is held from the threshold-1st episode on)")

    def policy(self) -> FlapPolicy:
        return FlapPolicy(window_ms=int(self.window * 1000), threshold=self.threshold)
