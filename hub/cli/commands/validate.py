"""`incident-hub validate [FILE]`: check a rules file; every error with line, column and a hint."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check a rules file (hub.yaml): errors with line and column, exit 1 if any")
    p.add_argument("file", nargs="?", type=Path,
                   help="the rules file (default: HUB_CONFIG, else ./hub.yaml, else the built-in defaults)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--schema", action="store_true", help="print the rules file's JSON Schema and exit")
    p.set_defaults(fn=run)


def schema_text() -> str:
    """docs/hub.schema.json: the JSON Schema of the rules file, generated from the model."""
    from hub.rules.model import HubConfig

    schema = HubConfig.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "incident-hub rules file (hub.yaml)"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def run(args: argparse.Namespace) -> int:
    from hub.rules import RulesError, load_file

    if args.schema:
        sys.stdout.write(schema_text())
        return 0
    path = args.file
    if path is None:
        from hub.core.settings import SettingsError, load_settings

        try:
            path = load_settings().rules_path()
        except SettingsError as e:
            print(f"incident-hub: bad configuration: {e}", file=sys.stderr)
            return 2
    try:
        loaded = load_file(path)
    except RulesError as e:
        errors = [p for p in e.problems if p.severity == "error"]
        if args.json:
            print(json.dumps({"ok": False, "file": e.source, "errors": [_row(p) for p in errors]}, indent=2))
        else:
            for p in errors:
                print(p.format(e.source))
            print(f"{e.source}: {len(errors)} error{'s' if len(errors) != 1 else ''}")
        return 1
    cat, workflows = loaded.config.catalog, loaded.config.workflows
    summary = {"workflows": len(workflows), "enabled": sum(1 for w in workflows if w.enabled),
               "steps": len(loaded.config.all_steps()),
               "timers": sum(1 for w in workflows for s in w.do if s.delayed),
               "services": len(cat.services), "teams": len(cat.teams), "sources": sorted(cat.sources)}
    if args.json:
        print(json.dumps({"ok": True, "file": loaded.source, "summary": summary,
                          "warnings": [_row(p) for p in loaded.warnings]}, indent=2))
        return 0
    for p in loaded.warnings:
        print(p.format(loaded.source))
    print(f"ok: {loaded.source}: {summary['workflows']} workflows ({summary['enabled']} enabled, "
          f"{summary['steps']} actions, {summary['timers']} timers), {summary['services']} services, "
          f"{summary['teams']} teams" + (f", options for {', '.join(summary['sources'])}" if summary["sources"]
                                         else "")
          + (f"; {len(loaded.warnings)} warning{'s' if len(loaded.warnings) != 1 else ''}" if loaded.warnings
             else ""))
    return 0


def _row(p: object) -> dict[str, object]:
    from dataclasses import asdict

    return asdict(p)  # type: ignore[call-overload]
