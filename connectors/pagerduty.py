"""pagerduty: inbound webhooks (section 1) and outbound API actions (section 2)."""

from __future__ import annotations

# --- inbound -------------------------------------------------------------------------------

# --- outbound ------------------------------------------------------------------------------
