"""The one line each process prints at start: what is switched on, so a first run is not a guess.

`serve` and `worker` print it to stderr after they start: the sources that can verify
webhooks (a credential is set), the connectors that will act (settings complete), the rules
file in use, and whether the admin API is on. Nothing secret is printed, only names.
"""

from __future__ import annotations

from hub.core.settings import Settings


def startup_summary(settings: Settings, *, admin: bool = True) -> str:
    from hub.core.registry import connector_classes, sources
    from hub.rules import RulesError, load_rules
    from hub.rules.engine import configured_connectors

    srcs = sources()
    on = sorted(name for name, src in srcs.items() if src.missing_credentials(settings) is None)
    off = sorted(set(srcs) - set(on))
    connectors = sorted(configured_connectors(settings))
    unset = sorted(set(connector_classes()) - set(connectors))
    path = settings.rules_path()
    try:
        rules = load_rules(path)
        enabled = sum(1 for wf in rules.config.workflows if wf.enabled)
        rules_text = f"{path or 'built-in defaults'} ({enabled} workflows, {len(rules.config.catalog.services)} " \
                     "services)"
    except RulesError as e:
        rules_text = f"{path or 'built-in defaults'} (invalid: {len(e.problems)} problems; run incident-hub validate)"
    parts = [f"sources: {', '.join(on) or 'none'}" + (f" (not set up: {', '.join(off)})" if off else ""),
             f"connectors: {', '.join(connectors) or 'none'}" + (f" (not configured: {', '.join(unset)})"
                                                                  if unset else ""),
             f"rules: {rules_text}"]
    if admin:
        parts.append("admin: on (/admin)" if settings.hub_admin_token else "admin: off (set HUB_ADMIN_TOKEN)")
    return "incident-hub: " + "; ".join(parts)
