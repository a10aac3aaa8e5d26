"""The ``fvdm`` command line: train | sample | eval | bench | data | plugins | config | demo.

Each subcommand lives in ``fvdm/commands/<name>.py`` and exposes
``add_parser(subparsers)``; its handler is stored as ``func`` on the parser.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

from fvdm import __version__
from fvdm.core.errors import FvdmError

COMMANDS = ("train", "sample", "eval", "bench", "data", "plugins", "config", "demo", "export")


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
        with warnings.catch_warnings():  # restores Python's own display when the command returns
            warnings.showwarning = _warning_printer(args.command)
            return int(args.func(args) or 0)
    except BrokenPipeError:  # `fvdm plugins | head`: the reader stopped early, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at interpreter exit
        return 0
    except (FvdmError, FileNotFoundError, ValueError) as exc:
        if os.environ.get("FVDM_DEBUG"):
            raise
        print(f"fvdm {args.command}: error: {_message(exc)}\n(set FVDM_DEBUG=1 for a traceback)", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, never a raw traceback
        if os.environ.get("FVDM_DEBUG"):
            raise
        print(f"fvdm {args.command}: error: {type(exc).__name__}: {_message(exc)}\n(unexpected: rerun with "
              "FVDM_DEBUG=1 for the traceback and report it)", file=sys.stderr)
        return 1


def _warning_printer(command: str):
    """``showwarning`` for the CLI process: ``fvdm CMD: warning: message`` on stderr, without the source path
    and code line Python prints (they point into fvdm, not at anything the user can change)."""

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001 - warnings' signature
        print(f"fvdm {command}: warning: {message}", file=sys.stderr if file is None else file, flush=True)

    return show


def _message(exc: BaseException) -> str:
    """pydantic's multi-line dump -> one line of `field: problem` (the formatter `fvdm sample` uses); other
    messages as they are."""
    errors = getattr(exc, "errors", None)
    if type(exc).__name__ == "ValidationError" and callable(errors):
        from fvdm.commands.specs import config_errors

        return f"invalid value{'s' if len(errors()) > 1 else ''}: " + config_errors(exc, None)
    return str(exc)


if __name__ == "__main__":
    raise SystemExit(main())
