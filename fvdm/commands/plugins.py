"""`fvdm plugins [QUERY]`: list registered items per kind with origin and availability."""

from __future__ import annotations

import argparse
import difflib
import json
from typing import Any

from fvdm.core.plugins import FvdmPlugins, load_plugins
from fvdm.core.registry import KINDS

#: Version of the ``fvdm plugins --json`` format; bump on any incompatible change.
PLUGINS_JSON_FORMAT = 1


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plugins",
        help="list registered plugins, their origin and availability",
        description="List every registered item per kind, where it comes from (built-in or "
        "distribution + version), whether it can run here and why not, and plugins that failed to load.",
    )
    p.add_argument("--json", action="store_true", help=f"machine-readable output (format version {PLUGINS_JSON_FORMAT})")
    p.add_argument("--kind", choices=KINDS, action="append", help="only this kind (repeatable)")
    p.add_argument("pattern", nargs="?", default="*",
                   help="a wildcard on names ('latte_*'), or text found in a name or description ('flow')")
    p.set_defaults(func=run)


def plugins_report(plugins: FvdmPlugins, kinds: list[str] | None = None, pattern: str = "*") -> dict[str, Any]:
    """The stable ``--json`` document (see docs/plugins.md): every asked kind, even with no match."""
    kinds = kinds or list(KINDS)
    return {
        "format": PLUGINS_JSON_FORMAT,
        "kinds": {k: [e.to_json() for e in plugins[k].search(pattern)] for k in kinds},
        "plugins": [r.to_json() for r in plugins.records],
    }


def clip(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters, with an ellipsis where it was cut."""
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def run(args: argparse.Namespace) -> int:
    plugins = load_plugins()
    report = plugins_report(plugins, args.kind, args.pattern)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    searching = args.pattern != "*"
    shown = {k: items for k, items in report["kinds"].items() if items or not searching}
    if not shown:
        names = sorted({n for k in (args.kind or KINDS) for n in plugins[k].names()})
        close = difflib.get_close_matches(args.pattern, names, n=3, cutoff=0.5)
        print(f"no registered item matches {args.pattern!r} (a wildcard on names, or text in a name or "
              f"description)" + (f"; close names: {', '.join(close)}" if close else ""))
    for kind, items in shown.items():
        print(f"{kind} ({len(items)})")
        for it in items:
            mark = "ok " if it["available"] else "n/a"
            line = f"  [{mark}] {it['name']:<28} {it['origin']:<22}"
            if it["description"]:
                line += f" {clip(it['description'], 60)}"
            print(line.rstrip())
            if not it["available"]:
                hint = f"; install: pip install 'fvdm[{it['extra']}]'" if it["extra"] and "pip install" not in it["reason"] else ""
                print(f"        unavailable: {it['reason']}{hint}")
            elif it["reason"]:  # available with a caveat, e.g. flex on CPU: forward only
                print(f"        note: {it['reason']}")
    failed = [r for r in report["plugins"] if r["status"] != "loaded"]
    if failed:
        print("plugins not loaded:")
        for r in failed:
            print(f"  {r['name']} ({r['origin']}, {r['module']}): {r['status']}"
                  + (f" at {r['stage']}: {r['error']}" if r["error"] else ""))
    return 0
