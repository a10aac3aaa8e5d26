"""The ``fvdm`` command line: train | sample | eval | bench | data | plugins | config | demo.

Each subcommand lives in ``fvdm/commands/<name>.py`` and exposes
``add_parser(subparsers)``; its handler is stored as ``func`` on the parser.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from fvdm import __version__
from fvdm.core.errors import FvdmError

COMMANDS = ("train", "sample", "eval", "bench", "data", "plugins", "config", "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fvdm",
        description="Frame-aware video diffusion: one model, per-frame timesteps, every task.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `fvdm COMMAND --help` for each command's options.",
    )
    parser.add_argument("--version", action="version", version=f"fvdm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"fvdm.commands.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.func(args) or 0)
    except (FvdmError, FileNotFoundError, ValueError) as exc:
        if os.environ.get("FVDM_DEBUG"):
            raise
        print(f"fvdm {args.command}: error: {exc}\n(set FVDM_DEBUG=1 for a traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
