"""argparse types that refuse out-of-range numbers at the command line (one line, naming the flag and the fix).

``type=int`` alone lets ``--steps 0`` or ``--max-steps -3`` through, where they silently fall back
to defaults or do nothing; these make argparse answer ``argument --steps: must be an integer >= 1,
got 0`` instead.
"""

from __future__ import annotations

import argparse
from typing import Callable


def int_at_least(lo: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {lo}, got {text!r}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"must be an integer >= {lo}, got {value}")
        return value

    parse.__name__ = f"int>={lo}"  # what argparse names in its own messages
    return parse


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}") from None
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return value


positive_int = int_at_least(1)
nonnegative_int = int_at_least(0)


def device_arg(text: str) -> str:
    """``auto``, ``cpu``, ``cuda[:i]``, ...: refuses a CUDA device that this torch build cannot see, at parse time
    (otherwise the failure is an AttributeError deep inside torch)."""
    if text == "auto":
        return text
    import torch

    try:
        dev = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a torch device; use auto, cpu or cuda[:i]") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text!r} asked for, but this torch build ({torch.__version__}) sees no "
                                         "CUDA device; install a CUDA build of torch or use --device cpu")
    return text
