"""``msagent plugins``: what is installed, from which package."""

from __future__ import annotations

import argparse
import json

from msagent.plugins import KINDS, get_registry


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    registry = get_registry()
    rows = [
        {"name": r.name, "kind": kind, "package": r.package, "version": r.version,
         "description": r.description}
        for kind in KINDS for r in sorted(registry.registrations(kind).values(), key=lambda r: r.name)
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    headers = ("name", "kind", "package", "version")
    widths = [max(len(h), *(len(str(r[h])) for r in rows)) if rows else len(h) for h in headers]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)) + "  description")
    for row in rows:
        cells = "  ".join(str(row[h]).ljust(w) for h, w in zip(headers, widths))
        print(f"{cells}  {row['description'] or '-'}".rstrip())
    return 0
